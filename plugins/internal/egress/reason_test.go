package egress

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// A refused attempt says what to ask for in the status line itself — the
// reason phrase is what clients print of a refused CONNECT (curl, wget) and
// of a plain request (wget) — and in the body, naming the host.
func TestRefusalReasonPhraseSaysHowToAsk(t *testing.T) {
	h := startProxy(t, []string{"allowed.test:443"})
	ask := func(req string) string {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, req)
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		return string(got)
	}
	for _, c := range []struct{ req, status, host string }{
		{"CONNECT refused.test:443 HTTP/1.1\r\nHost: refused.test:443\r\n\r\n", "HTTP/1.1 403 ", "refused.test:443"},
		{"GET http://refused.test/x HTTP/1.1\r\nHost: refused.test\r\n\r\n", "HTTP/1.1 403 ", "refused.test:80"},
		{"GET http://refused.test/x HTTP/1.0\r\n\r\n", "HTTP/1.0 403 ", "refused.test:80"},
	} {
		got := ask(c.req)
		line, body, _ := strings.Cut(got, "\r\n\r\n")
		status, _, _ := strings.Cut(line, "\r\n")
		ask := "bottle request egress " + c.host + " --reason"
		if !strings.HasPrefix(status, c.status) || !strings.Contains(status, ask) {
			t.Errorf("%q: status line %q, want %q… with %q", c.req, status, c.status, ask)
		}
		if !strings.Contains(body, "egress to "+c.host+" refused") || !strings.Contains(body, ask) {
			t.Errorf("%q: body %q does not name the host and the line to ask", c.req, body)
		}
	}
}
