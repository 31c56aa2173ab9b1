package egress

import (
	"bufio"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bot-bottle/bot-bottle/sdk/egressrule"
	"github.com/bot-bottle/bot-bottle/sdk/render"
)

// RefusedHeader carries the one-line reason of a refusal (status 403), so
// that a client that hides response bodies still shows why.
const RefusedHeader = "X-Bot-Bottle-Refused"

// Defaults for Config.
const (
	DefaultDialTimeout = 10 * time.Second
	DefaultIdleTimeout = 10 * time.Minute
)

const (
	// clientIdleTimeout closes a kept-alive client connection with no
	// request in flight.
	clientIdleTimeout = 90 * time.Second
	readHeaderTimeout = 10 * time.Second
	maxHeaderBytes    = 64 << 10
	shutdownGrace     = 5 * time.Second
	copyBufferSize    = 32 << 10
)

// Resolver looks up the addresses of a name; *net.Resolver is one. The proxy
// passes fully qualified names (with the final dot) so that no search domain
// is ever appended to an allowed name.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Config configures a Proxy.
type Config struct {
	// Identity is the bottle's identity, used in events and refusals.
	Identity string
	// Rules are the rules in force at the start; nil allows nothing.
	Rules *egressrule.Rules
	// Events receives one event per attempt. Required: an allowed
	// connection whose event cannot be written is refused.
	Events *EventLog
	// Resolver defaults to net.DefaultResolver.
	Resolver Resolver
	// Log receives the proxy's own errors; nil discards them.
	Log *slog.Logger
	// DialTimeout bounds name resolution plus connecting upstream.
	DialTimeout time.Duration
	// IdleTimeout closes a tunnel or upstream connection that moved no
	// bytes for this long.
	IdleTimeout time.Duration
	// AllowOwnHost lets the proxy connect to its own host (loopback, its
	// interfaces). Only for tests whose upstreams run beside the proxy; a
	// backend never sets it, so an approved 127.0.0.1 or 0.0.0.0 cannot make
	// the proxy talk to itself.
	AllowOwnHost bool
	// LogSize is how many bytes the event log already holds: it outlives
	// each run of the proxy, so its bound on refusals is for the bottle.
	LogSize int64
	// Reserved, when set, says which further addresses no rule may reach,
	// and why: a proxy that serves several bottles reserves their internal
	// networks, so that no bottle reaches another through it. It holds
	// with AllowOwnHost too.
	Reserved func(netip.Addr) (string, bool)
	// CA is the bottle's own CA, for the hosts whose TLS the proxy
	// terminates: those a credential goes to and those a rule about
	// requests (methods, a path, a deny rule with either) names. nil:
	// nothing is terminated, and New refuses Credentials and such rules.
	CA *CA
	// Credentials are put on the wire for the bottle (see Credential).
	Credentials []Credential
	// UpstreamRoots verify the upstreams of terminated connections; nil
	// is the system's roots. Tests give their own CA.
	UpstreamRoots *x509.CertPool
}

// Proxy is an allowlisting HTTP forward proxy for one bottle. It is an
// http.Handler; Serve runs it with the timeouts it needs.
type Proxy struct {
	identity    string
	rules       atomic.Pointer[egressrule.Rules]
	events      *EventLog
	resolver    Resolver
	log         *slog.Logger
	dialTimeout time.Duration
	idleTimeout time.Duration
	forwarder   *httputil.ReverseProxy
	// dialContext connects to a vetted address; tests wrap it in a guard
	// that fails on any address outside loopback.
	dialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// allowOwnHost: see Config.AllowOwnHost.
	allowOwnHost bool
	// reserved: see Config.Reserved.
	reserved func(netip.Addr) (string, bool)
	// limits bound wildcard lookups and the audit of refusals.
	limits *limits
	// refusals are each bottle's recent refusals, for `bottle egress`.
	refusals *refusalLog
	// ca, creds, upstreamRoots: see Config.
	ca            *CA
	creds         *credentials
	upstreamRoots *x509.CertPool
	// terminated counts the terminated connections open, up to
	// maxTerminated (see intercept.go).
	terminated    atomic.Int32
	maxTerminated int32

	mu      sync.Mutex
	tunnels map[*tunnel]struct{}
	closed  bool
}

// New returns a proxy for cfg.
func New(cfg Config) (*Proxy, error) {
	if cfg.Identity == "" {
		return nil, errors.New("egress proxy: empty identity")
	}
	if cfg.Events == nil {
		return nil, errors.New("egress proxy: no event log")
	}
	creds, err := newCredentials(cfg.Credentials)
	if err != nil {
		return nil, fmt.Errorf("egress proxy: %w", err)
	}
	if cfg.CA == nil {
		if len(cfg.Credentials) > 0 {
			return nil, errors.New("egress proxy: credentials need the bottle's CA (Config.CA), to terminate TLS for their hosts")
		}
		if r, ok := firstRequestRule(cfg.Rules); ok {
			return nil, fmt.Errorf("egress proxy: rule %s is about requests, which the proxy reads only with the bottle's CA (Config.CA); none is set", r)
		}
	}
	p := &Proxy{
		identity:      cfg.Identity,
		events:        cfg.Events,
		resolver:      cfg.Resolver,
		log:           cfg.Log,
		dialTimeout:   cfg.DialTimeout,
		idleTimeout:   cfg.IdleTimeout,
		tunnels:       map[*tunnel]struct{}{},
		dialContext:   ownHostDialer(cfg.AllowOwnHost, cfg.Reserved),
		allowOwnHost:  cfg.AllowOwnHost,
		reserved:      cfg.Reserved,
		limits:        newLimits(cfg.LogSize),
		refusals:      newRefusalLog(),
		ca:            cfg.CA,
		creds:         creds,
		upstreamRoots: cfg.UpstreamRoots,
		maxTerminated: maxTerminated,
	}
	if p.resolver == nil {
		p.resolver = net.DefaultResolver
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if len(creds.list) > 0 {
		p.log = slog.New(scrubHandler{h: p.log.Handler(), cs: creds})
	}
	if p.dialTimeout <= 0 {
		p.dialTimeout = DefaultDialTimeout
	}
	if p.idleTimeout <= 0 {
		p.idleTimeout = DefaultIdleTimeout
	}
	p.rules.Store(cfg.Rules)
	p.forwarder = &httputil.ReverseProxy{
		// The inbound URL is already absolute; the outbound request keeps
		// it, and ReverseProxy strips hop-by-hop headers and X-Forwarded-*.
		Rewrite:        func(*httputil.ProxyRequest) {},
		ModifyResponse: p.spliceResponse,
		Transport: &http.Transport{
			Proxy:       nil, // never chain to the proxy's own environment
			DialContext: p.dialVetted,
			// Every request dials anew, so each one is checked against
			// the rules in force and no pooled connection outlives them.
			DisableKeepAlives:      true,
			DisableCompression:     true,
			MaxResponseHeaderBytes: 1 << 20,
			// spliceResponse relies on reads of 32 KiB passing this
			// buffer by.
			ReadBufferSize: 4 << 10,
		},
		ErrorLog:     slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
		ErrorHandler: p.forwardError,
	}
	return p, nil
}

// SetRules replaces the rules for every later request.
func (p *Proxy) SetRules(rs *egressrule.Rules) {
	p.rules.Store(rs)
	p.refusals.allowedNow(p.identity, rs)
}

// Rules returns the rules in force.
func (p *Proxy) Rules() *egressrule.Rules { return p.rules.Load() }

// Serve answers proxy requests on ln until ctx is done, then closes every
// connection, tunnels included.
func (p *Proxy) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           p,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       clientIdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ConnContext: func(c context.Context, conn net.Conn) context.Context {
			return context.WithValue(context.WithValue(c, serveCtxKey{}, ctx), connKey{}, conn)
		},
		ConnState: connState,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(watchListener{Listener: ln, p: p}) }()
	select {
	case err := <-errc:
		p.closeTunnels()
		return fmt.Errorf("egress proxy: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	err := srv.Shutdown(sctx)
	p.closeTunnels()
	p.limits.flush(p.identity, p.events)
	if err != nil {
		srv.Close()
		return fmt.Errorf("egress proxy: shutdown: %w", err)
	}
	return nil
}

// ServeHTTP handles one proxy request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if wc := watchedOf(r); wc != nil {
		wc.handled()
	}
	if r.Method == http.MethodConnect {
		p.connect(w, r)
		return
	}
	p.forward(w, r)
}

// target is a validated destination.
type target struct {
	name string     // lower-case name without trailing dot, or ""
	addr netip.Addr // for an address literal
	port uint16
}

func (t target) String() string {
	if t.addr.IsValid() {
		return netip.AddrPortFrom(t.addr, t.port).String()
	}
	return t.name + ":" + strconv.Itoa(int(t.port))
}

func (t target) host() string {
	if t.addr.IsValid() {
		return t.addr.String()
	}
	return t.name
}

func parseTarget(hostport string, defaultPort uint16) (target, error) {
	name, addr, port, err := egressrule.ParseTarget(hostport, defaultPort)
	if err != nil {
		return target{}, &targetError{hostport: hostport, err: err}
	}
	return target{name: name, addr: addr, port: port}, nil
}

// targetError is a target that does not parse. The client is told the
// target quoted; the event has the target in its host field and only the
// cause in its reason, so nothing is quoted twice.
type targetError struct {
	hostport string
	err      error
}

func (e *targetError) Error() string { return fmt.Sprintf("%.80q: %v", e.hostport, e.err) }
func (e *targetError) Unwrap() error { return e.err }

// decision is the outcome of checking one attempt.
type decision struct {
	allowed bool
	status  int    // response status when refused
	rule    string // the rule that matched, if any
	reason  string // short, for the event log
	message string // one line, for the client
	addrs   []netip.AddrPort
	dialed  string // the address connected to, once it is
	path    string // the request's path, for a request the proxy read
	ask     string // the line that asks for what was refused, if any
}

// decide checks t against rules (those in force), resolves it and vets the
// addresses. A name is resolved only after a rule allowed it, so a refused
// name never reaches DNS.
func (p *Proxy) decide(ctx context.Context, rules *egressrule.Rules, t target) decision {
	v := rules.Conn(t.host(), int(t.port))
	rule := v.Rule
	if !v.Allowed && v.Rule != "" {
		return decision{
			status:  http.StatusForbidden,
			rule:    v.Rule,
			reason:  "denied by rule " + v.Rule,
			message: fmt.Sprintf("egress to %s refused: denied by rule %s of bottle %s", t, v.Rule, p.identity),
		}
	}
	if !v.Allowed {
		return decision{
			status: http.StatusForbidden,
			reason: "not in the allowlist",
			message: fmt.Sprintf("egress to %s refused: not in the allowlist of bottle %s (ask: %s --reason ...)",
				t, p.identity, egressrule.AskCommand(t.String())),
		}
	}
	d := decision{rule: rule}
	if t.addr.IsValid() {
		d.allowed, d.addrs = true, []netip.AddrPort{netip.AddrPortFrom(t.addr, t.port)}
		return p.refuseOwnHost(t, d)
	}
	if egressrule.LocalOnly(t.name) {
		// Never asked of a resolver: the answer could only be ourselves.
		d.status = http.StatusForbidden
		d.reason = "a name that can only be local"
		d.message = fmt.Sprintf("egress to %s refused: %s can only mean the proxy itself and is never resolved", t, t.name)
		return d
	}
	if refused, ok := p.limitWildcard(t, d); !ok {
		return refused
	}
	rctx, cancel := context.WithTimeout(ctx, p.dialTimeout)
	defer cancel()
	ips, err := p.resolver.LookupNetIP(rctx, "ip", t.name+".")
	if err == nil && len(ips) == 0 {
		err = errors.New("no addresses")
	}
	if err != nil {
		d.status = http.StatusBadGateway
		d.reason = "cannot resolve: " + oneLine(err)
		d.message = fmt.Sprintf("egress to %s failed: cannot resolve %s: %s", t, t.name, oneLine(err))
		return d
	}
	seen := map[netip.AddrPort]bool{}
	for _, ip := range ips {
		ap := netip.AddrPortFrom(ip.WithZone("").Unmap(), t.port)
		if deny, ok := rules.DeniesAddr(ap); ok {
			d.status = http.StatusForbidden
			d.rule = deny
			d.reason = fmt.Sprintf("resolves to %s, denied by rule %s", ap.Addr(), deny)
			d.message = fmt.Sprintf("egress to %s refused: %s resolves to %s, which rule %s of bottle %s denies", t, t.name, ap.Addr(), deny, p.identity)
			return d
		}
		if kind, bad := egressrule.Unsafe(ip); bad {
			if _, named := rules.NamesAddr(ap); !named {
				d.status = http.StatusForbidden
				d.reason = fmt.Sprintf("resolves to %s (%s)", ap.Addr(), kind)
				d.message = fmt.Sprintf("egress to %s refused: %s resolves to %s, a %s address; only a rule naming %s allows it",
					t, t.name, ap.Addr(), kind, ap)
				return d
			}
		}
		if !seen[ap] {
			seen[ap] = true
			d.addrs = append(d.addrs, ap)
		}
	}
	d.allowed = true
	return p.refuseOwnHost(t, d)
}

// record writes the event for an attempt. For an allowed attempt that
// cannot be recorded it returns the refusal to send instead.
func (p *Proxy) record(t target, method string, d decision) decision {
	ev := Event{
		Identity: p.identity,
		Host:     t.host(),
		Port:     int(t.port),
		Allowed:  d.allowed,
		Rule:     d.rule,
		Reason:   d.reason,
		Method:   method,
		Addr:     d.dialed,
		Path:     d.path,
	}
	if !d.allowed {
		p.noteRefusal(p.identity, t, method, d)
	}
	if !d.allowed && !p.limits.admitRefused(p.identity, p.events) {
		return d // over the audit bound: counted, and reported with the next one written
	}
	err := p.limits.write(p.identity, p.events, ev)
	if err == nil {
		return d
	}
	p.log.Error("egress event lost", "error", err, "host", ev.Host, "port", ev.Port, "allowed", ev.Allowed)
	if !d.allowed {
		return d
	}
	return decision{
		status:  http.StatusServiceUnavailable,
		rule:    d.rule,
		reason:  "audit log unavailable",
		message: fmt.Sprintf("egress to %s refused: the bottle's egress audit log cannot be written", t),
	}
}

// badRequest answers 400 and records the attempt when it names a host.
func (p *Proxy) badRequest(w http.ResponseWriter, method, host string, err error) {
	why := err.Error()
	var te *targetError
	if errors.As(err, &te) {
		why = strings.Replace(why, te.Error(), te.err.Error(), 1)
	}
	ev := Event{Identity: p.identity, Method: method, Reason: "bad request: " + oneLine(errors.New(why))}
	if host != "" {
		ev.Host, ev.Port = looseHostPort(host)
	}
	if p.limits.admitRefused(p.identity, p.events) {
		if werr := p.limits.write(p.identity, p.events, ev); werr != nil {
			p.log.Error("egress event lost", "error", werr)
		}
	}
	p.reply(w, http.StatusBadRequest, "bad proxy request: "+oneLine(err), true)
}

// refuse answers an attempt the proxy will not carry. Its message is also
// the status line's reason phrase: that phrase is all most clients print of
// a refused CONNECT (and wget of a plain request), so it is where the agent
// sees what to ask for.
func (p *Proxy) refuse(w http.ResponseWriter, r *http.Request, d decision, closeConn bool) {
	if !replyRaw(w, r, d.status, d.message) {
		p.reply(w, d.status, d.message, closeConn)
	}
}

// reply sends a one-line plain-text answer; 403 also carries it in
// RefusedHeader.
func (p *Proxy) reply(w http.ResponseWriter, status int, msg string, closeConn bool) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	if status == http.StatusForbidden {
		h.Set(RefusedHeader, msg)
	}
	if closeConn {
		h.Set("Connection", "close")
	}
	w.WriteHeader(status)
	io.WriteString(w, msg+"\n")
}

// replyRaw writes the whole answer on the hijacked connection, with msg as
// the reason phrase (net/http writes only the standard one), and closes it.
// It reports false when the connection cannot be taken over (then nothing
// was written).
func replyRaw(w http.ResponseWriter, r *http.Request, status int, msg string) bool {
	if r.ProtoMajor != 1 {
		return false
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return false
	}
	defer conn.Close()
	phrase := strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, msg)
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/1.%d %d %s\r\n", min(r.ProtoMinor, 1), status, phrase)
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n")
	if status == http.StatusForbidden {
		fmt.Fprintf(&b, "%s: %s\r\n", RefusedHeader, phrase)
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\nConnection: close\r\n\r\n%s\n", len(msg)+1, msg)
	if _, err := brw.WriteString(b.String()); err == nil {
		_ = brw.Flush()
	}
	return true
}

func (p *Proxy) connect(w http.ResponseWriter, r *http.Request) {
	hostport := r.URL.Host
	if hostport == "" || r.URL.Path != "" {
		p.badRequest(w, r.Method, "", errors.New("CONNECT needs a host:port target"))
		return
	}
	t, err := parseTarget(hostport, 0)
	if err != nil {
		p.badRequest(w, r.Method, hostport, fmt.Errorf("CONNECT target: %w", err))
		return
	}
	ctx := connectContext(r)
	p.placeholdersInTarget(t, r.Method)
	// One load: the CONNECT is judged by one set of rules throughout.
	rules := p.rules.Load()
	terminate, why := p.terminates(rules, t)
	if terminate && p.ca == nil {
		d := decision{
			status:  http.StatusForbidden,
			reason:  "needs TLS termination, and the proxy has no CA",
			message: fmt.Sprintf("egress to %s refused: %s makes the proxy read its requests, and this proxy has no CA for bottle %s", t, why, p.identity),
		}
		p.refuse(w, r, p.record(t, r.Method, d), true)
		return
	}
	if terminate {
		if n := p.terminated.Add(1); n > p.maxTerminated {
			p.terminated.Add(-1)
			d := decision{
				status:  http.StatusServiceUnavailable,
				reason:  "too many terminated connections",
				message: fmt.Sprintf("egress to %s refused: bottle %s already has %d connections open whose requests the proxy reads; close some first", t, p.identity, p.maxTerminated),
			}
			p.refuse(w, r, p.record(t, r.Method, d), true)
			return
		}
		defer p.terminated.Add(-1)
	}
	upstream, d := p.open(ctx, rules, t, r.Method, "", "")
	if upstream == nil {
		// Close: a client may already have sent bytes meant for the tunnel.
		p.refuse(w, r, d, true)
		return
	}
	client, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		upstream.Close()
		p.log.Error("hijack", "error", err)
		p.reply(w, http.StatusInternalServerError, "egress proxy: cannot take over the connection", true)
		return
	}
	if wc, ok := client.(*watchedConn); ok {
		client = wc.hijack()
	}
	// The server's header deadline must not cut the tunnel.
	client.SetDeadline(time.Time{})
	if terminate {
		if err := p.intercept(ctx, client, brw, upstream, t); err != nil {
			p.log.Debug("terminated CONNECT ended", "target", t.String(), "error", err)
		}
		return
	}
	if err := p.startTunnel(client, brw, upstream); err != nil {
		p.log.Debug("tunnel ended", "target", t.String(), "error", err)
	}
}

// open decides t by rules, connects to the first vetted address that answers and
// records the attempt with the address dialed. It returns the upstream
// connection, or nil and the refusal to send.
// reqRule, when set, is the rule about requests that allowed this one: the
// event names it rather than the rule that let the host be reached.
func (p *Proxy) open(ctx context.Context, rules *egressrule.Rules, t target, method, path, reqRule string) (net.Conn, decision) {
	d := p.decide(ctx, rules, t)
	d.path = path
	if d.allowed && reqRule != "" {
		d.rule = reqRule
	}
	if !d.allowed {
		return nil, p.record(t, method, d)
	}
	upstream, err := p.dial(ctx, d.addrs)
	if err != nil {
		p.log.Warn("upstream unreachable", "target", t.String(), "error", err)
		d.reason = "upstream unreachable: " + oneLine(err)
		p.record(t, method, d)
		return nil, decision{status: http.StatusBadGateway, message: fmt.Sprintf("egress to %s failed: %s", t, oneLine(err))}
	}
	d.dialed = upstream.RemoteAddr().String()
	if d = p.record(t, method, d); !d.allowed {
		upstream.Close()
		return nil, d
	}
	return upstream, d
}

type serveCtxKey struct{}

// connectContext is the context for setting up a tunnel. net/http cancels
// a request's context when the client half-closes, which a client that sent
// its data right behind the CONNECT may do; so this context ends only when
// Serve stops, and the dial timeout bounds the work.
func connectContext(r *http.Request) context.Context {
	if ctx, ok := r.Context().Value(serveCtxKey{}).(context.Context); ok {
		return ctx
	}
	return context.WithoutCancel(r.Context())
}

func (p *Proxy) startTunnel(client net.Conn, brw *bufio.ReadWriter, upstream net.Conn) error {
	if _, err := io.WriteString(client, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		client.Close()
		upstream.Close()
		return fmt.Errorf("answer CONNECT: %w", err)
	}
	// Bytes the client sent right after its CONNECT are already buffered.
	if n := brw.Reader.Buffered(); n > 0 {
		early, _ := brw.Reader.Peek(n)
		if _, err := upstream.Write(early); err != nil {
			client.Close()
			upstream.Close()
			return fmt.Errorf("forward early bytes: %w", err)
		}
	}
	return p.tunnel(client, upstream)
}

func (p *Proxy) forward(w http.ResponseWriter, r *http.Request) {
	if p.serveRefusals(w, r, p.identity) {
		return
	}
	if !r.URL.IsAbs() || r.URL.Host == "" {
		p.badRequest(w, r.Method, "", errors.New("this is an egress proxy: send CONNECT host:port or an absolute http:// URL"))
		return
	}
	if r.URL.Scheme != "http" {
		p.badRequest(w, r.Method, "", fmt.Errorf("scheme %.20q: only http:// is forwarded; use CONNECT for https", r.URL.Scheme))
		return
	}
	t, err := parseTarget(r.URL.Host, 80)
	if err != nil {
		p.badRequest(w, r.Method, r.URL.Host, fmt.Errorf("URL host: %w", err))
		return
	}
	// Not the request's context: net/http cancels it when the client
	// half-closes after its request, as HTTP/1.0 tools (`printf … | nc`)
	// do while still reading the answer. A client that is really gone
	// ends the forward when writing to it fails.
	ctx := connectContext(r)
	// One load: the request is judged by one set of rules throughout.
	rules := p.rules.Load()
	reqRule := ""
	if cv := rules.Conn(t.host(), int(t.port)); cv.Allowed && cv.Requests {
		if d, bad := p.checkUpgrade(t, r); bad {
			p.refuse(w, r, d, true)
			return
		}
		d, ok := p.checkRequest(rules, t, r)
		if !ok {
			p.refusedPlaceholders(t, r)
			p.refuse(w, r, d, false)
			return
		}
		reqRule = d.rule
	}
	upstream, d := p.open(ctx, rules, t, r.Method, eventPath(r), reqRule)
	if upstream == nil {
		p.refusedPlaceholders(t, r)
		p.refuse(w, r, d, false)
		return
	}
	if _, d, ok := p.prepare(t, r, d.rule, false); !ok {
		upstream.Close()
		p.refuse(w, r, d, false)
		return
	}
	v := vetted{target: t, addrs: d.addrs, first: &firstConn{c: upstream}}
	defer v.first.close()
	ctx = withSplice(context.WithValue(ctx, vettedKey{}, v), w)
	p.forwarder.ServeHTTP(w, r.WithContext(ctx))
}

// firstConn is the connection opened (and audited) for a forwarded
// request, for the transport's first dial to take.
type firstConn struct {
	mu sync.Mutex
	c  net.Conn
}

func (f *firstConn) take() net.Conn {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.c
	f.c = nil
	return c
}

// close closes the connection if the transport never took it.
func (f *firstConn) close() {
	if c := f.take(); c != nil {
		c.Close()
	}
}

type vettedKey struct{}

// vetted is what the checks allowed for one forwarded request; the
// transport dials exactly these addresses and never resolves again.
type vetted struct {
	target target
	addrs  []netip.AddrPort
	first  *firstConn
}

func (p *Proxy) dialVetted(ctx context.Context, _, _ string) (net.Conn, error) {
	v, ok := ctx.Value(vettedKey{}).(vetted)
	if !ok || len(v.addrs) == 0 {
		return nil, errors.New("no vetted address for this request")
	}
	if v.first != nil {
		if c := v.first.take(); c != nil {
			return p.upstreamConn(ctx, c), nil
		}
	}
	c, err := p.dial(ctx, v.addrs)
	if err != nil {
		return nil, err
	}
	return p.upstreamConn(ctx, c), nil
}

// upstreamConn wraps a forwarded request's connection and tells
// spliceResponse about it.
func (p *Proxy) upstreamConn(ctx context.Context, c net.Conn) net.Conn {
	cc := &countingConn{Conn: c, idle: p.idleTimeout}
	if slot, ok := ctx.Value(upstreamKey{}).(*upstreamSlot); ok {
		slot.c.Store(cc)
	}
	return cc
}

func (p *Proxy) forwardError(w http.ResponseWriter, r *http.Request, err error) {
	v, _ := r.Context().Value(vettedKey{}).(vetted)
	if r.Context().Err() != nil {
		return // the client went away
	}
	msg := p.scrubError(err)
	p.log.Warn("forward", "target", v.target.String(), "error", msg)
	p.reply(w, http.StatusBadGateway, fmt.Sprintf("egress to %s failed: %s", v.target, msg), false)
}

// dial connects to the first of addrs that answers, within the dial timeout.
func (p *Proxy) dial(ctx context.Context, addrs []netip.AddrPort) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.dialTimeout)
	defer cancel()
	var last error
	for _, a := range addrs {
		c, err := p.dialContext(ctx, "tcp", a.String())
		if err == nil {
			return c, nil
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, last
}

// oneLine keeps an error message to one line for headers, bodies and events.
func oneLine(err error) string { return render.Bounded(render.Error(err), 300) }

// firstRequestRule returns the first rule of rs that is about requests.
func firstRequestRule(rs *egressrule.Rules) (string, bool) {
	for _, r := range rs.List() {
		if r.Requests() {
			return r.String(), true
		}
	}
	return "", false
}
