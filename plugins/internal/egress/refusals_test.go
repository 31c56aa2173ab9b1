package egress

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/sdk/egressrule"
)

// getRefusals asks the proxy for its bottle's refusals as `bottle egress`
// does: a plain origin-form GET sent to the proxy itself.
func getRefusals(t *testing.T, h *harness) (Refusals, *http.Response) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + h.addr + RefusalsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var got Refusals
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("refusals: %v: %s", err, body)
		}
	}
	return got, resp
}

// A bottle reads its recent refusals from its proxy, with the line to ask
// for a host that no rule names; allowed hosts and the rules themselves are
// not in the answer.
func TestRecentRefusals(t *testing.T) {
	up := newUpstream(t, "allowed.test", false)
	// localhost is allowed by a rule, and still refused: it can only be local.
	h := startProxy(t, []string{up.hostport(), "*.secret-rule.test", "localhost:443"})

	got, resp := getRefusals(t, h)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("empty list: %s %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	if got.Identity != testIdentity || got.Refusals == nil || len(got.Refusals) != 0 {
		t.Fatalf("before any refusal: %+v", got)
	}

	// One allowed request, an HTTPS refusal twice, a plain-HTTP one, and a
	// name that can only be local.
	if resp, _, err := h.get(up.Server, up.URL+"/"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("allowed request: %v %v", resp, err)
	}
	for range 2 {
		h.raw("CONNECT denied.test:443 HTTP/1.1\r\nHost: denied.test:443\r\n\r\n")
	}
	h.raw("GET http://plain.test/x HTTP/1.1\r\nHost: plain.test\r\n\r\n")
	h.raw("CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\n\r\n")

	got, _ = getRefusals(t, h)
	if len(got.Refusals) != 3 {
		t.Fatalf("want 3 refusals (one per host), got %+v", got.Refusals)
	}
	https, plain, local := got.Refusals[0], got.Refusals[1], got.Refusals[2]
	if https.Host != "denied.test" || https.Port != 443 || https.Count != 2 || https.Method != http.MethodConnect ||
		https.Status != http.StatusForbidden || https.Reason != "not in the allowlist" ||
		https.Ask != "bottle request egress denied.test:443 --reason WHY" ||
		!strings.Contains(https.Message, "egress to denied.test:443 refused") {
		t.Errorf("HTTPS refusal: %+v", https)
	}
	if _, err := time.Parse(time.RFC3339, https.Time); err != nil || https.FirstTime > https.Time {
		t.Errorf("times: %q, first %q", https.Time, https.FirstTime)
	}
	if plain.Host != "plain.test" || plain.Port != 80 || plain.Method != http.MethodGet || plain.Ask != "bottle request egress plain.test:80 --reason WHY" {
		t.Errorf("plain-HTTP refusal: %+v", plain)
	}
	if local.Host != "localhost" || local.Ask != "" || local.Reason == "" {
		t.Errorf("a local name has nothing to ask for: %+v", local)
	}
	all, _ := json.Marshal(got)
	for _, leak := range []string{up.hostport(), "secret-rule"} {
		if strings.Contains(string(all), leak) {
			t.Errorf("the answer shows %q: %s", leak, all)
		}
	}

	// An approval applied live takes its host off the list; the rest stay.
	rs, err := egressrule.ParseRules([]string{up.hostport(), "*.secret-rule.test", "localhost:443", "denied.test:443"})
	if err != nil {
		t.Fatal(err)
	}
	h.p.SetRules(rs)
	got, _ = getRefusals(t, h)
	if len(got.Refusals) != 2 || got.Refusals[0].Host != "plain.test" || got.Refusals[1].Host != "localhost" {
		t.Errorf("after denied.test:443 was allowed: %+v", got.Refusals)
	}

	// Reading the list is not an attempt: no event, and it stays readable.
	before := len(h.eventsOf())
	getRefusals(t, h)
	if n := len(h.eventsOf()); n != before {
		t.Errorf("reading the refusals wrote %d events", n-before)
	}
	// Any other origin-form request is still a bad proxy request.
	resp2, body, _ := h.raw("POST " + RefusalsPath + " HTTP/1.1\r\nHost: " + h.addr + "\r\nContent-Length: 0\r\n\r\n")
	if resp2.StatusCode != http.StatusBadRequest {
		t.Errorf("POST %s: %s %s", RefusalsPath, resp2.Status, body)
	}
	resp3, _, _ := h.raw("GET /.bot-bottle/other HTTP/1.1\r\nHost: " + h.addr + "\r\n\r\n")
	if resp3.StatusCode != http.StatusBadRequest {
		t.Errorf("GET another path: %s", resp3.Status)
	}
	// An absolute URL with the path is proxied (and refused), not answered.
	resp4, _, _ := h.raw("GET http://refusals.test" + RefusalsPath + " HTTP/1.1\r\nHost: refusals.test\r\n\r\n")
	if resp4.StatusCode != http.StatusForbidden {
		t.Errorf("an absolute URL with the path: %s", resp4.Status)
	}
}

// The list is bounded per bottle, keeps the newest, and keeps bottles apart.
func TestRefusalLogBounded(t *testing.T) {
	l := newRefusalLog()
	for i := range MaxRefusals + 5 {
		l.add("a-aaaaa", Refusal{Host: fmt.Sprintf("h%d.test", i), Port: 443, Reason: reasonNotAllowed})
	}
	l.add("b-bbbbb", Refusal{Host: "b.test", Port: 443})
	got := l.list("a-aaaaa")
	if len(got) != MaxRefusals || got[0].Host != "h5.test" || got[len(got)-1].Host != fmt.Sprintf("h%d.test", MaxRefusals+4) {
		t.Errorf("bounded list: %d entries, %s … %s", len(got), got[0].Host, got[len(got)-1].Host)
	}
	// A repeat moves to the end with its count, and pushes nothing out.
	l.add("a-aaaaa", Refusal{Host: "h10.test", Port: 443, Reason: reasonNotAllowed})
	got = l.list("a-aaaaa")
	if len(got) != MaxRefusals || got[len(got)-1].Host != "h10.test" || got[len(got)-1].Count != 2 || got[0].Host != "h5.test" {
		t.Errorf("after a repeat: %d entries, last %+v, first %s", len(got), got[len(got)-1], got[0].Host)
	}
	if b := l.list("b-bbbbb"); len(b) != 1 || b[0].Host != "b.test" {
		t.Errorf("another bottle's list: %+v", b)
	}
	l.forget("a-aaaaa")
	if a := l.list("a-aaaaa"); len(a) != 0 {
		t.Errorf("after forget: %+v", a)
	}
	if c := l.list("c-ccccc"); c == nil {
		t.Error("an unknown bottle's list is null, want []")
	}
}
