package egress

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/audit"
	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/render"
)

// rawAnswer sends req on a new connection and returns the status line of
// what comes back, reading until the proxy closes or 2s pass.
func (h *harness) rawAnswer(req string) string {
	h.t.Helper()
	c, err := net.DialTimeout("tcp", h.addr, 5*time.Second)
	if err != nil {
		h.t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		h.t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	line, _, _ := strings.Cut(string(b), "\r\n")
	return line
}

// waitEvents waits until the log holds n events and returns them.
func (h *harness) waitEvents(n int) []sdk.EgressEvent {
	h.t.Helper()
	eventually(h.t, fmt.Sprintf("%d egress events", n), func() bool {
		return strings.Count(h.events.String(), "\n") >= n
	})
	return h.eventsOf()
}

// TestRequestsTheServerRejectsAreEvents: every request Go's HTTP server
// answers itself, before a handler runs, is an egress event with the
// status it got and what the request named (issue 19 acceptance 4).
func TestRequestsTheServerRejectsAreEvents(t *testing.T) {
	a := newUpstream(t, "A", false)
	h := startProxy(t, []string{a.hostport()})
	for i, tc := range []struct {
		name, req, status, host, method string
	}{
		{"bad escape in the path", "GET http://x.test/%zz HTTP/1.1\r\nHost: x.test\r\n\r\n", "400", "x.test", "GET"},
		{"HTTP/0.9 request line", "GET /\r\n\r\n", "400", "", "GET"},
		{"HTTP/2.0 in an HTTP/1 request line", "GET http://x.test/ HTTP/2.0\r\nHost: x.test\r\n\r\n", "505", "x.test", "GET"},
		{"missing Host", "GET /x HTTP/1.1\r\n\r\n", "400", "", "GET"},
		{"malformed Host", "GET /x HTTP/1.1\r\nHost: a b\r\n\r\n", "400", "a b", "GET"},
		{"two Host headers", "GET /x HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", "400", "a.test", "GET"},
		{"invalid header name", "GET http://x.test/ HTTP/1.1\r\nHost: x.test\r\nBad Name: v\r\n\r\n", "400", "x.test", "GET"},
		{"invalid header value", "GET http://x.test/ HTTP/1.1\r\nHost: x.test\r\nX-V: a\x00b\r\n\r\n", "400", "x.test", "GET"},
		{"unsupported transfer coding", "POST http://x.test/ HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: gzip\r\n\r\n", "501", "x.test", "POST"},
		{"bad Content-Length", "POST http://x.test/ HTTP/1.1\r\nHost: x.test\r\nContent-Length: -1\r\n\r\n", "400", "x.test", "POST"},
		{"unknown Expect", "GET http://x.test/ HTTP/1.1\r\nHost: x.test\r\nExpect: magic\r\n\r\n", "417", "x.test", "GET"},
		{"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: x.test\r\n\r\n", "200", "x.test", "OPTIONS"},
		{"headers over the limit", "GET http://x.test/ HTTP/1.1\r\nHost: x.test\r\nX-Big: " + strings.Repeat("x", 100<<10) + "\r\n\r\n", "431", "x.test", "GET"},
		{"control byte in a CONNECT host", "CONNECT evil\x1b.test:443 HTTP/1.1\r\n\r\n", "400", "evil\x1b.test", "CONNECT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			line := h.rawAnswer(tc.req)
			if !strings.HasPrefix(line, "HTTP/1.1 "+tc.status) {
				t.Fatalf("answer %q, want status %s", line, tc.status)
			}
			evs := h.waitEvents(i + 1)
			ev := evs[i]
			if ev.Allowed || ev.Identity != testIdentity || !strings.HasPrefix(ev.Reason, "answered by the HTTP server: "+tc.status) ||
				ev.Host != tc.host || ev.Method != tc.method {
				t.Errorf("event %+v, want host %q method %q and the server's %s", ev, tc.host, tc.method, tc.status)
			}
		})
	}
	if a.hits.Load() != 0 {
		t.Errorf("a rejected request reached the upstream")
	}
	// A kept-alive connection: the handler's answer is not taken for the
	// server's, and a bad second request on it still is.
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	before := len(h.eventsOf())
	fmt.Fprintf(c, "GET %s/ HTTP/1.1\r\nHost: %s\r\n\r\nGET /\r\n\r\n", a.URL, a.hostport())
	c.SetDeadline(time.Now().Add(2 * time.Second))
	io.ReadAll(c)
	evs := h.waitEvents(before + 2)
	if ev := evs[before]; !ev.Allowed || ev.Reason != "" || ev.Method != "GET" {
		t.Errorf("the allowed request's event: %+v", ev)
	}
	if ev := evs[before+1]; ev.Allowed || !strings.HasPrefix(ev.Reason, "answered by the HTTP server: 400") {
		t.Errorf("the bad second request's event: %+v", ev)
	}
	if len(evs) != before+2 {
		t.Errorf("%d events for two requests:\n%s", len(evs)-before, h.events.String())
	}
}

// TestServerRejectionEventsAreBounded: a flood of garbage from one bottle
// writes at most the burst, then says how many it dropped.
func TestServerRejectionEventsAreBounded(t *testing.T) {
	h := startProxy(t, nil)
	began := time.Now()
	for range RefusedAuditBurst + 20 {
		h.rawAnswer("GET /\r\n\r\n")
	}
	// The bucket refills while the flood runs, by as much as a loaded
	// machine makes the flood last.
	bound := RefusedAuditBurst + 1 + int(RefusedAuditRate*time.Since(began).Seconds())
	n := len(h.waitEvents(RefusedAuditBurst))
	if n > bound {
		t.Errorf("%d events for a flood of %d: the bound is %d", n, RefusedAuditBurst+20, bound)
	}
	time.Sleep(300 * time.Millisecond)
	h.rawAnswer("GET /\r\n\r\n")
	evs := h.waitEvents(n + 2)
	if count := evs[len(evs)-2]; !strings.HasPrefix(count.Reason, DroppedReason) {
		t.Errorf("the next events do not count the dropped ones: %q", count.Reason)
	}
}

// TestHostileHostsAreRefusedAuditedAndPrintEscaped: CONNECT and
// absolute-URI requests with C1, ESC, bidi and zero-width characters in
// the host are refused, recorded, and the audit's text shows them escaped
// (issue 19 acceptance 2).
func TestHostileHostsAreRefusedAuditedAndPrintEscaped(t *testing.T) {
	h := startProxy(t, []string{"ok.test:443"})
	hosts := []string{"evil\u009b31m.test", "evil\x1b[2J.test", "good\u202egnp.test", "zero\u200bwidth.test"}
	n := 0
	for _, host := range hosts {
		for _, req := range []string{
			"CONNECT " + host + ":443 HTTP/1.1\r\nHost: " + host + ":443\r\n\r\n",
			"GET http://" + host + "/ HTTP/1.1\r\nHost: " + host + "\r\n\r\n",
		} {
			line := h.rawAnswer(req)
			if !strings.HasPrefix(line, "HTTP/1.1 4") {
				t.Errorf("%q answered %q, want a refusal", req, line)
			}
			n++
		}
	}
	evs := h.waitEvents(n)
	if len(evs) != n {
		t.Fatalf("%d events for %d requests:\n%s", len(evs), n, h.events.String())
	}
	for i, ev := range evs {
		host := hosts[i/2]
		if ev.Allowed || ev.Reason == "" {
			t.Errorf("event %d: %+v, want refused with a reason", i, ev)
		}
		if ev.Host != host && !strings.Contains(ev.Reason, render.Text(host)) && !strings.Contains(ev.Reason, fmt.Sprintf("%q", host)) {
			t.Errorf("event %d does not name the host %q: %+v", i, host, ev)
		}
		row := strings.Join(audit.EgressRow(ev), "  ")
		for _, r := range row {
			if render.Unsafe(r) {
				t.Errorf("audit row %d prints %U raw: %q", i, r, row)
			}
		}
		if !strings.Contains(row, render.Text(host)) {
			t.Errorf("audit row %d does not show the host escaped (%s): %s", i, render.Text(host), row)
		}
	}
}

// TestDialedAddressIsRecorded: an allowed name that resolves elsewhere than
// last time shows in the audit with both the name and each dialed address
// (issue 19 acceptance 3).
func TestDialedAddressIsRecorded(t *testing.T) {
	a := newUpstream(t, "A", false)
	port := a.port()
	ln, err := net.Listen("tcp", "127.0.0.2:"+port)
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2:%s: %v", port, err)
	}
	b := &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from B")
	})}}
	b.Start()
	t.Cleanup(b.Close)
	h := startProxy(t, []string{"moving.test:" + port, "127.0.0.1:" + port, "127.0.0.2:" + port})
	h.res.add("moving.test", "127.0.0.1")
	if _, body, err := h.get(nil, "http://moving.test:"+port+"/"); err != nil || body != "hello from A" {
		t.Fatalf("first: %q %v", body, err)
	}
	h.res.mu.Lock()
	h.res.names["moving.test"] = []netip.Addr{netip.MustParseAddr("127.0.0.2")}
	h.res.mu.Unlock()
	if line := h.rawAnswer("CONNECT moving.test:" + port + " HTTP/1.1\r\n\r\n"); !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("second: %q", line)
	}
	evs := h.waitEvents(2)
	for i, want := range []string{"127.0.0.1:" + port, "127.0.0.2:" + port} {
		ev := evs[i]
		if ev.Host != "moving.test" || ev.Addr != want || !ev.Allowed {
			t.Errorf("event %d: %+v, want moving.test dialed at %s", i, ev, want)
		}
		row := audit.EgressRow(ev)
		if !strings.Contains(strings.Join(row, " "), "moving.test") || !strings.Contains(strings.Join(row, " "), want) {
			t.Errorf("audit row %d lacks the name or the address: %q", i, row)
		}
	}
}
