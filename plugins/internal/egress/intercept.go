package egress

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"time"

	"github.com/bot-bottle/bot-bottle/sdk/egressrule"
	"github.com/bot-bottle/bot-bottle/sdk/render"
)

// A CONNECT to a host that a credential goes to, or that a rule about
// requests names, is not tunnelled: the proxy answers 200, takes the TLS
// handshake itself with a leaf of the bottle's CA for the CONNECT host
// (http/1.1 only), and serves the requests it reads there one by one —
// each judged by the rules, scanned for placeholders, given its credential
// — over its own TLS connection to the upstream, which it verifies against
// Config.UpstreamRoots with the host's real name. Every other CONNECT stays
// a plain tunnel, bytes untouched: the bottle sees the upstream's own
// certificate, and the proxy cannot see what goes through it.

// maxTerminated bounds the terminated connections one bottle's proxy holds
// open at once: each costs two TLS sessions, an http.Server and a
// transport (some 100 KiB), and the proxy's process serves every bottle of
// a home. An agent's clients keep a few per host.
const maxTerminated = 256

// handshakeTimeout bounds the client's TLS handshake on a terminated
// CONNECT.
const handshakeTimeout = readHeaderTimeout

// terminates reports whether the proxy must read the requests of a CONNECT
// to t under rules, and the rule that makes it (for a refusal when it
// cannot).
func (p *Proxy) terminates(rules *egressrule.Rules, t target) (bool, string) {
	if p.creds.belongs(t.host(), int(t.port)) {
		return true, "a credential's host"
	}
	if rules.Conn(t.host(), int(t.port)).Requests {
		rs := rules.RequestRules(t.host(), int(t.port))
		if len(rs) > 0 {
			return true, "rule " + rs[0]
		}
		return true, "a rule about requests"
	}
	return false, ""
}

// intercept serves the requests a bottle sends inside a CONNECT to t, on
// the hijacked client connection, after answering 200. upstream is the
// connection opened (and audited) for the CONNECT.
func (p *Proxy) intercept(ctx context.Context, client net.Conn, brw *bufio.ReadWriter, upstream net.Conn, t target) error {
	tun := &tunnel{client: client, upstream: upstream}
	if !p.track(tun) {
		tun.close()
		return errors.New("proxy is shutting down")
	}
	defer p.untrack(tun)
	defer tun.close()
	defer p.creds.forget(tun)
	if _, err := io.WriteString(client, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return fmt.Errorf("answer CONNECT: %w", err)
	}
	// Read through brw: it may hold bytes the client sent right after its
	// CONNECT (the start of its handshake).
	in := &readerConn{Conn: client, r: brw.Reader}
	client.SetReadDeadline(time.Now().Add(handshakeTimeout))
	first, err := brw.Reader.Peek(1)
	if err != nil {
		return fmt.Errorf("read after CONNECT: %w", err)
	}
	var served net.Conn = in
	useTLS := first[0] == 0x16 // a TLS handshake record
	if useTLS {
		tc := tls.Server(in, &tls.Config{
			MinVersion: tls.VersionTLS12,
			NextProtos: []string{"http/1.1"},
			GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
				if sni := hello.ServerName; sni != "" && !strings.EqualFold(strings.TrimSuffix(sni, "."), t.host()) {
					return nil, fmt.Errorf("TLS server name %.80q is not the CONNECT host %s", sni, t.host())
				}
				return p.ca.leaf(t.host())
			},
		})
		hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			p.log.Info("bottle's TLS handshake failed", "target", t.String(), "error", oneLine(err))
			return fmt.Errorf("TLS handshake with the bottle: %w", err)
		}
		served = tc
	}
	client.SetReadDeadline(time.Time{})

	fc := &firstConn{c: upstream}
	tr := p.interceptTransport(t, fc, useTLS)
	defer tr.CloseIdleConnections()
	defer fc.close()
	scheme := "http"
	if useTLS {
		scheme = "https"
	}
	h := &interceptHandler{p: p, t: t, scheme: scheme, conn: tun}
	h.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = scheme
			pr.Out.URL.Host = t.String()
			pr.Out.Host = outboundHost(pr.In.Host, t)
		},
		Transport:      tr,
		ModifyResponse: func(resp *http.Response) error { return p.maskResponse(t, resp) },
		ErrorLog:       slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
		ErrorHandler:   p.forwardError,
	}
	// The listener ends when the connection is closed — by the server, or,
	// after an upgrade (a websocket), by ReverseProxy once the upgraded
	// session is over — not when it is hijacked: the defers above would
	// then cut a websocket the moment it opened.
	ln := newOneConnListener(nil)
	ln.c = &closeNotifyConn{Conn: served, closed: func() { ln.Close() }}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       clientIdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return ctx },
		// No HTTP/2: the leaf was offered for http/1.1 only.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ConnState: func(c net.Conn, s http.ConnState) {
			if s == http.StateClosed {
				ln.Close()
			}
		},
	}
	err = srv.Serve(ln)
	if errors.Is(err, net.ErrClosed) || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// interceptTransport carries a terminated connection's requests to t. Its
// first connection is the one the CONNECT opened; later ones (the upstream
// closed, or requests overlap) are decided, dialed and audited anew.
func (p *Proxy) interceptTransport(t target, fc *firstConn, useTLS bool) *http.Transport {
	dial := func(ctx context.Context) (net.Conn, error) {
		raw := fc.take()
		if raw == nil {
			c, d := p.open(ctx, p.rules.Load(), t, http.MethodConnect, "", "")
			if c == nil {
				return nil, errors.New(d.message)
			}
			raw = c
		}
		return &countingConn{Conn: raw, idle: p.idleTimeout}, nil
	}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dial(ctx)
		},
		DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			raw, err := dial(ctx)
			if err != nil {
				return nil, err
			}
			tc := tls.Client(raw, &tls.Config{
				ServerName: t.host(),
				RootCAs:    p.upstreamRoots,
				NextProtos: []string{"http/1.1"},
				MinVersion: tls.VersionTLS12,
			})
			hctx, cancel := context.WithTimeout(ctx, p.dialTimeout)
			defer cancel()
			if err := tc.HandshakeContext(hctx); err != nil {
				raw.Close()
				return nil, fmt.Errorf("TLS to %s: %w", t, err)
			}
			return tc, nil
		},
		TLSNextProto:           map[string]func(string, *tls.Conn) http.RoundTripper{},
		DisableCompression:     true,
		MaxIdleConnsPerHost:    4,
		IdleConnTimeout:        clientIdleTimeout,
		MaxResponseHeaderBytes: 1 << 20,
	}
	return tr
}

// interceptHandler serves the requests of one terminated connection.
type interceptHandler struct {
	p      *Proxy
	t      target
	scheme string
	rp     *httputil.ReverseProxy
	conn   *tunnel // the terminated connection, for Revoke to end
}

func (h *interceptHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p, t := h.p, h.t
	if err := sameHost(r.Host, t); err != nil {
		p.reply(w, http.StatusMisdirectedRequest, fmt.Sprintf("egress to %s refused: %v", t, err), true)
		return
	}
	if r.Method == http.MethodConnect {
		// No origin server's request: forwarded, it would ask the upstream
		// to tunnel on, past every rule.
		p.reply(w, http.StatusMethodNotAllowed, fmt.Sprintf("egress to %s refused: CONNECT inside a connection the proxy reads; open each tunnel with the proxy itself", t), true)
		return
	}
	if d, bad := p.checkUpgrade(t, r); bad {
		p.reply(w, d.status, d.message, true)
		return
	}
	dropConnectionHeaders(r.Header)
	// Refusals keep the connection: it carries the bottle's other
	// requests to the host too.
	d, ok := p.checkRequest(p.rules.Load(), t, r)
	if !ok {
		p.refusedPlaceholders(t, r)
		p.reply(w, d.status, d.message, false)
		return
	}
	if d = p.record(t, r.Method, d); !d.allowed {
		p.reply(w, d.status, d.message, false)
		return
	}
	injected, d, ok := p.prepare(t, r, d.rule, h.scheme == "https")
	if !ok {
		p.reply(w, d.status, d.message, false)
		return
	}
	if len(injected) > 0 && !p.creds.carried(h.conn, injected) {
		p.reply(w, http.StatusServiceUnavailable, fmt.Sprintf("egress to %s refused: a credential on this request was revoked as it was sent; send it again", t), true)
		return
	}
	ctx := context.WithValue(r.Context(), vettedKey{}, vetted{target: t})
	// Every answer read here is masked, not only one to a request that
	// carried a value: an upstream may keep what one request carried and
	// give it back on another (a request log, a stored webhook).
	if all := p.creds.all(); len(all) > 0 {
		ctx = context.WithValue(ctx, injectedKey{}, all)
		w = &maskingWriter{ResponseWriter: w, p: p, t: t, r: r, inj: all}
		// A compressed answer would carry the value past the mask, which
		// reads bytes as they stream.
		r.Header.Set("Accept-Encoding", "identity")
	}
	h.rp.ServeHTTP(w, r.WithContext(ctx))
}

// checkUpgrade refuses, where the proxy reads requests, an upgrade to
// anything but a websocket: after a 101 the connection's bytes pass as
// they are, and h2c (HTTP/2), TLS or another HTTP inside would carry
// requests the rules never judge and answers the mask never reads. A
// websocket's frames are not HTTP requests, and its handshake is judged.
func (p *Proxy) checkUpgrade(t target, r *http.Request) (decision, bool) {
	for _, v := range r.Header.Values("Upgrade") {
		for _, tok := range strings.Split(v, ",") {
			tok = strings.TrimSpace(tok)
			if tok == "" || strings.EqualFold(tok, "websocket") {
				continue
			}
			shown := render.Bounded(tok, 40)
			d := decision{
				status:  http.StatusForbidden,
				path:    eventPath(r),
				reason:  "upgrade to " + shown + " refused",
				message: fmt.Sprintf("egress to %s refused: an upgrade to %s would carry requests that bottle %s's proxy cannot judge (only websocket is upgraded to where it reads requests)", t, shown, p.identity),
			}
			return p.record(t, r.Method, d), true
		}
	}
	return decision{}, false
}

// dropConnectionHeaders drops the headers r's Connection names, as the
// hop they were meant for, now, before the proxy reads and sets headers:
// ReverseProxy would drop them after, and so drop the proxy's own
// (Accept-Encoding: identity, which keeps echoes readable by the mask; a
// credential it recorded as sent). Connection keeps only its own tokens.
func dropConnectionHeaders(h http.Header) {
	var keep []string
	for _, v := range h.Values("Connection") {
		for _, tok := range strings.Split(v, ",") {
			tok = strings.TrimSpace(tok)
			switch {
			case tok == "":
			case strings.EqualFold(tok, "close"), strings.EqualFold(tok, "keep-alive"), strings.EqualFold(tok, "upgrade"):
				keep = append(keep, tok)
			default:
				h.Del(tok)
			}
		}
	}
	h.Del("Connection")
	if len(keep) > 0 {
		h.Set("Connection", strings.Join(keep, ", "))
	}
}

// sameHost checks that a request's Host is the CONNECT target: the rules
// and the certificate were for that host, and an upstream serving several
// names must not be asked for another.
func sameHost(hostHeader string, t target) error {
	got, err := parseTarget(hostHeader, t.port)
	if err != nil {
		return fmt.Errorf("Host %v", err)
	}
	if got != t {
		return fmt.Errorf("Host %s is not the CONNECT host %s", got, t)
	}
	return nil
}

// outboundHost is the Host header sent for a request whose Host sameHost
// found to be t: t's canonical name (lower case, no trailing dot), with the
// port where the bottle gave one. The bottle's own spelling could have a
// shared front end route the request elsewhere than the name verified; a
// port is kept or left out as sent, since signed requests sign the Host.
func outboundHost(in string, t target) string {
	if _, _, err := net.SplitHostPort(in); err == nil {
		return t.String()
	}
	if t.addr.Is6() {
		return "[" + t.host() + "]"
	}
	return t.host()
}

// readerConn reads a connection through a bufio.Reader that may hold some
// of its bytes already.
type readerConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *readerConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// closeNotifyConn calls closed when it is closed.
type closeNotifyConn struct {
	net.Conn
	once   sync.Once
	closed func()
}

func (c *closeNotifyConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.closed)
	return err
}

// oneConnListener hands out one connection, then waits until it is closed
// (or hijacked), so that an http.Server serves exactly that connection and
// its Serve returns when it ends.
type oneConnListener struct {
	c    net.Conn
	once sync.Once
	mu   sync.Mutex
	done chan struct{}
	gave bool
}

func newOneConnListener(c net.Conn) *oneConnListener {
	return &oneConnListener{c: c, done: make(chan struct{})}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if !l.gave {
		l.gave = true
		l.mu.Unlock()
		return l.c, nil
	}
	l.mu.Unlock()
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.c.LocalAddr() }
