package egress

import (
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"
)

// A websocket on a terminated host works: the upgraded connection is kept
// until one side closes it.
func TestReviewWebSocketUpgradeOnTerminatedHost(t *testing.T) {
	w := newCredWorld(t)
	base, _ := echoWorld(t, w, func(rw http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(rw, "want websocket", 400)
			return
		}
		c, brw, err := http.NewResponseController(rw).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		buf := make([]byte, 4)
		if _, err := io.ReadFull(brw, buf); err == nil {
			c.Write(buf)
		}
	})
	hp := strings.TrimPrefix(base, "https://")
	tc, br := terminated(t, w.h, w.ca, hp)
	fmt.Fprintf(tc, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Api-Key: %s\r\n\r\n", hp, w.cred.Placeholder)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %d", resp.StatusCode)
	}
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(tc, "ping")
	got := make([]byte, 4)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "ping" {
		t.Fatalf("websocket echo: %q %v", got, err)
	}
}

// h2c turns an allowed request's connection into HTTP/2, whose requests the
// proxy never sees: refused wherever the proxy judges requests.
func TestReviewH2CUpgradeIsRefused(t *testing.T) {
	w := newCredWorld(t)
	hp := hostPort("other.test", w.other.port()) // GET other.test/ rule
	tc, br := terminated(t, w.h, w.ca, hp)
	fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n", hp)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(resp.Header.Get(RefusedHeader), "h2c") {
		t.Errorf("h2c upgrade inside a terminated CONNECT: %d %q", resp.StatusCode, resp.Header.Get(RefusedHeader))
	}
	if w.other.count() != 0 {
		t.Error("the h2c upgrade reached the upstream")
	}
	// And over plain HTTP to a host with a rule about requests.
	up := newRecorder(t, nil, "plain.test")
	php := hostPort("plain.test", up.port())
	h := startProxy(t, []string{"GET " + php + "/", "127.0.0.1:" + up.port()}, withCA(w.ca))
	h.res.add("plain.test", "127.0.0.1")
	r, body, _ := h.raw("GET http://" + php + "/ HTTP/1.1\r\nHost: " + php + "\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
	if r.StatusCode != http.StatusForbidden || !strings.Contains(body, "h2c") {
		t.Errorf("plain h2c upgrade: %d %q", r.StatusCode, body)
	}
	if up.count() != 0 {
		t.Error("the plain h2c upgrade reached the upstream")
	}
}

// Stopping the proxy ends its terminated connections, a kept-alive one and
// an open websocket, and leaves no goroutine behind; so does a bottle that
// hangs up mid-handshake or after one request.
func TestReviewTerminatedConnectionsEndWithTheProxy(t *testing.T) {
	w := newCredWorld(t)
	wsBase, _ := echoWorld(t, w, func(rw http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			io.WriteString(rw, "plain")
			return
		}
		c, brw, err := http.NewResponseController(rw).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		io.Copy(io.Discard, brw) // until the proxy hangs up
	})
	hp := strings.TrimPrefix(wsBase, "https://")
	before := runtime.NumGoroutine()

	// Hung up mid-handshake, and after one request.
	_, _, raw := w.h.raw("CONNECT " + hp + " HTTP/1.1\r\nHost: " + hp + "\r\n\r\n")
	raw.Write([]byte{0x16, 0x03, 0x01})
	raw.Close()
	tc, br := terminated(t, w.h, w.ca, hp)
	fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", hp)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET: %v %v", resp, err)
	}
	tc.Close()
	eventually(t, "the goroutines of closed connections to end", func() bool { return runtime.NumGoroutine() <= before+2 })

	// Open at the stop: a kept-alive connection and a websocket.
	idle, ibr := terminated(t, w.h, w.ca, hp)
	fmt.Fprintf(idle, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", hp)
	resp, err := http.ReadResponse(ibr, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	ws, wbr := terminated(t, w.h, w.ca, hp)
	fmt.Fprintf(ws, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", hp)
	if resp, err := http.ReadResponse(wbr, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	w.h.stop()
	for name, c := range map[string]io.Reader{"kept-alive": ibr, "websocket": wbr} {
		done := make(chan error, 1)
		go func() { _, err := c.Read(make([]byte, 1)); done <- err }()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("%s connection: read data after the stop", name)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%s connection still open 5s after the stop", name)
		}
	}
	idle.Close()
	ws.Close()
	eventually(t, "the proxy's goroutines to end", func() bool { return runtime.NumGoroutine() <= before+2 })
}

// Revoking a credential ends what it opened: a websocket (or a stream)
// authenticated with the value at its start would otherwise go on.
func TestReviewRevokeEndsConnectionsThatCarriedTheValue(t *testing.T) {
	w := newCredWorld(t)
	base, _ := echoWorld(t, w, func(rw http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			io.WriteString(rw, "plain")
			return
		}
		c, brw, err := http.NewResponseController(rw).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		io.Copy(c, brw)
	})
	hp := strings.TrimPrefix(base, "https://")
	ws, wbr := terminated(t, w.h, w.ca, hp)
	fmt.Fprintf(ws, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Api-Key: %s\r\n\r\n", hp, w.cred.Placeholder)
	if resp, err := http.ReadResponse(wbr, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	ws.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(ws, "ping")
	if b := make([]byte, 4); func() bool { _, err := io.ReadFull(wbr, b); return err != nil }() {
		t.Fatal("websocket echo before the revoke failed")
	}
	// Another connection that never carried it stays.
	other, obr := terminated(t, w.h, w.ca, hp)
	other.SetDeadline(time.Now().Add(5 * time.Second))
	w.h.p.Revoke("anthropic")
	io.WriteString(ws, "pong")
	if _, err := io.ReadFull(wbr, make([]byte, 4)); err == nil {
		t.Error("the websocket opened with the credential still works after its revoke")
	}
	fmt.Fprintf(other, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", hp)
	if resp, err := http.ReadResponse(obr, nil); err != nil || resp.StatusCode != 200 {
		t.Errorf("a connection that never carried the credential: %v %v", resp, err)
	}
}

// A bottle cannot hold an unbounded number of terminated connections: each
// costs the proxy two TLS sessions, a server and a transport, and the
// proxy's process serves every bottle of a home.
func TestReviewTerminatedConnectionsAreBounded(t *testing.T) {
	w := newCredWorld(t)
	w.h.p.maxTerminated = 2
	hp := hostPort("api.test", w.api.port())
	a, _ := terminated(t, w.h, w.ca, hp)
	terminated(t, w.h, w.ca, hp)
	resp, body, _ := w.h.raw("CONNECT " + hp + " HTTP/1.1\r\nHost: " + hp + "\r\n\r\n")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "2 connections") {
		t.Errorf("third terminated CONNECT: %d %q, want 503 naming the bound", resp.StatusCode, body)
	}
	// Plain tunnels are not counted.
	if resp, _, _ := w.h.raw("CONNECT " + hostPort("tunnel.test", w.tunnel.port()) + " HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 200 {
		t.Errorf("a tunnel beside them: %d", resp.StatusCode)
	}
	a.Close()
	eventually(t, "a terminated CONNECT to be admitted again", func() bool {
		resp, _, c := w.h.raw("CONNECT " + hp + " HTTP/1.1\r\nHost: " + hp + "\r\n\r\n")
		c.Close()
		return resp.StatusCode == 200
	})
}
