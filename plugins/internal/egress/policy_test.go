package egress

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/testenv"
)

func TestApprovedRulesNeverReachTheProxysOwnHost(t *testing.T) {
	// A listener in the proxy's own network namespace: a connection to it
	// is the proxy talking to itself.
	port, accepted := testenv.CountingListener(t, "tcp4", "0.0.0.0:0")
	p := strconv.Itoa(port)
	rules := []string{"127.0.0.1:" + p, "0.0.0.0:" + p, "0.0.0.1:" + p, "[::ffff:127.0.0.1]:" + p,
		"own.test:" + p, "localhost:" + p, "api.localhost:" + p, "*.wild.test:" + p}
	h := startProxy(t, rules, asDeployed())
	// A name resolving to loopback, with an address rule that names it:
	// the rule that would otherwise let a name lead to an unsafe address.
	h.res.add("own.test", "127.0.0.1")
	h.res.add("a.wild.test", "0.0.0.0")
	// The proxy's own listening address, as an approved target.
	_, proxyPort, _ := net.SplitHostPort(h.addr)
	for _, target := range []string{"127.0.0.1:" + p, "0.0.0.0:" + p, "0.0.0.1:" + p, "[::ffff:127.0.0.1]:" + p,
		"own.test:" + p, "localhost:" + p, "api.localhost:" + p, "a.wild.test:" + p} {
		for _, req := range []string{
			"CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n\r\n",
			"GET http://" + target + "/ HTTP/1.1\r\nHost: " + target + "\r\n\r\n",
		} {
			resp, body, _ := h.raw(req)
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "refused") {
				t.Errorf("%.40q: %d %q, want 403 refused", req, resp.StatusCode, body)
			}
		}
	}
	if h.res.wasAsked("localhost") || h.res.wasAsked("api.localhost") {
		t.Errorf("a local-only name went to the resolver: %v", h.res.asked)
	}
	if n := accepted.Load(); n != 0 {
		t.Fatalf("the listener beside the proxy accepted %d connections", n)
	}
	// The dialer itself refuses, whatever decided to dial: the check is on
	// the address being connected.
	dial := ownHostDialer(false, nil)
	for _, a := range []string{"127.0.0.1:" + p, "0.0.0.0:" + p, "127.0.0.1:" + proxyPort} {
		if c, err := dial(t.Context(), "tcp", a); err == nil {
			c.Close()
			t.Errorf("ownHostDialer dialled %s", a)
		} else if !strings.Contains(err.Error(), "refusing to dial") {
			t.Errorf("ownHostDialer(%s): %v", a, err)
		}
	}
	if n := accepted.Load(); n != 0 {
		t.Fatalf("the listener beside the proxy accepted %d connections", n)
	}
	for _, ev := range h.eventsOf() {
		if ev.Allowed {
			t.Errorf("an attempt at the proxy's own host was recorded as allowed: %+v", ev)
		}
	}
}

func TestWildcardLookupsAreRateLimitedAndAudited(t *testing.T) {
	h := startProxy(t, []string{"*.w.test:80"})
	limited := 0
	const n = WildcardLookupBurst + 20
	for i := range n {
		resp, body, _ := h.raw(fmt.Sprintf("GET http://x%d.w.test/ HTTP/1.1\r\nHost: x\r\n\r\n", i))
		if resp.StatusCode == http.StatusTooManyRequests {
			limited++
			if !strings.Contains(body, "at most") {
				t.Errorf("429 body %q does not say the limit", body)
			}
		}
	}
	// The burst plus what the rate refilled while the test ran.
	if limited == 0 || len(h.res.asked) > WildcardLookupBurst+WildcardLookupRate*10 {
		t.Errorf("%d of %d refused by the limit, %d lookups made", limited, n, len(h.res.asked))
	}
	evs := h.eventsOf()
	if len(evs) != n {
		t.Errorf("%d events for %d wildcard attempts, want one each", len(evs), n)
	}
	for _, ev := range evs {
		if ev.Rule != "*.w.test:80" {
			t.Errorf("wildcard attempt without its rule in the audit: %+v", ev)
			break
		}
	}
}

// A flood of refused attempts on one kept-alive connection stays within
// the audit's bound, and what was left out is counted.
func TestRefusedFloodKeepsTheAuditBounded(t *testing.T) {
	h := startProxy(t, nil)
	const n = 3000
	host := strings.Repeat("a", 60) + ".flood.test"
	// A refusal closes its connection (its reason rides in the status line
	// on a hijacked connection), so the flood reconnects for each attempt.
	deadline := time.Now().Add(60 * time.Second)
	for i := range n {
		c, err := net.DialTimeout("tcp", h.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(deadline)
		fmt.Fprintf(c, "GET http://%s/%d HTTP/1.1\r\nHost: %s\r\n\r\n", host, i, host)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		c.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("response %d: %d", i, resp.StatusCode)
		}
	}
	h.stop()
	size := len(h.events.String())
	evs := h.eventsOf()
	written, dropped := 0, 0
	for _, ev := range evs {
		if rest, ok := strings.CutPrefix(ev.Reason, DroppedReason); ok {
			k, err := strconv.Atoi(rest)
			if err != nil {
				t.Fatalf("dropped count %q", ev.Reason)
			}
			dropped += k
			continue
		}
		written++
	}
	if written+dropped != n || dropped == 0 {
		t.Errorf("%d written + %d counted as dropped, want %d with some dropped", written, dropped, n)
	}
	// At most the burst, the refill over the test's run (generously 60 s)
	// and the reports; and never more bytes than the bound.
	if written > RefusedAuditBurst+RefusedAuditRate*60 || size > RefusedAuditBytes+4096 {
		t.Errorf("audit of the flood: %d refusals in %d bytes", written, size)
	}
	t.Logf("flood of %d refusals: %d written (%d bytes), %d counted", n, written, size, dropped)
}
