package egress

// Tests from a hostile review of TLS termination and credential injection:
// each is an attempt, from inside the bottle, to get the value out or to
// get a request past the rules.

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// terminated opens a CONNECT to hp through the proxy and a TLS session
// with the proxy on it, as a client in the bottle would.
func terminated(t *testing.T, h *harness, ca *CA, hp string) (*tls.Conn, *bufio.Reader) {
	t.Helper()
	resp, body, conn := h.raw("CONNECT " + hp + " HTTP/1.1\r\nHost: " + hp + "\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT %s: %d %q", hp, resp.StatusCode, body)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM())
	host, _, _ := net.SplitHostPort(hp)
	tc := tls.Client(conn, &tls.Config{ServerName: host, RootCAs: pool, NextProtos: []string{"http/1.1"}})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS with the proxy for %s: %v", hp, err)
	}
	return tc, bufio.NewReader(tc)
}

// echoWorld points the credential's host at an upstream that answers with
// handler, and returns the https:// base URL.
func echoWorld(t *testing.T, w *credWorld, handler http.HandlerFunc, extraRules ...string) (string, *recorder) {
	echo := newRecorder(t, w.upCA, "api.test", handler)
	hp := hostPort("api.test", echo.port())
	cred := w.cred
	cred.Hosts = []string{hp}
	w.cred = cred
	w.h = startProxy(t, append([]string{hp, "127.0.0.1:" + echo.port()}, extraRules...), withCA(w.ca), withRoots(w.upCA.pool), withCreds(cred))
	w.h.res.add("api.test", "127.0.0.1")
	return "https://" + hp, echo
}

// Inside a terminated CONNECT: an absolute URL naming another host, a
// pipelined second request that a rule denies, HTTP/2 by prior knowledge
// and a CONNECT are each judged on their own, none reaching elsewhere.
func TestReviewTerminatedConnectionTricks(t *testing.T) {
	w := newCredWorld(t)
	hp := hostPort("other.test", w.other.port())
	w.h.p.SetRules(mustRules(t, append([]string{
		hostPort("api.test", w.api.port()),
		"GET " + hp + "/",
		"!" + hp + "/admin",
	}, loopbackRules(w.api, w.other)...)...))

	tc, br := terminated(t, w.h, w.ca, hp)
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	// Absolute form toward the credential's host, Host header the CONNECT's.
	fmt.Fprintf(tc, "GET https://api.test:%s/v1 HTTP/1.1\r\nHost: %s\r\nX-Api-Key: %s\r\n\r\n", w.api.port(), hp, w.cred.Placeholder)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("absolute URL to another host: %d", resp.StatusCode)
	}
	// (A misdirected request closes the connection.)
	tc, br = terminated(t, w.h, w.ca, hp)
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	// Two requests in one write, the second denied (path case changed).
	fmt.Fprintf(tc, "GET /ok HTTP/1.1\r\nHost: %s\r\n\r\nGET /ADMIN/x HTTP/1.1\r\nHost: %s\r\n\r\nGET /%%61dmin HTTP/1.1\r\nHost: %s\r\n\r\n", hp, hp, hp)
	for i, want := range []int{200, 403, 403} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("pipelined %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != want {
			t.Errorf("pipelined request %d: %d, want %d", i, resp.StatusCode, want)
		}
	}
	// A CONNECT inside the terminated connection goes nowhere else.
	fmt.Fprintf(tc, "CONNECT api.test:%s HTTP/1.1\r\nHost: api.test:%s\r\n\r\n", w.api.port(), w.api.port())
	if resp, err := http.ReadResponse(br, nil); err == nil && resp.StatusCode == 200 {
		t.Errorf("CONNECT inside a terminated CONNECT: %d", resp.StatusCode)
	}
	if w.api.count() != 0 || w.other.count() != 1 {
		t.Errorf("upstreams got api %d, other %d requests, want 0 and 1", w.api.count(), w.other.count())
	}

	// HTTP/2 by prior knowledge: only http/1.1 is spoken.
	tc2, br2 := terminated(t, w.h, w.ca, hp)
	tc2.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(tc2, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	if resp, err := http.ReadResponse(br2, nil); err == nil && resp.StatusCode < 300 {
		t.Errorf("HTTP/2 preface: %d", resp.StatusCode)
	}
	if w.other.count() != 1 {
		t.Error("the HTTP/2 preface reached the upstream")
	}
	for _, ev := range eventsOfKind(w.h.eventsOf(), sdk.EgressInject) {
		t.Errorf("inject event %+v: the credential went toward a host it is not for", ev)
	}
}

// A method is a case-sensitive token, but many servers compare it without
// regard to case: "trace" must not carry the value where "TRACE" does not.
func TestReviewTraceInAnyCaseCarriesNoCredential(t *testing.T) {
	w := newCredWorld(t)
	hp := hostPort("api.test", w.api.port())
	for _, m := range []string{"trace", "Trace", "TRACK"} {
		tc, br := terminated(t, w.h, w.ca, hp)
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(tc, "%s / HTTP/1.1\r\nHost: %s\r\nX-Api-Key: %s\r\n\r\n", m, hp, w.cred.Placeholder)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		io.Copy(io.Discard, resp.Body)
		tc.Close()
		if got := w.api.last(t).header.Get("X-Api-Key"); got != w.cred.Placeholder {
			t.Errorf("%s carried x-api-key %q, want the placeholder", m, got)
		}
	}
}

// Many frameworks take the method from X-HTTP-Method-Override (or its
// kin, or a _method query parameter): a rule about methods must judge the
// method the server will act on too.
func TestReviewMethodOverrideIsJudged(t *testing.T) {
	upCA := newTestCA(t)
	ca := mustCA(t)
	up := newRecorder(t, upCA, "api.test")
	hp := hostPort("api.test", up.port())
	h := startProxy(t, []string{"GET,POST " + hp + "/items/", "!DELETE " + hp + "/items/keep", "127.0.0.1:" + up.port()}, withCA(ca), withRoots(upCA.pool))
	h.res.add("api.test", "127.0.0.1")
	c := bottleClient(h, ca, nil, true)
	for _, tc := range []struct {
		method, path string
		hdr          map[string]string
		status       int
	}{
		{"POST", "/items/1", nil, 200},
		{"POST", "/items/1", map[string]string{"X-HTTP-Method-Override": "DELETE"}, 403},
		{"POST", "/items/1", map[string]string{"X-HTTP-Method": "put"}, 403},
		{"POST", "/items/1", map[string]string{"X-Method-Override": "PATCH"}, 403},
		{"POST", "/items/1?_method=DELETE", nil, 403},
		{"POST", "/items/1", map[string]string{"X-HTTP-Method-Override": "GET"}, 200},
		{"GET", "/items/keep", map[string]string{"X-HTTP-Method-Override": "DELETE"}, 403},
	} {
		before := up.count()
		resp, body := do(t, c, tc.method, "https://"+hp+tc.path, tc.hdr, "")
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s %v: %d, want %d (%q)", tc.method, tc.path, tc.hdr, resp.StatusCode, tc.status, body)
		}
		if tc.status == 403 && up.count() != before {
			t.Errorf("%s %s %v: refused, yet the upstream got it", tc.method, tc.path, tc.hdr)
		}
	}
}

// Framing tricks (both Content-Length and Transfer-Encoding, two lengths,
// an obsolete line folding, a bare LF) cannot get a request to the
// upstream unjudged: the proxy parses each request and writes its own, so
// every request the upstream sees is one a rule judged.
func TestReviewSmugglingReachesNothingUnjudged(t *testing.T) {
	upCA := newTestCA(t)
	ca := mustCA(t)
	up := newRecorder(t, upCA, "api.test")
	hp := hostPort("api.test", up.port())
	h := startProxy(t, []string{hp, "!" + hp + "/admin", "127.0.0.1:" + up.port()}, withCA(ca), withRoots(upCA.pool))
	h.res.add("api.test", "127.0.0.1")
	smuggled := "GET /admin HTTP/1.1\r\nHost: " + hp + "\r\n\r\n"
	chunk := fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(smuggled), smuggled)
	for name, req := range map[string]string{
		"CL and TE":       fmt.Sprintf("POST /ok HTTP/1.1\r\nHost: %s\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n%s", hp, chunk),
		"TE and CL":       fmt.Sprintf("POST /ok HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n0\r\n\r\n%s", hp, 5, smuggled),
		"two lengths":     fmt.Sprintf("POST /ok HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\nContent-Length: %d\r\n\r\n%s", hp, len(smuggled), smuggled),
		"TE list":         fmt.Sprintf("POST /ok HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: identity, chunked\r\nContent-Length: 0\r\n\r\n%s", hp, chunk),
		"TE with space":   fmt.Sprintf("POST /ok HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding : chunked\r\nContent-Length: 0\r\n\r\n%s", hp, chunk),
		"folded TE":       fmt.Sprintf("POST /ok HTTP/1.1\r\nHost: %s\r\nX: y\r\n Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n%s", hp, chunk),
		"bare LF":         fmt.Sprintf("POST /ok HTTP/1.1\nHost: %s\nContent-Length: 0\n\n%s", hp, smuggled),
		"chunk extension": fmt.Sprintf("POST /ok HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n%x;a=\"\r\n%s\r\n0\r\n\r\n", hp, len(smuggled), smuggled),
	} {
		tc, br := terminated(t, h, ca, hp)
		tc.SetDeadline(time.Now().Add(700 * time.Millisecond))
		io.WriteString(tc, req)
		for {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				break
			}
			io.Copy(io.Discard, resp.Body)
		}
		tc.Close()
		up.mu.Lock()
		for _, s := range up.reqs {
			// The smuggled text may arrive as a body: that is data.
			if s.path != "/ok" {
				t.Errorf("%s: the upstream got %s %s", name, s.method, s.path)
			}
		}
		up.reqs = nil
		up.mu.Unlock()
	}
}

// The Host header that leaves is the CONNECT host's own name: a trailing
// dot or another case would let a shared front end route the request —
// the credential with it — to some other site than the one verified.
func TestReviewHostHeaderLeavesCanonical(t *testing.T) {
	w := newCredWorld(t)
	base, _ := echoWorld(t, w, func(rw http.ResponseWriter, r *http.Request) { io.WriteString(rw, r.Host) })
	hp := strings.TrimPrefix(base, "https://")
	_, port, _ := net.SplitHostPort(hp)
	for host, want := range map[string]string{
		"API.Test.:" + port: "api.test:" + port,
		"api.test.:" + port: "api.test:" + port,
		"api.test:" + port:  "api.test:" + port,
		"API.TEST.":         "api.test",
	} {
		tc, br := terminated(t, w.h, w.ca, hp)
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: %s\r\nX-Api-Key: %s\r\n\r\n", host, w.cred.Placeholder)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		tc.Close()
		if string(b) != want {
			t.Errorf("Host %q arrived as %q, want %q", host, b, want)
		}
	}
}

// Rails, Laravel and Symfony take the method from a _method field of a
// POST's form body: under a rule about methods, that is judged too.
func TestReviewFormMethodOverrideIsJudged(t *testing.T) {
	upCA := newTestCA(t)
	ca := mustCA(t)
	up := newRecorder(t, upCA, "api.test")
	hp := hostPort("api.test", up.port())
	h := startProxy(t, []string{"POST " + hp + "/items/", "127.0.0.1:" + up.port()}, withCA(ca), withRoots(upCA.pool))
	h.res.add("api.test", "127.0.0.1")
	c := bottleClient(h, ca, nil, true)
	multipartBody := "--XX\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--XX--\r\n"
	for _, tc := range []struct {
		ctype, body string
		status      int
	}{
		{"application/x-www-form-urlencoded", "a=1&b=2", 200},
		{"application/x-www-form-urlencoded", "a=1&_method=delete", 403},
		{"application/x-www-form-urlencoded; charset=utf-8", "_method=PUT", 403},
		{"multipart/form-data; boundary=XX", multipartBody, 403},
		{"application/json", `{"_method":"DELETE"}`, 200}, // not a form: frameworks do not read it
		{"", "_method=DELETE", 403},                       // Rack: a POST without a type is a form
		{"application/x-www-form-urlencoded", "a=" + strings.Repeat("x", maxFormPeek) + "&_method=DELETE", 403},
	} {
		before := up.count()
		hdr := map[string]string{"Content-Type": tc.ctype}
		if tc.ctype == "" {
			hdr = nil
		}
		resp, body := do(t, c, "POST", "https://"+hp+"/items/1", hdr, tc.body)
		if resp.StatusCode != tc.status {
			t.Errorf("POST %s %.40q: %d, want %d (%q)", tc.ctype, tc.body, resp.StatusCode, tc.status, body)
		}
		if tc.status == 403 && up.count() != before {
			t.Errorf("POST %s %.40q: refused, yet the upstream got it", tc.ctype, tc.body)
		}
		if tc.status == 200 && up.last(t).body != tc.body {
			t.Errorf("POST %s: the upstream got body %.40q, want it whole", tc.ctype, up.last(t).body)
		}
	}
}

// A CONNECT inside a terminated connection, even to its own host, is no
// request for an origin server: forwarded, it would ask the upstream to
// tunnel on (a gateway that can would take the bottle anywhere).
func TestReviewConnectInsideATerminatedConnectionIsRefused(t *testing.T) {
	w := newCredWorld(t)
	hp := hostPort("api.test", w.api.port())
	tc, br := terminated(t, w.h, w.ca, hp)
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(tc, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nX-Api-Key: %s\r\n\r\n", hp, hp, w.cred.Placeholder)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("CONNECT inside: %d, want 405", resp.StatusCode)
	}
	if w.api.count() != 0 {
		t.Errorf("the upstream got %d requests, want none", w.api.count())
	}
}
