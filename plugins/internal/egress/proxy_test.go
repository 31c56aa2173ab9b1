package egress

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestAllowedUpstreamAnswersThroughConnectAndPlainHTTP(t *testing.T) {
	tlsA := newUpstream(t, "A over TLS", true)
	plainA := newUpstream(t, "A", false)
	h := startProxy(t, []string{tlsA.hostport(), plainA.hostport()})

	resp, body, err := h.get(tlsA.Server, tlsA.URL+"/x")
	if err != nil {
		t.Fatalf("https through the proxy: %v", err)
	}
	if resp.StatusCode != 200 || body != "hello from A over TLS" {
		t.Fatalf("https through the proxy: %d %q", resp.StatusCode, body)
	}
	resp, body, err = h.get(plainA.Server, plainA.URL+"/y")
	if err != nil {
		t.Fatalf("http through the proxy: %v", err)
	}
	if resp.StatusCode != 200 || body != "hello from A" {
		t.Fatalf("http through the proxy: %d %q", resp.StatusCode, body)
	}
	evs := h.eventsOf()
	if len(evs) != 2 {
		t.Fatalf("events = %+v, want 2", evs)
	}
	for i, want := range []struct{ method, rule string }{{"CONNECT", tlsA.hostport()}, {"GET", plainA.hostport()}} {
		ev := evs[i]
		if !ev.Allowed || ev.Method != want.method || ev.Rule != want.rule || ev.Host != "127.0.0.1" || ev.Reason != "" {
			t.Errorf("event %d = %+v, want allowed %s by %s", i, ev, want.method, want.rule)
		}
	}
}

func TestRefusedUpstreamGetsItsReason(t *testing.T) {
	a := newUpstream(t, "A", false)
	b := newUpstream(t, "B", false)
	h := startProxy(t, []string{a.hostport()})
	want := fmt.Sprintf("egress to %s refused: not in the allowlist of bottle %s (ask: bottle request egress %s --reason ...)",
		b.hostport(), testIdentity, b.hostport())

	resp, body, _ := h.raw("CONNECT " + b.hostport() + " HTTP/1.1\r\nHost: " + b.hostport() + "\r\n\r\n")
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("CONNECT to B: status %d, want 403", resp.StatusCode)
	}
	if got := resp.Header.Get(RefusedHeader); got != want {
		t.Errorf("CONNECT %s header = %q\nwant %q", RefusedHeader, got, want)
	}
	if body != want+"\n" {
		t.Errorf("CONNECT body = %q\nwant %q", body, want)
	}

	resp, body, err := h.get(nil, b.URL+"/secret")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusForbidden || body != want+"\n" || resp.Header.Get(RefusedHeader) != want {
		t.Errorf("GET B: %d %q %q", resp.StatusCode, resp.Header.Get(RefusedHeader), body)
	}
	if n := b.hits.Load(); n != 0 {
		t.Errorf("refused upstream B answered %d requests", n)
	}
	// Through the same proxy A still answers: the refusal was B's alone.
	if resp, body, err := h.get(nil, a.URL); err != nil || resp.StatusCode != 200 || body != "hello from A" {
		t.Fatalf("A after B's refusal: %v %v %q", err, resp, body)
	}
	for _, ev := range h.eventsOf()[:2] {
		if ev.Allowed || ev.Reason != "not in the allowlist" || ev.Rule != "" || ev.Port == 0 {
			t.Errorf("event for B = %+v", ev)
		}
	}
}

func TestRefusedNameIsNeverResolved(t *testing.T) {
	h := startProxy(t, []string{"allowed.test"})
	h.res.add("evil.test", "127.0.0.1")
	resp, _, _ := h.raw("CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n")
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if h.res.wasAsked("evil.test") {
		t.Fatal("the proxy resolved a name no rule allows: a DNS side door")
	}
	// Only the default port is allowed for a rule without a port.
	resp, _, _ = h.raw("CONNECT allowed.test:80 HTTP/1.1\r\nHost: allowed.test:80\r\n\r\n")
	if resp.StatusCode != http.StatusForbidden || h.res.wasAsked("allowed.test") {
		t.Fatalf("allowed.test:80: status %d, resolved %v", resp.StatusCode, h.res.wasAsked("allowed.test"))
	}
}

func TestAllowedNamesResolvingToUnsafeAddressesAreRefused(t *testing.T) {
	a := newUpstream(t, "A", false)
	b := newUpstream(t, "B", false)
	bp := b.port()
	h := startProxy(t, []string{
		"sneaky.test:" + bp, "meta.test:" + bp, "meta6.test:" + bp, "mixed.test:" + bp,
		"v6loop.test:" + bp, "*.wild.test:" + bp,
		// A literal rule for A's address lets a name that resolves to it in.
		a.hostport(), "alias.test:" + a.port(),
	})
	h.res.add("sneaky.test", "127.0.0.1")
	h.res.add("meta.test", "169.254.169.254")
	h.res.add("meta6.test", "fd00:ec2::254")
	h.res.add("mixed.test", "192.0.2.10", "127.0.0.1") // documentation address first: any bad one refuses
	h.res.add("v6loop.test", "::1")
	h.res.add("x.wild.test", "::ffff:127.0.0.1")
	h.res.add("alias.test", "127.0.0.1")

	for _, tc := range []struct{ name, addr, kind string }{
		{"sneaky.test", "127.0.0.1", "loopback"},
		{"meta.test", "169.254.169.254", "cloud metadata"},
		{"meta6.test", "fd00:ec2::254", "cloud metadata"},
		{"mixed.test", "127.0.0.1", "loopback"},
		{"v6loop.test", "::1", "loopback"},
		{"x.wild.test", "127.0.0.1", "loopback"},
	} {
		target := tc.name + ":" + bp
		want := fmt.Sprintf("egress to %s refused: %s resolves to %s, a %s address; only a rule naming ", target, tc.name, tc.addr, tc.kind)
		resp, body, _ := h.raw("CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n\r\n")
		if resp.StatusCode != http.StatusForbidden || !strings.HasPrefix(body, want) || !strings.HasPrefix(resp.Header.Get(RefusedHeader), want) {
			t.Errorf("CONNECT %s: %d %q\nwant 403 %q…", target, resp.StatusCode, body, want)
		}
		resp, body, err := h.get(nil, "http://"+target+"/")
		if err != nil || resp.StatusCode != http.StatusForbidden || !strings.HasPrefix(body, want) {
			t.Errorf("GET %s: %v %v %q", target, err, resp, body)
		}
	}
	if n := b.hits.Load(); n != 0 {
		t.Fatalf("upstream B answered %d requests through names that resolve to loopback", n)
	}

	resp, body, err := h.get(nil, "http://alias.test:"+a.port()+"/")
	if err != nil || resp.StatusCode != 200 || body != "hello from A" {
		t.Fatalf("alias.test (resolves to an address a rule names): %v %v %q", err, resp, body)
	}
	// The transport dialled the vetted address: it did not resolve again,
	// so a second, different answer (DNS rebinding) could not be used.
	if n := h.res.timesAsked("alias.test"); n != 1 {
		t.Errorf("alias.test was resolved %d times for one request, want 1", n)
	}
	evs := h.eventsOf()
	last := evs[len(evs)-1]
	if !last.Allowed || last.Rule != "alias.test:"+a.port() || last.Host != "alias.test" {
		t.Errorf("alias event = %+v", last)
	}
	for _, ev := range evs[:len(evs)-1] {
		if ev.Allowed || ev.Rule == "" || !strings.HasPrefix(ev.Reason, "resolves to ") {
			t.Errorf("unsafe-address event = %+v: want refused, with the rule that matched and why", ev)
		}
	}
}

func TestLiveRulesUpdateWithoutRestart(t *testing.T) {
	a := newUpstream(t, "A", false)
	b := newUpstream(t, "B", false)
	h := startProxy(t, nil)
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.json")
	write := func(rules ...string) {
		t.Helper()
		data, err := EncodeRulesFile(testIdentity, rules)
		if err != nil {
			t.Fatal(err)
		}
		// Replace by rename, as an atomic writer or `docker cp` does.
		tmp := filepath.Join(dir, "rules.tmp")
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write(a.hostport())
	w := NewWatcher(path, testIdentity, h.p.log)
	w.SetInterval(20 * time.Millisecond)
	rs, err := w.Load()
	if err != nil {
		t.Fatal(err)
	}
	h.p.SetRules(rs)
	ctx, cancel := context.WithCancel(t.Context())
	go w.Run(ctx, h.p.SetRules)
	defer cancel()

	status := func(u *upstream) int {
		resp, _, err := h.get(nil, u.URL)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode
	}
	if status(a) != 200 || status(b) != 403 {
		t.Fatal("before the update: want A allowed and B refused")
	}
	write(a.hostport(), b.hostport())
	eventually(t, "B to be allowed after the rules file changed", func() bool { return status(b) == 200 })

	// A bad file keeps the rules in force and says why.
	if err := os.WriteFile(path, []byte(`{"identity":"`+testIdentity+`","rules":["bad:port"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the bad file to be reported", func() bool { return strings.Contains(h.logs.String(), `rule 1 (\"bad:port\")`) })
	if status(b) != 200 || status(a) != 200 {
		t.Fatal("a bad rules file changed the rules in force")
	}
	// A file for another bottle is refused the same way.
	other, _ := EncodeRulesFile("other-aaaaa", []string{"x.test"})
	if err := os.WriteFile(path, other, 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the other bottle's file to be reported", func() bool { return strings.Contains(h.logs.String(), `not \"`+testIdentity) })
	if status(b) != 200 {
		t.Fatal("another bottle's rules file changed the rules in force")
	}
	// Rewriting in place (no rename) is seen too, and rules can shrink.
	data, _ := EncodeRulesFile(testIdentity, []string{a.hostport()})
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "B to be refused again", func() bool { return status(b) == 403 })
	// Each bad file is reported once, however often it is polled. (An
	// in-place rewrite caught empty for two polls in a row, on a loaded
	// machine, is a third, honest report: it is not counted here.)
	for _, bad := range []string{`rule 1 (\"bad:port\")`, `not \"` + testIdentity} {
		if n := strings.Count(h.logs.String(), bad); n != 1 {
			t.Errorf("the bad file %s was reported %d times, want once:\n%s", bad, n, h.logs.String())
		}
	}
}

func TestEveryAttemptIsInTheEventLog(t *testing.T) {
	a := newUpstream(t, "A", false)
	h := startProxy(t, []string{a.hostport(), "gone.test:80", "*.ok.test:9"})
	h.res.add("api.ok.test", "127.0.0.1") // no rule names 127.0.0.1:9: refused
	h.raw("CONNECT " + a.hostport() + " HTTP/1.1\r\n\r\n")
	h.get(nil, a.URL+"/path")
	h.raw("CONNECT nope.test:443 HTTP/1.1\r\n\r\n")
	h.get(nil, "http://gone.test/")
	h.get(nil, "http://api.ok.test:9/")
	h.raw("CONNECT nope.test HTTP/1.1\r\n\r\n")
	want := []struct {
		host    string
		port    int
		allowed bool
		rule    string
		reason  string
		method  string
	}{
		{"127.0.0.1", atoi(a.port()), true, a.hostport(), "", "CONNECT"},
		{"127.0.0.1", atoi(a.port()), true, a.hostport(), "", "GET"},
		{"nope.test", 443, false, "", "not in the allowlist", "CONNECT"},
		{"gone.test", 80, false, "gone.test:80", "cannot resolve: ", "GET"},
		{"api.ok.test", 9, false, "*.ok.test:9", "resolves to 127.0.0.1 (loopback)", "GET"},
		{"nope.test", 0, false, "", "bad request: CONNECT target: ", "CONNECT"},
	}
	evs := h.eventsOf()
	if len(evs) != len(want) {
		t.Fatalf("%d events, want %d:\n%s", len(evs), len(want), h.events.String())
	}
	for i, w := range want {
		ev := evs[i]
		if ev.Host != w.host || ev.Port != w.port || ev.Allowed != w.allowed || ev.Rule != w.rule ||
			!strings.HasPrefix(ev.Reason, w.reason) || (w.reason == "") != (ev.Reason == "") || ev.Method != w.method {
			t.Errorf("event %d = %+v\nwant %+v", i, ev, w)
		}
	}
}

func TestHostileInputsGet400AndTheProxySurvives(t *testing.T) {
	a := newUpstream(t, "A", false)
	h := startProxy(t, []string{a.hostport()})
	long := strings.Repeat("a", 5000) + ".test"
	for _, tc := range []struct {
		name, req string
		status    int
	}{
		{"CONNECT without port", "CONNECT example.test HTTP/1.1\r\nHost: example.test\r\n\r\n", 400},
		{"CONNECT to a path", "CONNECT /x HTTP/1.1\r\nHost: example.test\r\n\r\n", 400},
		{"CONNECT to a wildcard", "CONNECT *.example.test:443 HTTP/1.1\r\n\r\n", 400},
		{"CONNECT with a bad port", "CONNECT example.test:99999 HTTP/1.1\r\n\r\n", 400},
		{"CONNECT with a zoned address", "CONNECT [fe80::1%25eth0]:443 HTTP/1.1\r\n\r\n", 400},
		{"absurdly long CONNECT host", "CONNECT " + long + ":443 HTTP/1.1\r\n\r\n", 400},
		{"absurdly long URL host", "GET http://" + long + "/ HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"garbage request line", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n", 400},
		{"no method", " / HTTP/1.1\r\n\r\n", 400},
		{"origin-form request", "GET / HTTP/1.1\r\nHost: " + a.hostport() + "\r\n\r\n", 400},
		{"https absolute URL", "GET https://" + a.hostport() + "/ HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"ftp absolute URL", "GET ftp://" + a.hostport() + "/ HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"host with a space", "GET http://a%20b.test/ HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"headers larger than the limit", "GET " + a.URL + "/ HTTP/1.1\r\nX-Big: " + strings.Repeat("x", 200<<10) + "\r\n\r\n", 431},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body, _ := h.raw(tc.req)
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d (%q)", resp.StatusCode, tc.status, body)
			}
			if strings.Count(strings.TrimSpace(body), "\n") != 0 {
				t.Errorf("body is not one line: %q", body)
			}
			if len(body) > 600 {
				t.Errorf("body is %d bytes: the input is echoed back unbounded", len(body))
			}
			if resp, body, err := h.get(nil, a.URL); err != nil || resp.StatusCode != 200 || body != "hello from A" {
				t.Fatalf("the proxy no longer serves after %s: %v %v %q", tc.name, err, resp, body)
			}
		})
	}
	if n := a.hits.Load(); n != 14 {
		t.Errorf("upstream answered %d requests, want only the 14 checks", n)
	}
}

func TestEachRequestOnAKeptAliveConnectionIsChecked(t *testing.T) {
	a := newUpstream(t, "A", false)
	b := newUpstream(t, "B", false)
	h := startProxy(t, []string{a.hostport()})
	resp, body, c := h.raw("GET " + a.URL + "/ HTTP/1.1\r\nHost: " + a.hostport() + "\r\n\r\n")
	if resp.StatusCode != 200 || body != "hello from A" || resp.Close {
		t.Fatalf("first request: %d %q close=%v", resp.StatusCode, body, resp.Close)
	}
	if _, err := io.WriteString(c, "GET "+b.URL+"/ HTTP/1.1\r\nHost: "+b.hostport()+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(c.(*bufferedConn).r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusForbidden || b.hits.Load() != 0 {
		t.Fatalf("second request on the same connection: %d, B hits %d", resp.StatusCode, b.hits.Load())
	}
}

func TestHopByHopHeadersAreStripped(t *testing.T) {
	// A raw upstream, so that its response carries exactly the hop-by-hop
	// headers written here. (net/http drops a response's whole Connection
	// header when it says "close", and with it the names it nominates; so
	// this upstream nominates without "close" and ends the body by length.)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan http.Header, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			got <- nil
			return
		}
		got <- req.Header
		io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: X-Upstream-Hop\r\nX-Upstream-Hop: 1\r\n"+
			"Keep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok")
	}()
	up := ln.Addr().String()
	h := startProxy(t, []string{up})
	req := "GET http://" + up + "/ HTTP/1.1\r\nHost: " + up + "\r\n" +
		"Connection: X-Client-Hop\r\nX-Client-Hop: 1\r\nProxy-Authorization: Basic c2VjcmV0\r\n" +
		"Proxy-Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nTe: deflate\r\nUpgrade: h2c\r\nX-End-To-End: kept\r\n\r\n"
	resp, body, _ := h.raw(req)
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("status %d %q", resp.StatusCode, body)
	}
	hdr := <-got
	for _, k := range []string{"X-Client-Hop", "Proxy-Authorization", "Proxy-Connection", "Keep-Alive", "Te", "Upgrade"} {
		if v := hdr.Get(k); v != "" {
			t.Errorf("upstream received hop-by-hop header %s: %q", k, v)
		}
	}
	if hdr.Get("X-End-To-End") != "kept" {
		t.Errorf("an end-to-end request header was dropped: %v", hdr)
	}
	for _, k := range []string{"X-Upstream-Hop", "Keep-Alive", "Proxy-Authenticate"} {
		if v := resp.Header.Get(k); v != "" {
			t.Errorf("client received hop-by-hop header %s: %q", k, v)
		}
	}
	if resp.Header.Get("X-Kept") != "yes" {
		t.Errorf("an end-to-end response header was dropped: %v", resp.Header)
	}
}

func TestSecretsInRequestsNeverReachTheLogs(t *testing.T) {
	const secret = "sk-SECRET-4f9a1c"
	a := newUpstream(t, "A", false)
	b := newUpstream(t, "B", false)
	h := startProxy(t, []string{a.hostport()})
	for _, u := range []string{a.URL, b.URL, "http://unresolvable.test"} {
		req := "GET " + u + "/v1?key=" + secret + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + secret +
			"\r\nCookie: s=" + secret + "\r\n\r\n"
		h.raw(req)
	}
	h.raw("CONNECT " + b.hostport() + " HTTP/1.1\r\nProxy-Authorization: Bearer " + secret + "\r\n\r\n")
	if len(h.eventsOf()) != 4 {
		t.Fatalf("want 4 events, got:\n%s", h.events.String())
	}
	for name, text := range map[string]string{"event log": h.events.String(), "proxy log": h.logs.String()} {
		if strings.Contains(text, secret) {
			t.Errorf("the %s contains a secret from a request:\n%s", name, text)
		}
	}
}

func TestConnectTunnelCarriesEarlyBytesAndHalfCloses(t *testing.T) {
	echo := echoServer(t)
	h := startProxy(t, []string{echo})
	// The client sends its first bytes right behind the CONNECT, as TLS
	// clients that do not wait for the answer do.
	resp, _, c := h.raw("CONNECT " + echo + " HTTP/1.1\r\nHost: " + echo + "\r\n\r\nearly ")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	io.WriteString(c, "late")
	c.(*bufferedConn).Conn.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "early late" {
		t.Fatalf("echo through the tunnel = %q", got)
	}
}

func TestConnectFromAClientThatHalfClosesAtOnce(t *testing.T) {
	echo := echoServer(t)
	h := startProxy(t, []string{echo}, withDialDelay(200*time.Millisecond))
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// Everything in one write, then EOF: as `printf ... | nc proxy 3128`.
	io.WriteString(c, "CONNECT "+echo+" HTTP/1.1\r\n\r\nall at once")
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := "HTTP/1.1 200 Connection established\r\n\r\nall at once"; string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestIdleTunnelIsClosedAndABusyOneIsNot(t *testing.T) {
	echo := echoServer(t)
	h := startProxy(t, []string{echo}, withIdle(300*time.Millisecond))
	_, _, busy := h.raw("CONNECT " + echo + " HTTP/1.1\r\n\r\n")
	_, _, idle := h.raw("CONNECT " + echo + " HTTP/1.1\r\n\r\n")
	start := time.Now()
	buf := make([]byte, 4)
	for time.Since(start) < time.Second {
		if _, err := io.WriteString(busy, "ping"); err != nil {
			t.Fatalf("busy tunnel closed after %v: %v", time.Since(start), err)
		}
		if _, err := io.ReadFull(busy, buf); err != nil {
			t.Fatalf("busy tunnel closed after %v: %v", time.Since(start), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := idle.Read(buf); err != io.EOF {
		t.Fatalf("idle tunnel: read %d, %v; want EOF (closed by the proxy)", n, err)
	}
}

func TestShutdownClosesTunnels(t *testing.T) {
	echo := echoServer(t)
	h := startProxy(t, []string{echo})
	_, _, c := h.raw("CONNECT " + echo + " HTTP/1.1\r\n\r\n")
	h.stop()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("tunnel after shutdown: %v, want EOF", err)
	}
	if _, err := net.DialTimeout("tcp", h.addr, time.Second); err == nil {
		t.Fatal("the proxy still accepts connections after shutdown")
	}
}

func TestShutdownDoesNotWaitForADialInFlight(t *testing.T) {
	echo := echoServer(t)
	h := startProxy(t, []string{echo}, withDialDelay(time.Minute))
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "CONNECT "+echo+" HTTP/1.1\r\n\r\n")
	eventually(t, "the upstream dial to begin", func() bool { return h.dials.Load() > 0 })
	start := time.Now()
	h.stop()
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("shutdown took %v with a dial in flight", d)
	}
}

func TestUpstreamFailuresAre502WithOneLine(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	h := startProxy(t, []string{closed, "nxdomain.test"})
	resp, body, _ := h.raw("CONNECT " + closed + " HTTP/1.1\r\n\r\n")
	if resp.StatusCode != http.StatusBadGateway || !strings.HasPrefix(body, "egress to "+closed+" failed: ") || strings.Count(body, "\n") != 1 {
		t.Errorf("closed port: %d %q", resp.StatusCode, body)
	}
	resp, body, _ = h.raw("GET http://" + closed + "/ HTTP/1.1\r\nHost: " + closed + "\r\n\r\n")
	if resp.StatusCode != http.StatusBadGateway || !strings.HasPrefix(body, "egress to "+closed+" failed: ") {
		t.Errorf("closed port, plain HTTP: %d %q", resp.StatusCode, body)
	}
	resp, body, _ = h.raw("CONNECT nxdomain.test:443 HTTP/1.1\r\n\r\n")
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "cannot resolve nxdomain.test") {
		t.Errorf("unresolvable name: %d %q", resp.StatusCode, body)
	}
}

// failingWriter stands for an audit log that cannot be written.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestAnAttemptThatCannotBeAuditedIsRefused(t *testing.T) {
	a := newUpstream(t, "A", false)
	h := startProxy(t, []string{a.hostport()}, withEvents(failingWriter{}))
	resp, body, err := h.get(nil, a.URL)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "audit log cannot be written") {
		t.Fatalf("unaudited attempt: %d %q", resp.StatusCode, body)
	}
	if a.hits.Load() != 0 {
		t.Fatal("an attempt that could not be audited reached the upstream")
	}
	if !strings.Contains(h.logs.String(), "disk full") {
		t.Errorf("the proxy log does not say why:\n%s", h.logs.String())
	}
}

func TestNewRequiresIdentityAndEvents(t *testing.T) {
	if _, err := New(Config{Events: NewEventLog(io.Discard)}); err == nil {
		t.Error("New without identity succeeded")
	}
	if _, err := New(Config{Identity: testIdentity}); err == nil {
		t.Error("New without an event log succeeded")
	}
}

func atoi(s string) int {
	var n int
	fmt.Sscan(s, &n)
	return n
}

// A plain-HTTP client that half-closes right after its request (as
// `printf 'GET …' | nc proxy 3128` does) still gets the upstream's answer,
// and a failed upstream is a 502, never an empty 200.
func TestPlainHTTPFromAClientThatHalfClosesAtOnce(t *testing.T) {
	up := newUpstream(t, "up", false)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := closed.Addr().String()
	closed.Close()
	h := startProxy(t, []string{up.hostport(), gone}, withDialDelay(200*time.Millisecond))
	ask := func(hostport string) string {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET http://"+hostport+"/ HTTP/1.0\r\n\r\n")
		c.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		return string(got)
	}
	if got := ask(up.hostport()); !strings.HasPrefix(got, "HTTP/1.0 200 OK\r\n") || !strings.HasSuffix(got, "hello from up") {
		t.Errorf("allowed upstream: %q", got)
	}
	if got := ask(gone); !strings.HasPrefix(got, "HTTP/1.0 502 ") || !strings.Contains(got, "egress to "+gone+" failed") {
		t.Errorf("allowed upstream that refuses: %q, want a 502 with the reason", got)
	}
}
