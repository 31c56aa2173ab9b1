package egress

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/bot-bottle/bot-bottle/sdk/egressrule"
	"github.com/bot-bottle/bot-bottle/sdk/render"
)

// Go's HTTP server answers some requests itself, before any handler runs:
// a request line or header it cannot parse (bad escapes, HTTP/0.9, a
// malformed or missing Host, invalid header names or values), an
// unsupported protocol version or transfer coding, headers over the
// limit, an Expect it does not know, `OPTIONS *`. Those answers go
// straight to the connection, so the proxy watches each connection: a
// response written while no handler of ours owns the request is the
// server's own, and becomes an egress event with the status it sent and
// what the request line named. They are refusals like any other, under
// the same bound on the bottle's audit (see limits.go), which counts the
// ones it leaves out.
const headKeep = 1 << 10 // bytes of a request kept to name it in the event

// watchListener hands out watchedConns.
type watchListener struct {
	net.Listener
	p *Proxy
}

func (l watchListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &watchedConn{Conn: c, p: l.p}, nil
}

// watchedConn is a client connection whose server-written answers the proxy
// records. Between a handler taking a request (handled) and the server
// going idle after its answer (idle), writes are the handler's own.
type watchedConn struct {
	net.Conn
	p *Proxy

	mu       sync.Mutex
	head     []byte // the start of what was read since the last answer
	handler  bool
	hijacked bool
}

func (c *watchedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.mu.Lock()
		if !c.handler && len(c.head) < headKeep {
			c.head = append(c.head, b[:min(n, headKeep-len(c.head))]...)
		}
		c.mu.Unlock()
	}
	return n, err
}

func (c *watchedConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	own := !c.handler && !c.hijacked && bytes.HasPrefix(b, []byte("HTTP/1."))
	var head []byte
	if own {
		head, c.head = c.head, nil
	}
	c.mu.Unlock()
	if own {
		c.p.recordServerAnswer(head, b)
	}
	return c.Conn.Write(b)
}

// CloseWrite half-closes the connection, as the server's lingering close
// does for a rejected request.
func (c *watchedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// ReadFrom lets a handler's large answer splice into the connection (see
// spliceResponse); the server's own answers go through Write.
func (c *watchedConn) ReadFrom(r io.Reader) (int64, error) {
	c.mu.Lock()
	own := !c.handler && !c.hijacked
	c.mu.Unlock()
	if rf, ok := c.Conn.(io.ReaderFrom); ok && !own {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c}, r)
}

// handled marks the current request as a handler's.
func (c *watchedConn) handled() {
	c.mu.Lock()
	c.handler, c.head = true, nil
	c.mu.Unlock()
}

// idle marks the end of a request's answer.
func (c *watchedConn) idle() {
	c.mu.Lock()
	c.handler, c.head = false, nil
	c.mu.Unlock()
}

// hijack hands the connection to a tunnel: nothing on it is an answer of
// the server's any more.
func (c *watchedConn) hijack() net.Conn {
	c.mu.Lock()
	c.hijacked = true
	c.mu.Unlock()
	return c.Conn
}

// connState is the server's ConnState hook.
func connState(c net.Conn, s http.ConnState) {
	if wc, ok := c.(*watchedConn); ok && s == http.StateIdle {
		wc.idle()
	}
}

type connKey struct{}

func watchedOf(r *http.Request) *watchedConn {
	wc, _ := r.Context().Value(connKey{}).(*watchedConn)
	return wc
}

// recordServerAnswer writes the event for a request the HTTP server
// answered itself: head is what the client sent, answer what it got.
func (p *Proxy) recordServerAnswer(head, answer []byte) {
	if !p.limits.admitRefused(p.identity, p.events) {
		return
	}
	status, _, _ := bytes.Cut(answer, []byte("\r\n"))
	status = bytes.TrimPrefix(bytes.TrimPrefix(status, []byte("HTTP/1.1 ")), []byte("HTTP/1.0 "))
	reason := "answered by the HTTP server: " + render.Bounded(string(status), 200)
	if _, body, found := bytes.Cut(answer, []byte("\r\n\r\n")); found && len(body) > 0 && !bytes.HasPrefix(status, body) {
		reason += " (" + render.Bounded(string(body), 200) + ")"
	}
	method, host, port := nameRequest(head)
	ev := Event{Identity: p.identity, Method: method, Host: host, Port: port, Reason: reason}
	if err := p.limits.write(p.identity, p.events, ev); err != nil {
		p.log.Error("egress event lost", "error", err)
	}
}

// nameRequest reads the method and the target's host and port from the
// start of a request, as far as they can be read; a value that is not
// valid UTF-8 is kept escaped.
func nameRequest(head []byte) (method, host string, port int) {
	line, rest, _ := bytes.Cut(head, []byte("\n"))
	f := strings.Fields(strings.TrimSuffix(string(line), "\r"))
	if len(f) == 0 {
		return "", "", 0
	}
	if isToken(f[0]) && len(f[0]) <= 16 {
		method = f[0]
	}
	target := ""
	if len(f) > 1 {
		target = f[1]
	}
	switch {
	case method == http.MethodConnect:
		host = target
	case strings.Contains(target, "://"):
		_, after, _ := strings.Cut(target, "://")
		host, _, _ = strings.Cut(after, "/")
	default:
		for _, l := range strings.Split(string(rest), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "host") {
				host = strings.TrimSpace(v)
				break
			}
		}
	}
	host, port = looseHostPort(host)
	return method, host, port
}

// looseHostPort splits what a refused request named as its target into a
// host and a port as well as it can, for the event: bounded, and escaped
// when it is not valid UTF-8 (JSON would replace the bytes).
func looseHostPort(hostport string) (host string, port int) {
	host = hostport
	h, ps, err := net.SplitHostPort(hostport)
	if err != nil && !strings.HasPrefix(hostport, "[") {
		// A host too odd for SplitHostPort ("a[b.test:443") still has a port.
		if i := strings.LastIndexByte(hostport, ':'); i >= 0 {
			h, ps = hostport[:i], hostport[i+1:]
		}
	}
	if n, err := strconv.Atoi(ps); err == nil && n > 0 && n < 1<<16 {
		host, port = h, n
	}
	if len(host) > egressrule.MaxLen {
		host = host[:egressrule.MaxLen]
	}
	if !utf8.ValidString(host) {
		host = render.Bounded(host, 0)
	}
	return host, port
}

func isToken(s string) bool {
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return s != ""
}
