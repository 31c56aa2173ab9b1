package egress

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// bigUpstream serves size pseudo-random bytes at /len (with a length), at
// /chunked (without one) and at /stall (a length, then half the bytes and
// silence), and returns the bytes.
func bigUpstream(t *testing.T, size int) (*httptest.Server, []byte) {
	t.Helper()
	data := make([]byte, size)
	r := rand.NewChaCha8([32]byte{1, 4})
	r.Read(data)
	stall := make(chan struct{})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch req.URL.Path {
		case "/len", "/stall":
			w.Header().Set("Content-Length", strconv.Itoa(size))
		}
		body := data
		if req.URL.Path == "/stall" {
			body = data[:size/2]
		}
		// Odd-sized writes, so that the header and the first bytes share
		// the proxy's read buffer.
		for len(body) > 0 {
			n := min(len(body), 7919)
			if _, err := w.Write(body[:n]); err != nil {
				return
			}
			body = body[n:]
		}
		if req.URL.Path == "/stall" {
			w.(http.Flusher).Flush()
			<-stall
		}
	}))
	t.Cleanup(func() { close(stall); ts.Close() })
	return ts, data
}

func TestLargeBodiesArriveWhole(t *testing.T) {
	const size = 5<<20 + 17
	ts, data := bigUpstream(t, size)
	hostport := ts.Listener.Addr().String()
	h := startProxy(t, []string{hostport})
	want := sha256.Sum256(data)
	for _, path := range []string{"/len", "/chunked"} {
		resp, body, err := h.get(nil, ts.URL+path)
		if err != nil {
			t.Fatalf("GET %s through the proxy: %v", path, err)
		}
		if resp.StatusCode != 200 || len(body) != size || sha256.Sum256([]byte(body)) != want {
			t.Fatalf("GET %s through the proxy: %d, %d bytes, not the upstream's %d", path, resp.StatusCode, len(body), size)
		}
	}
	resp, err := h.client(nil).Head(ts.URL + "/len")
	if err != nil || resp.StatusCode != 200 || resp.ContentLength != size {
		t.Fatalf("HEAD through the proxy: %v %+v", err, resp)
	}
	resp.Body.Close()
	// Through a tunnel too.
	_, _, c := h.raw("CONNECT " + hostport + " HTTP/1.1\r\n\r\n")
	io.WriteString(c, "GET /len HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	all, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("GET through a tunnel: %v", err)
	}
	_, body, ok := bytes.Cut(all, []byte("\r\n\r\n"))
	if !ok || sha256.Sum256(body) != want {
		t.Fatalf("GET through a tunnel: %d bytes, not the upstream's %d", len(body), size)
	}
}

func TestIdleLargeBodyIsCut(t *testing.T) {
	ts, _ := bigUpstream(t, 4<<20)
	h := startProxy(t, []string{ts.Listener.Addr().String()}, withIdle(300*time.Millisecond))
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET "+ts.URL+"/stall HTTP/1.1\r\nHost: x\r\n\r\n")
	start := time.Now()
	n, err := io.Copy(io.Discard, c)
	if err != nil && strings.Contains(err.Error(), "timeout") {
		t.Fatalf("the proxy kept a stalled body open for %v (read %d bytes)", time.Since(start), n)
	}
	if n >= 4<<20 {
		t.Fatalf("read %d bytes of a body the upstream stopped sending at half", n)
	}
	if n < 2<<20 {
		t.Fatalf("read only %d bytes; the upstream sent %d before it stalled", n, 2<<20)
	}
}

// A bottle's connection, accepted on a listener made with ListenLocal, runs
// LocalCongestion whatever the host's default: the accepted socket inherits
// it from the listener.
func TestListenLocalAcceptsWithLocalCongestion(t *testing.T) {
	lc := net.ListenConfig{Control: ListenLocal}
	ln, err := lc.Listen(t.Context(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if got := congestion(t, a); got != LocalCongestion {
		t.Errorf("accepted connection runs %q, want %q", got, LocalCongestion)
	}
	t.Logf("the dialing side runs the host's default, %q", congestion(t, c))
}

func congestion(t *testing.T, c net.Conn) string {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var name string
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		name, gerr = unix.GetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION)
	}); err != nil || gerr != nil {
		t.Fatalf("TCP_CONGESTION: %v %v", err, gerr)
	}
	return strings.TrimRight(name, "\x00")
}

// A CONNECT tunnel between two TCP connections copies in the kernel: the
// connections reach the copy unwrapped (a wrapper on either would make
// net.TCPConn.ReadFrom fall back to a buffer), with bytes sent right
// behind the CONNECT forwarded first.
func TestTunnelSplices(t *testing.T) {
	const size = 1<<20 + 3
	ts, data := bigUpstream(t, size)
	hostport := ts.Listener.Addr().String()
	h := startProxy(t, []string{hostport})
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "CONNECT "+hostport+" HTTP/1.1\r\nHost: "+hostport+"\r\n\r\nGET /len HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	all, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("GET through a tunnel: %v", err)
	}
	_, rest, _ := bytes.Cut(all, []byte("\r\n\r\n")) // the CONNECT's answer
	_, body, ok := bytes.Cut(rest, []byte("\r\n\r\n"))
	if !ok || !bytes.Equal(body, data) {
		t.Fatalf("GET through a tunnel: %d bytes, not the upstream's %d", len(body), size)
	}
	eventually(t, "the tunnel's log line", func() bool { return strings.Contains(h.logs.String(), "tunnel open") })
	if logs := h.logs.String(); !strings.Contains(logs, "copy=splice") {
		t.Errorf("the tunnel did not splice:\n%s", logs)
	}
}
