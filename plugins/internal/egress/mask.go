package egress

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// A server that echoes its request (a debugging endpoint, an error message
// that quotes the key it was given) would hand the bottle the very value it
// must never hold. So the response to a request that carried a credential
// has that value masked: in its headers, and in its body as it streams,
// each occurrence replaced by as many '*' (the length, and so any
// Content-Length, stays the same). Only the bytes that could be the start
// of the value are held back at the end of each read — almost never any —
// so streamed answers (server-sent events) are not delayed.

type injectedKey struct{}

// maskResponse masks the values of the credentials put on resp's request.
func (p *Proxy) maskResponse(t target, resp *http.Response) {
	inj, _ := resp.Request.Context().Value(injectedKey{}).([]*credential)
	if len(inj) == 0 {
		return
	}
	report := func(c *credential, where string) {
		ev := Event{Identity: p.identity, Host: t.host(), Port: int(t.port), Method: resp.Request.Method,
			Path: eventPath(resp.Request), Allowed: false, Kind: sdk.EgressExfiltration, Credential: c.Name,
			Reason: "the value of credential " + c.Name + " came back in " + where + " of the response; masked before the bottle saw it"}
		if err := p.limits.write(p.identity, p.events, ev); err != nil {
			p.log.Error("egress event lost", "error", err, "kind", ev.Kind, "credential", c.Name)
		}
		p.log.Warn("credential value in a response, masked", "credential", c.Name, "host", ev.Host, "where", where)
	}
	for _, c := range inj {
		if maskHeader(resp.Header, c.Value) || maskHeader(resp.Trailer, c.Value) {
			report(c, "a header")
		}
	}
	if resp.StatusCode == http.StatusSwitchingProtocols || resp.Body == nil || resp.Body == http.NoBody {
		return // an upgraded connection's body is the connection itself
	}
	resp.Body = &maskReader{r: resp.Body, creds: inj, found: func(c *credential) { report(c, "the body") }}
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
		h[k] = vs
	}
	return hit
}

// maskReader masks the credentials' values in what it reads from r.
type maskReader struct {
	r     io.ReadCloser
	creds []*credential
	found func(*credential)

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
