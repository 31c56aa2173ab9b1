package egress

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/bot-bottle/bot-bottle/sdk"
)

func TestMaskReaderMasksAcrossReads(t *testing.T) {
	c := &credential{Credential: Credential{Name: "k", Value: "s3cr3t-VALUE"}}
	stars := strings.Repeat("*", len(c.Value))
	for _, in := range []string{
		"",
		"no value here",
		"s3cr3t-VALUE",
		"a s3cr3t-VALUE b s3cr3t-VALUE c",
		"ends with a start s3cr3t-VAL",
		"s3cr3t-VALs3cr3t-VALUE",
		strings.Repeat("x", 70000) + "s3cr3t-VALUE" + strings.Repeat("y", 5),
	} {
		found := 0
		for _, rd := range []func(io.Reader) io.Reader{
			func(r io.Reader) io.Reader { return r },
			iotest.OneByteReader,
			iotest.HalfReader,
			iotest.DataErrReader,
		} {
			m := &maskReader{r: io.NopCloser(rd(strings.NewReader(in))), creds: []*credential{c}, found: func(*credential) { found++ }}
			var out bytes.Buffer
			if _, err := io.Copy(&out, iotest.OneByteReader(m)); err != nil {
				t.Fatal(err)
			}
			if want := strings.ReplaceAll(in, c.Value, stars); out.String() != want {
				t.Errorf("masked %.40q… = %.60q…, want %.60q…", in, out.String(), want)
			}
		}
		if strings.Contains(in, c.Value) != (found > 0) {
			t.Errorf("%.40q: found reported %d times", in, found)
		}
	}
}

// An upstream that echoes the request back gives the bottle no value.
func TestEchoedValueIsMasked(t *testing.T) {
	w := newCredWorld(t)
	echo := newEchoTLS(t, w)
	c := bottleClient(w.h, w.ca, w.upCA, false)
	resp, body := do(t, c, "GET", echo+"/echo", map[string]string{"X-Api-Key": w.cred.Placeholder}, "")
	if resp.StatusCode != 200 {
		t.Fatalf("echo: %d", resp.StatusCode)
	}
	if strings.Contains(body, testSecret) || strings.Contains(resp.Header.Get("X-Echo"), testSecret) {
		t.Fatalf("the bottle got the value back: %q / %q", body, resp.Header.Get("X-Echo"))
	}
	if !strings.Contains(body, strings.Repeat("*", len(testSecret))) {
		t.Errorf("body %q: the value was not masked in place", body)
	}
	if resp.ContentLength != int64(len(body)) {
		t.Errorf("Content-Length %d for a body of %d", resp.ContentLength, len(body))
	}
	ex := eventsOfKind(w.h.eventsOf(), sdk.EgressExfiltration)
	if len(ex) != 2 || !strings.Contains(ex[0].Reason, "came back in a header") || !strings.Contains(ex[1].Reason, "came back in the body") {
		t.Errorf("events %+v, want the header and the body reported", ex)
	}
	w.noSecret(t)
}

// newEchoTLS points the credential's host at an upstream that echoes
// x-api-key in a header and in its body.
func newEchoTLS(t *testing.T, w *credWorld) string {
	echo := newRecorder(t, w.upCA, "api.test", func(rw http.ResponseWriter, r *http.Request) {
		k := r.Header.Get("X-Api-Key")
		rw.Header().Set("X-Echo", "key="+k)
		io.WriteString(rw, "you sent "+k+" ok")
	})
	hp := hostPort("api.test", echo.port())
	cred := w.cred
	cred.Hosts = []string{hp}
	w.cred = cred
	w.h = startProxy(t, []string{hp, "127.0.0.1:" + echo.port()}, withCA(w.ca), withRoots(w.upCA.pool), withCreds(cred))
	w.h.res.add("api.test", "127.0.0.1")
	return "https://" + hp
}
