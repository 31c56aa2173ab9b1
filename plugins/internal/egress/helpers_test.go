package egress

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/egressrule"
)

const testIdentity = "shell-7k2qz"

// syncBuffer is a bytes.Buffer safe for the proxy's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fakeResolver answers from a table and remembers every name asked.
type fakeResolver struct {
	t     testing.TB
	mu    sync.Mutex
	names map[string][]netip.Addr
	asked []string
}

func (f *fakeResolver) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, host)
	if !strings.HasSuffix(host, ".") {
		f.t.Errorf("resolver asked for %q: not fully qualified, a search domain could be appended", host)
	}
	if network != "ip" {
		f.t.Errorf("resolver asked for network %q", network)
	}
	name := strings.TrimSuffix(host, ".")
	if addrs, ok := f.names[name]; ok {
		return addrs, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (f *fakeResolver) add(name string, addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range addrs {
		f.names[name] = append(f.names[name], netip.MustParseAddr(a))
	}
}

func (f *fakeResolver) wasAsked(name string) bool { return f.timesAsked(name) > 0 }

func (f *fakeResolver) timesAsked(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, a := range f.asked {
		if strings.TrimSuffix(a, ".") == name {
			n++
		}
	}
	return n
}

// harness is a proxy serving on loopback.
type harness struct {
	t      testing.TB
	p      *Proxy
	addr   string // host:port of the proxy
	events *syncBuffer
	logs   *syncBuffer
	res    *fakeResolver
	cancel context.CancelFunc
	done   chan error
	// dials counts the upstream dials begun under withDialDelay.
	dials atomic.Int32
}

// proxyOpts are a test proxy's settings.
type proxyOpts struct {
	cfg       Config
	dialDelay time.Duration // slows every upstream dial, as a remote upstream would
	realDial  bool          // the proxy's own dialer, which refuses its own host
}

type proxyOpt func(*proxyOpts)

func withIdle(d time.Duration) proxyOpt      { return func(o *proxyOpts) { o.cfg.IdleTimeout = d } }
func withEvents(w io.Writer) proxyOpt        { return func(o *proxyOpts) { o.cfg.Events = NewEventLog(w) } }
func withDialDelay(d time.Duration) proxyOpt { return func(o *proxyOpts) { o.dialDelay = d } }

// asDeployed is the proxy as a backend runs it: its own dialer, and no
// connection to its own host.
func asDeployed() proxyOpt {
	return func(o *proxyOpts) { o.realDial, o.cfg.AllowOwnHost = true, false }
}

func startProxy(t testing.TB, rules []string, opts ...proxyOpt) *harness {
	t.Helper()
	h := &harness{t: t, events: &syncBuffer{}, logs: &syncBuffer{}, done: make(chan error, 1)}
	h.res = &fakeResolver{t: t, names: map[string][]netip.Addr{}}
	rs, err := egressrule.ParseRules(rules)
	if err != nil {
		t.Fatal(err)
	}
	o := proxyOpts{cfg: Config{
		Identity: testIdentity,
		Rules:    rs,
		Events:   NewEventLog(h.events),
		Resolver: h.res,
		Log:      slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		// The test's upstreams are on loopback; proxy_test's own-host
		// tests build their proxy without this.
		AllowOwnHost: true,
	}}
	for _, opt := range opts {
		opt(&o)
	}
	p, err := New(o.cfg)
	if err != nil {
		t.Fatal(err)
	}
	guard := loopbackOnly(t)
	if o.realDial {
		guard = p.dialContext
	}
	p.dialContext = guard
	if d := o.dialDelay; d > 0 {
		p.dialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			h.dials.Add(1)
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return guard(ctx, network, addr)
		}
	}
	h.p = p
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- p.Serve(ctx, ln) }()
	t.Cleanup(h.stop)
	return h
}

// stop shuts the proxy down and reports what Serve returned.
func (h *harness) stop() {
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Serve: %v", err)
		}
		h.done <- nil // later stops see a clean exit
	case <-time.After(10 * time.Second):
		h.t.Error("proxy did not shut down within 10s")
	}
}

// loopbackOnly is the real dialer behind a guard: tests only ever reach
// servers they started on loopback, and a proxy bug must not change that.
func loopbackOnly(t testing.TB) func(context.Context, string, string) (net.Conn, error) {
	var d net.Dialer
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil || !ap.Addr().IsLoopback() {
			t.Errorf("proxy dialled %q: tests may only reach loopback", addr)
			return nil, errors.New("test guard: not loopback")
		}
		return d.DialContext(ctx, network, addr)
	}
}

// client returns an HTTP client that goes through the proxy and trusts ts.
func (h *harness) client(ts *httptest.Server) *http.Client {
	tr := &http.Transport{
		Proxy:             http.ProxyURL(&url.URL{Scheme: "http", Host: h.addr}),
		DisableKeepAlives: true,
	}
	if ts != nil && ts.TLS != nil {
		tr.TLSClientConfig = ts.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func (h *harness) get(ts *httptest.Server, rawURL string) (*http.Response, string, error) {
	resp, err := h.client(ts).Get(rawURL)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

// raw sends bytes to the proxy on a new connection and reads one response.
func (h *harness) raw(req string) (*http.Response, string, net.Conn) {
	h.t.Helper()
	c, err := net.DialTimeout("tcp", h.addr, 5*time.Second)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		h.t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: strings.Fields(req + " x")[0]})
	if err != nil {
		h.t.Fatalf("read response to %.60q: %v", req, err)
	}
	var body string
	if resp.StatusCode != http.StatusOK || resp.Request.Method != http.MethodConnect {
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
	}
	return resp, body, &bufferedConn{Conn: c, r: br}
}

type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// eventsOf decodes the event log as the core will: into sdk.EgressEvent.
func (h *harness) eventsOf() []sdk.EgressEvent {
	h.t.Helper()
	var out []sdk.EgressEvent
	for _, line := range strings.Split(strings.TrimSpace(h.events.String()), "\n") {
		if line == "" {
			continue
		}
		var ev sdk.EgressEvent
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			h.t.Fatalf("event log line %q: %v", line, err)
		}
		if _, err := time.Parse(time.RFC3339, ev.Time); err != nil {
			h.t.Errorf("event time %q is not RFC 3339: %v", ev.Time, err)
		}
		if ev.Identity != testIdentity {
			h.t.Errorf("event identity %q, want %q", ev.Identity, testIdentity)
		}
		out = append(out, ev)
	}
	return out
}

// upstream is a test server that counts the requests it answered.
type upstream struct {
	*httptest.Server
	hits    atomic.Int64
	headers chan http.Header
}

func newUpstream(t testing.TB, name string, tlsOn bool) *upstream {
	u := &upstream{headers: make(chan http.Header, 16)}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		select {
		case u.headers <- r.Header.Clone():
		default:
		}
		w.Header().Set("Connection", "X-Upstream-Hop")
		w.Header().Set("X-Upstream-Hop", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		fmt.Fprintf(w, "hello from %s", name)
	})
	if tlsOn {
		u.Server = httptest.NewTLSServer(h)
	} else {
		u.Server = httptest.NewServer(h)
	}
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) hostport() string {
	return strings.TrimPrefix(strings.TrimPrefix(u.URL, "https://"), "http://")
}

func (u *upstream) port() string {
	_, p, _ := net.SplitHostPort(u.hostport())
	return p
}

// echoServer is a raw TCP server that sends back what it receives.
func echoServer(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func tlsConfigOf(ts *httptest.Server) *tls.Config {
	return ts.Client().Transport.(*http.Transport).TLSClientConfig
}

// eventually polls cond until it holds or 5 seconds pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
