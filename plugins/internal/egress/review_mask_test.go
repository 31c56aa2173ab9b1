package egress

import (
	"bufio"
	"compress/gzip"
	"compress/zlib"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// A client that asks for a compressed answer must not get the value back
// compressed, where a byte-wise mask cannot see it.
func TestReviewCompressedEchoIsMasked(t *testing.T) {
	w := newCredWorld(t)
	base, _ := echoWorld(t, w, func(rw http.ResponseWriter, r *http.Request) {
		k := r.Header.Get("X-Api-Key")
		if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			rw.Header().Set("Content-Encoding", "gzip")
			zw := gzip.NewWriter(rw)
			io.WriteString(zw, "you sent "+k)
			zw.Close()
			return
		}
		io.WriteString(rw, "you sent "+k)
	})
	c := bottleClient(w.h, w.ca, w.upCA, false) // Go's client asks for gzip and inflates
	resp, body := do(t, c, "GET", base+"/echo", map[string]string{"X-Api-Key": w.cred.Placeholder}, "")
	if resp.StatusCode != 200 {
		t.Fatalf("echo: %d %q", resp.StatusCode, body)
	}
	if strings.Contains(body, testSecret) {
		t.Fatalf("the bottle got the value back through a gzip body: %q", body)
	}
	if !strings.Contains(body, strings.Repeat("*", len(testSecret))) {
		t.Errorf("body %q: the value was not masked", body)
	}
	w.noSecret(t)
}

// Trailers arrive after the body, when ModifyResponse has long run.
func TestReviewTrailerEchoIsMasked(t *testing.T) {
	w := newCredWorld(t)
	base, _ := echoWorld(t, w, func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Trailer", "X-Echo")
		io.WriteString(rw, "body")
		rw.(http.Flusher).Flush()
		rw.Header().Set("X-Echo", "key="+r.Header.Get("X-Api-Key"))
	})
	c := bottleClient(w.h, w.ca, w.upCA, false)
	req, _ := http.NewRequest("GET", base+"/echo", nil)
	req.Header.Set("X-Api-Key", w.cred.Placeholder)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	if got := resp.Trailer.Get("X-Echo"); strings.Contains(got, testSecret) || got == "" {
		t.Fatalf("trailer X-Echo = %q, want it there and masked", got)
	}
	w.noSecret(t)
}

// An informational answer's headers go to the bottle before the real one.
func TestReviewEarlyHintsEchoIsMasked(t *testing.T) {
	w := newCredWorld(t)
	base, _ := echoWorld(t, w, func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Link", "</k?"+r.Header.Get("X-Api-Key")+">; rel=preload")
		rw.WriteHeader(http.StatusEarlyHints)
		rw.Header().Del("Link")
		io.WriteString(rw, "ok")
	})
	c := bottleClient(w.h, w.ca, w.upCA, false)
	var early []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		early = append(early, h.Get("Link"))
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", base+"/", nil)
	req.Header.Set("X-Api-Key", w.cred.Placeholder)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(early) == 0 {
		t.Fatal("the 103 did not reach the client")
	}
	if strings.Contains(strings.Join(early, " "), testSecret) {
		t.Fatalf("103 Link = %q: the value reached the bottle", early)
	}
	w.noSecret(t)
}

// An upstream whose answer is not HTTP makes Go's transport quote it in
// the error; that error goes to the bottle and to the log.
func TestReviewMalformedAnswerDoesNotLeakValue(t *testing.T) {
	w := newCredWorld(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{w.upCA.leaf(t, "api.test")}})
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
				r, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				// No space: "malformed HTTP response %q".
				fmt.Fprintf(c, "%s\r\n\r\n", r.Header.Get("X-Api-Key"))
			}()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	hp := hostPort("api.test", port)
	cred := w.cred
	cred.Hosts = []string{hp}
	w.h = startProxy(t, []string{hp, "127.0.0.1:" + port}, withCA(w.ca), withRoots(w.upCA.pool), withCreds(cred))
	w.h.res.add("api.test", "127.0.0.1")
	c := bottleClient(w.h, w.ca, w.upCA, false)
	resp, body := do(t, c, "GET", "https://"+hp+"/", map[string]string{"X-Api-Key": cred.Placeholder}, "")
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("malformed answer: %d %q, want 502", resp.StatusCode, body)
	}
	if strings.Contains(body, testSecret) || strings.Contains(fmt.Sprint(resp.Header), testSecret) {
		t.Errorf("the bottle got the value in the proxy's error: %q", body)
	}
	w.noSecret(t)
}

func TestScrubMasksValueAndItsQuotedForms(t *testing.T) {
	v := `sk-"quoted"\é-0123456789`
	cs, err := newCredentials([]Credential{{Name: "k", Hosts: []string{"a.test"}, Header: "x-api-key", Placeholder: NewPlaceholder("k"), Value: v}})
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range []string{"raw " + v, fmt.Sprintf("quoted %q", v), fmt.Sprintf("ascii %+q", v)} {
		if got := cs.scrub(in); strings.Contains(got, "quoted\\\"") || strings.Contains(got, "0123456789") {
			t.Errorf("scrub(%q) = %q: the value is still there", in, got)
		}
	}
	var buf strings.Builder
	log := slog.New(scrubHandler{h: slog.NewJSONHandler(&buf, nil), cs: cs}).With("pre", v)
	log.Warn("msg "+v, "error", fmt.Errorf("malformed %q", v), slog.Group("g", "s", v))
	if strings.Contains(buf.String(), "0123456789") {
		t.Errorf("log line %s: the value is still there", buf.String())
	}
}

// An upstream that keeps what a request carried and gives it back on a
// later request that carried no credential (a request log, a stored
// webhook) must not hand the bottle the value either; nor a terminated
// host the value reached some other way.
func TestReviewStoredValueIsMaskedOnLaterRequests(t *testing.T) {
	w := newCredWorld(t)
	var mu sync.Mutex
	var stored string
	base, _ := echoWorld(t, w, func(rw http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if k := r.Header.Get("X-Api-Key"); k != "" {
			stored = k
			return
		}
		rw.Header().Set("X-Stored", stored)
		io.WriteString(rw, "stored: "+stored)
	})
	c := bottleClient(w.h, w.ca, w.upCA, true)
	do(t, c, "POST", base+"/store", map[string]string{"X-Api-Key": w.cred.Placeholder}, "x")
	resp, body := do(t, c, "GET", base+"/stored", nil, "")
	if strings.Contains(body, testSecret) || strings.Contains(resp.Header.Get("X-Stored"), testSecret) {
		t.Fatalf("a later request without the credential got the value: %q %q", body, resp.Header.Get("X-Stored"))
	}
	if !strings.Contains(body, strings.Repeat("*", len(testSecret))) {
		t.Errorf("body %q: not masked", body)
	}
	w.noSecret(t)
}

// A header the bottle names in Connection is dropped at the hop, so the
// bottle must not be able to name the proxy's own (Accept-Encoding:
// identity, a credential's header) and have them dropped after the proxy
// set them: here, toward a server that compresses unless told not to.
func TestReviewConnectionCannotDropTheProxysHeaders(t *testing.T) {
	w := newCredWorld(t)
	base, echo := echoWorld(t, w, func(rw http.ResponseWriter, r *http.Request) {
		k := r.Header.Get("X-Api-Key")
		if ae := r.Header.Get("Accept-Encoding"); ae == "" || strings.Contains(ae, "gzip") {
			rw.Header().Set("Content-Encoding", "gzip")
			zw := gzip.NewWriter(rw)
			io.WriteString(zw, "you sent "+k)
			zw.Close()
			return
		}
		io.WriteString(rw, "you sent "+k)
	})
	hp := strings.TrimPrefix(base, "https://")
	tc, br := terminated(t, w.h, w.ca, hp)
	fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: Accept-Encoding\r\nX-Api-Key: %s\r\n\r\n", hp, w.cred.Placeholder)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	var body []byte
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(zr)
	} else {
		body, _ = io.ReadAll(resp.Body)
	}
	if strings.Contains(string(body), testSecret) {
		t.Fatalf("the value came back compressed past the mask: %q", body)
	}
	// A credential's header named in Connection is dropped before the
	// proxy looks at it: no value goes, and no injection is recorded.
	fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: X-Api-Key\r\nX-Api-Key: %s\r\n\r\n", hp, w.cred.Placeholder)
	if resp, err = http.ReadResponse(br, nil); err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	if got := echo.last(t).header.Get("X-Api-Key"); got != "" {
		t.Errorf("x-api-key named in Connection arrived as %q", got)
	}
	if n := len(eventsOfKind(w.h.eventsOf(), sdk.EgressInject)); n != 1 {
		t.Errorf("%d inject events, want 1 (the first request)", n)
	}
	w.noSecret(t)
}

func TestReviewValueInAHeaderNameIsMasked(t *testing.T) {
	w := newCredWorld(t)
	base, _ := echoWorld(t, w, func(rw http.ResponseWriter, r *http.Request) {
		rw.Header()["X-"+r.Header.Get("X-Api-Key")] = []string{"1"}
	})
	c := bottleClient(w.h, w.ca, w.upCA, false)
	resp, _ := do(t, c, "GET", base+"/", map[string]string{"X-Api-Key": w.cred.Placeholder}, "")
	for k := range resp.Header {
		if strings.Contains(strings.ToLower(k), strings.ToLower(testSecret)) {
			t.Errorf("header name %q carries the value", k)
		}
	}
	w.noSecret(t)
}

// A server that compresses though asked not to: a gzip or deflate body is
// inflated so the mask can read it; one the proxy cannot read is refused.
func TestReviewUnaskedCompressionIsReadOrRefused(t *testing.T) {
	for _, enc := range []string{"gzip", "deflate", "br"} {
		t.Run(enc, func(t *testing.T) {
			w := newCredWorld(t)
			base, _ := echoWorld(t, w, func(rw http.ResponseWriter, r *http.Request) {
				rw.Header().Set("Content-Encoding", enc)
				msg := "you sent " + r.Header.Get("X-Api-Key")
				switch enc {
				case "gzip":
					zw := gzip.NewWriter(rw)
					io.WriteString(zw, msg)
					zw.Close()
				case "deflate":
					zw := zlib.NewWriter(rw)
					io.WriteString(zw, msg)
					zw.Close()
				default:
					io.WriteString(rw, msg) // whatever it is, the proxy cannot read it
				}
			})
			hp := strings.TrimPrefix(base, "https://")
			tc, br := terminated(t, w.h, w.ca, hp)
			tc.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: %s\r\nX-Api-Key: %s\r\n\r\n", hp, w.cred.Placeholder)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			if enc == "br" {
				if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "br") {
					t.Errorf("br answer: %d %q, want 502 naming the encoding", resp.StatusCode, body)
				}
			} else if resp.Header.Get("Content-Encoding") != "" || !strings.Contains(string(body), strings.Repeat("*", len(testSecret))) {
				t.Errorf("%s answer: Content-Encoding %q, body %q, want it inflated and masked", enc, resp.Header.Get("Content-Encoding"), body)
			}
			if strings.Contains(string(body), testSecret) {
				t.Errorf("the value reached the bottle: %q", body)
			}
			w.noSecret(t)
		})
	}
}

// A header loses the whitespace at its ends on the way, so a value with
// some would arrive, and echo back, as a string the mask does not look
// for: such a value is refused at start.
func TestReviewValueWithEdgeWhitespaceIsRefused(t *testing.T) {
	for _, v := range []string{testSecret + " ", "\t" + testSecret} {
		_, err := newCredentials([]Credential{{Name: "k", Hosts: []string{"a.test"}, Header: "x-api-key", Placeholder: NewPlaceholder("k"), Value: v}})
		if err == nil || strings.Contains(err.Error(), testSecret) {
			t.Errorf("value %q: %v, want refused without quoting it", v, err)
		}
	}
}

// Every answer on a terminated connection is masked for every value: a
// short value would match by chance and corrupt what is no echo (a pack,
// an image), so values are as long as a key is.
func TestReviewShortValueIsRefused(t *testing.T) {
	_, err := newCredentials([]Credential{{Name: "k", Hosts: []string{"a.test"}, Header: "x-api-key", Placeholder: NewPlaceholder("k"), Value: "x7"}})
	if err == nil || strings.Contains(err.Error(), "x7") {
		t.Errorf("a 2-byte value: %v, want refused without quoting it", err)
	}
}
