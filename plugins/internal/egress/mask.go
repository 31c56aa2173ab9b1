package egress

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/bot-bottle/bot-bottle/sdk/egresslog"
)

// A server that echoes its request (a debugging endpoint, an error message
// that quotes the key it was given) would hand the bottle the very value it
// must never hold, and so would one that keeps what a request carried and
// gives it back on a later one (a request log, a stored webhook). So every
// answer on a terminated connection, where the proxy has credentials, has
// their values masked: in its headers, and in its body as it streams, each
// occurrence replaced by as many '*' (the length, and so any
// Content-Length, stays the same). Only the bytes that could be the start
// of a value are held back at the end of each read — almost never any —
// so streamed answers (server-sent events) are not delayed. Trailers are
// masked when the body ends, informational (1xx) answers' headers as they
// pass (maskingWriter), and such requests ask for an uncompressed answer
// (Accept-Encoding: identity), which a byte-wise mask can read; a server
// that compresses anyway has a gzip or deflate body inflated, any other
// coding refused (502). What the mask cannot see: a value the upstream
// transforms (encodes, escapes, cuts), a Range of an echo, what passes
// inside a websocket, and answers over plain HTTP.

type injectedKey struct{}

// maskResponse masks the values of every credential in resp (the proxy's
// credentials, for an answer on a terminated connection).
func (p *Proxy) maskResponse(t target, resp *http.Response) error {
	inj, _ := resp.Request.Context().Value(injectedKey{}).([]*credential)
	if len(inj) == 0 {
		return nil
	}
	report := func(c *credential, where string) { p.reportEcho(t, resp.Request, c, where) }
	for _, c := range inj {
		if maskHeader(resp.Header, c.Value) || maskHeader(resp.Trailer, c.Value) {
			report(c, "a header")
		}
	}
	if resp.StatusCode == http.StatusSwitchingProtocols || resp.Body == nil || resp.Body == http.NoBody {
		return nil // an upgraded connection's body is the connection itself
	}
	if err := inflate(resp); err != nil {
		return err
	}
	resp.Body = &maskReader{r: resp.Body, creds: inj, found: func(c *credential) { report(c, "the body") },
		// Trailers arrive with the body's end, after this has run; the
		// transport fills resp.Trailer before the body reports EOF, and
		// ReverseProxy sends it only after that.
		atEOF: func() {
			for _, c := range inj {
				if maskHeader(resp.Trailer, c.Value) {
					report(c, "a trailer")
				}
			}
		}}
	return nil
}

// inflate makes a body its server compressed, though asked for identity,
// readable for the mask: gzip and deflate are inflated (the bottle gets the
// body uncompressed); any other coding is refused, since a value in it
// could not be masked.
func inflate(resp *http.Response) error {
	enc := strings.ToLower(strings.TrimSpace(resp.Header.Get("Content-Encoding")))
	switch enc {
	case "", "identity":
		return nil
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			return fmt.Errorf("the answer's gzip body does not start right: %w", err)
		}
		resp.Body = readCloser{Reader: zr, Closer: resp.Body}
	case "deflate":
		// HTTP's deflate is zlib; some servers send it raw.
		br := bufio.NewReader(resp.Body)
		var rd io.Reader
		if h, err := br.Peek(2); err == nil && h[0]&0x0f == 8 && (uint16(h[0])<<8|uint16(h[1]))%31 == 0 {
			zr, err := zlib.NewReader(br)
			if err != nil {
				return fmt.Errorf("the answer's deflate body does not start right: %w", err)
			}
			rd = zr
		} else {
			rd = flate.NewReader(br)
		}
		resp.Body = readCloser{Reader: rd, Closer: resp.Body}
	default:
		return fmt.Errorf("the answer is in Content-Encoding %.40q though asked for identity; the proxy cannot read it to mask credentials' values", enc)
	}
	resp.Header.Del("Content-Encoding")
	resp.Header.Del("Content-Length")
	resp.ContentLength = -1
	resp.Uncompressed = true
	return nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// maskingWriter masks the injected values in informational (1xx) answers,
// which ReverseProxy relays from the transport straight to the bottle,
// before ModifyResponse sees any response.
type maskingWriter struct {
	http.ResponseWriter
	p   *Proxy
	t   target
	r   *http.Request
	inj []*credential
}

func (w *maskingWriter) WriteHeader(code int) {
	if code < 200 {
		for _, c := range w.inj {
			if maskHeader(w.Header(), c.Value) {
				w.p.reportEcho(w.t, w.r, c, "an informational ("+http.StatusText(code)+") header")
			}
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach Flush and Hijack.
func (w *maskingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// reportEcho audits a credential's value that came back from the upstream.
func (p *Proxy) reportEcho(t target, r *http.Request, c *credential, where string) {
	ev := Event{Identity: p.identity, Host: t.host(), Port: int(t.port), Method: r.Method,
		Path: eventPath(r), Allowed: false, Kind: egresslog.KindExfiltration, Credential: c.Name,
		Reason: "the value of credential " + c.Name + " came back in " + where + " of the response; masked before the bottle saw it"}
	if err := p.limits.write(p.identity, p.events, ev); err != nil {
		p.log.Error("egress event lost", "error", err, "kind", ev.Kind, "credential", c.Name)
	}
	p.log.Warn("credential value in a response, masked", "credential", c.Name, "host", ev.Host, "where", where)
}

func maskHeader(h http.Header, v string) bool {
	hit := false
	for k, vs := range h {
		for i, s := range vs {
			if strings.Contains(s, v) {
				vs[i] = strings.ReplaceAll(s, v, strings.Repeat("*", len(v)))
				hit = true
			}
		}
		// A header's name can carry the value too, in whatever case the
		// server's header canonicalisation gave it. The masked name holds
		// no character a header name may not have ('*' is a token char).
		if m, ok := maskFold(k, v); ok {
			delete(h, k)
			h[m] = append(h[m], vs...)
			hit = true
		}
	}
	return hit
}

// maskReader masks the credentials' values in what it reads from r.
type maskReader struct {
	r     io.ReadCloser
	creds []*credential
	found func(*credential)
	atEOF func() // once, when r reports io.EOF

	mu   sync.Mutex
	buf  []byte // masked bytes ready to hand out, then the held-back tail
	held int    // bytes at the end of buf that could start a value
	err  error
	seen map[string]bool
	// scratch is the buffer reads from r go to.
	scratch []byte
}

func (m *maskReader) Read(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for len(m.buf)-m.held == 0 {
		if m.err != nil {
			if len(m.buf) > 0 { // the end: the held tail is no value
				m.held = 0
				break
			}
			return 0, m.err
		}
		if len(m.scratch) < len(p) {
			m.scratch = make([]byte, max(len(p), 4<<10))
		}
		n, err := m.r.Read(m.scratch[:max(len(p), 4<<10)])
		m.err = err
		if err == io.EOF && m.atEOF != nil {
			m.atEOF()
			m.atEOF = nil
		}
		m.buf = append(m.buf, m.scratch[:n]...)
		m.mask()
	}
	n := copy(p, m.buf[:len(m.buf)-m.held])
	m.buf = append(m.buf[:0], m.buf[n:]...)
	return n, nil
}

// mask masks every whole value in buf and holds back the longest tail
// that is the start of a value.
func (m *maskReader) mask() {
	m.held = 0
	for _, c := range m.creds {
		v := []byte(c.Value)
		for {
			i := bytes.Index(m.buf, v)
			if i < 0 {
				break
			}
			for j := range v {
				m.buf[i+j] = '*'
			}
			if !m.seen[c.Name] {
				if m.seen == nil {
					m.seen = map[string]bool{}
				}
				m.seen[c.Name] = true
				m.found(c)
			}
		}
		if len(m.buf) == 0 {
			continue
		}
		last := m.buf[len(m.buf)-1]
		for k := min(len(v)-1, len(m.buf)); k > m.held; k-- {
			if v[k-1] == last && bytes.HasSuffix(m.buf, v[:k]) {
				m.held = k
				break
			}
		}
	}
}

func (m *maskReader) Close() error { return m.r.Close() }

// maskFold masks v in s in any ASCII case (a header name is ASCII; a
// value that is not cannot be in one).
func maskFold(s, v string) (string, bool) {
	ls, lv := strings.ToLower(s), strings.ToLower(v)
	if len(ls) != len(s) || len(lv) != len(v) || !strings.Contains(ls, lv) {
		return s, false
	}
	b := []byte(s)
	for i := 0; ; {
		j := strings.Index(ls[i:], lv)
		if j < 0 {
			break
		}
		for k := i + j; k < i+j+len(v); k++ {
			b[k] = '*'
		}
		i += j + len(v)
	}
	return string(b), true
}
