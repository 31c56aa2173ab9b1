package egress

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/egressrule"
)

// testCA is an upstream's CA, made here with crypto/x509 alone so that the
// upstreams' certificates owe nothing to the code under test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "upstream test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

func (ca *testCA) leaf(t testing.TB, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// seen is one request as an upstream received it.
type seen struct {
	method, path, rawQuery string
	header                 http.Header
	body                   string
}

// recorder is a loopback upstream that keeps the requests it answered.
type recorder struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []seen
}

// newRecorder starts a recorder; a handler given answers in its place
// (the request is still kept).
func newRecorder(t testing.TB, ca *testCA, name string, answer ...http.HandlerFunc) *recorder {
	rec := &recorder{}
	rec.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, seen{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), string(b)})
		rec.mu.Unlock()
		if len(answer) > 0 {
			answer[0](w, r)
			return
		}
		fmt.Fprintf(w, "hello from %s", name)
	}))
	if ca != nil {
		rec.TLS = &tls.Config{Certificates: []tls.Certificate{ca.leaf(t, name)}}
		rec.StartTLS()
	} else {
		rec.Start()
	}
	t.Cleanup(rec.Close)
	return rec
}

func (rec *recorder) port() string {
	_, p, _ := net.SplitHostPort(rec.Listener.Addr().String())
	return p
}

func (rec *recorder) last(t testing.TB) seen {
	t.Helper()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.reqs) == 0 {
		t.Fatal("the upstream received no request")
	}
	return rec.reqs[len(rec.reqs)-1]
}

func (rec *recorder) count() int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return len(rec.reqs)
}

// loopbackRules let the test's names resolve to the recorders' loopback
// addresses.
func loopbackRules(recs ...*recorder) []string {
	var out []string
	for _, r := range recs {
		out = append(out, "127.0.0.1:"+r.port())
	}
	return out
}

func withCA(ca *CA) proxyOpt                 { return func(o *proxyOpts) { o.cfg.CA = ca } }
func withRoots(p *x509.CertPool) proxyOpt    { return func(o *proxyOpts) { o.cfg.UpstreamRoots = p } }
func withCreds(cs ...Credential) proxyOpt    { return func(o *proxyOpts) { o.cfg.Credentials = cs } }
func hostPort(name, port string) string      { return net.JoinHostPort(name, port) }
func urlOf(scheme, name, port string) string { return scheme + "://" + hostPort(name, port) }

// bottleClient is a client inside the bottle: it goes through the proxy
// and trusts the bottle's CA and, for tunnelled hosts, the upstreams' CA.
func bottleClient(h *harness, bottleCA *CA, upstreamCA *testCA, keepAlive bool) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(bottleCA.CertPEM())
	if upstreamCA != nil {
		pool.AddCert(upstreamCA.cert)
	}
	tr := &http.Transport{
		Proxy:             http.ProxyURL(&url.URL{Scheme: "http", Host: h.addr}),
		DisableKeepAlives: !keepAlive,
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true, // the proxy must still speak http/1.1
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func do(t testing.TB, c *http.Client, method, u string, hdr map[string]string, body string) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func eventsOfKind(evs []sdk.EgressEvent, kind string) []sdk.EgressEvent {
	var out []sdk.EgressEvent
	for _, ev := range evs {
		if ev.Kind == kind {
			out = append(out, ev)
		}
	}
	return out
}

const testSecret = "sk-test-REAL-SECRET-0123456789abcdef"

// credWorld is a proxy with one credential for api.test, a host it
// terminates for a path rule (other.test), a plain-HTTP host (plain.test)
// and a host it only tunnels (tunnel.test), all loopback upstreams.
type credWorld struct {
	h                         *harness
	ca                        *CA
	upCA                      *testCA
	api, other, plain, tunnel *recorder
	cred                      Credential
}

func newCredWorld(t *testing.T, extraRules ...string) *credWorld {
	w := &credWorld{upCA: newTestCA(t)}
	var err error
	if w.ca, err = NewCA(testIdentity); err != nil {
		t.Fatal(err)
	}
	w.api = newRecorder(t, w.upCA, "api.test")
	w.other = newRecorder(t, w.upCA, "other.test")
	w.tunnel = newRecorder(t, w.upCA, "tunnel.test")
	w.plain = newRecorder(t, nil, "plain.test")
	w.cred = Credential{
		Name:        "anthropic",
		Hosts:       []string{hostPort("api.test", w.api.port())},
		Header:      "x-api-key",
		Placeholder: NewPlaceholder("anthropic"),
		Value:       testSecret,
	}
	rules := append([]string{
		hostPort("api.test", w.api.port()),
		"GET other.test:" + w.other.port() + "/",
		hostPort("plain.test", w.plain.port()),
		hostPort("tunnel.test", w.tunnel.port()),
	}, extraRules...)
	rules = append(rules, loopbackRules(w.api, w.other, w.plain, w.tunnel)...)
	w.h = startProxy(t, rules, withCA(w.ca), withRoots(w.upCA.pool), withCreds(w.cred))
	for _, n := range []string{"api.test", "other.test", "plain.test", "tunnel.test"} {
		w.h.res.add(n, "127.0.0.1")
	}
	return w
}

// noSecret fails if the secret is in the proxy's events or its own logs.
func (w *credWorld) noSecret(t *testing.T) {
	t.Helper()
	for what, s := range map[string]string{"event log": w.h.events.String(), "proxy log": w.h.logs.String()} {
		if strings.Contains(s, testSecret) {
			t.Errorf("the secret is in the %s:\n%s", what, s)
		}
	}
}

func TestCredentialIsInjectedTowardItsHostOnly(t *testing.T) {
	w := newCredWorld(t)
	c := bottleClient(w.h, w.ca, w.upCA, false)

	resp, body := do(t, c, "GET", urlOf("https", "api.test", w.api.port())+"/v1/messages", map[string]string{"X-Api-Key": w.cred.Placeholder}, "")
	if resp.StatusCode != 200 || body != "hello from api.test" {
		t.Fatalf("GET api.test: %d %q", resp.StatusCode, body)
	}
	if got := w.api.last(t).header.Get("X-Api-Key"); got != testSecret {
		t.Errorf("upstream got x-api-key %q, want the real value", got)
	}
	// The bottle talked to the proxy: a leaf of the bottle's CA, http/1.1.
	leaf := resp.TLS.PeerCertificates[0]
	if leaf.Issuer.CommonName != w.ca.Certificate().Subject.CommonName || !strings.Contains(leaf.Issuer.CommonName, testIdentity) {
		t.Errorf("api.test's certificate is issued by %q, want the bottle's CA", leaf.Issuer.CommonName)
	}
	if err := leaf.VerifyHostname("api.test"); err != nil {
		t.Errorf("leaf: %v", err)
	}
	if resp.TLS.NegotiatedProtocol != "http/1.1" || resp.ProtoMajor != 1 {
		t.Errorf("negotiated %q / HTTP/%d, want http/1.1", resp.TLS.NegotiatedProtocol, resp.ProtoMajor)
	}

	// Toward a host the proxy terminates for a rule: unchanged, flagged.
	resp, _ = do(t, c, "GET", urlOf("https", "other.test", w.other.port())+"/x", map[string]string{"X-Api-Key": w.cred.Placeholder}, "")
	if resp.StatusCode != 200 {
		t.Fatalf("GET other.test: %d", resp.StatusCode)
	}
	if got := w.other.last(t).header.Get("X-Api-Key"); got != w.cred.Placeholder {
		t.Errorf("other.test got x-api-key %q, want the placeholder unchanged", got)
	}
	// Over plain HTTP, in the query and in a body: unchanged, flagged.
	do(t, c, "GET", urlOf("http", "plain.test", w.plain.port())+"/q?k="+w.cred.Placeholder, nil, "")
	if got := w.plain.last(t).rawQuery; got != "k="+w.cred.Placeholder {
		t.Errorf("plain.test got query %q", got)
	}
	do(t, c, "POST", urlOf("http", "plain.test", w.plain.port())+"/b", nil, strings.Repeat("x", 70000)+w.cred.Placeholder)
	if got := w.plain.last(t).body; !strings.HasSuffix(got, w.cred.Placeholder) {
		t.Errorf("plain.test body does not end in the placeholder")
	}
	// Refused (not in the allowlist, a path no rule allows): flagged too.
	do(t, c, "GET", "http://nowhere.test/x", map[string]string{"Authorization": w.cred.Placeholder}, "")
	if resp, _ := do(t, c, "POST", urlOf("https", "other.test", w.other.port())+"/y", map[string]string{"X-Api-Key": w.cred.Placeholder}, ""); resp.StatusCode != 403 {
		t.Errorf("POST other.test: %d, want 403", resp.StatusCode)
	}
	// A host with no credential and no rule about requests: a tunnel, with
	// the upstream's own certificate.
	resp, _ = do(t, c, "GET", urlOf("https", "tunnel.test", w.tunnel.port())+"/", map[string]string{"X-Api-Key": w.cred.Placeholder}, "")
	if iss := resp.TLS.PeerCertificates[0].Issuer.CommonName; iss != "upstream test CA" {
		t.Errorf("tunnel.test's certificate is issued by %q, want the upstream's own", iss)
	}
	if got := w.tunnel.last(t).header.Get("X-Api-Key"); got != w.cred.Placeholder {
		t.Errorf("tunnel.test got %q", got)
	}

	evs := w.h.eventsOf()
	inj := eventsOfKind(evs, sdk.EgressInject)
	if len(inj) != 1 || inj[0].Credential != "anthropic" || inj[0].Host != "api.test" || inj[0].Path != "/v1/messages" || inj[0].Method != "GET" {
		t.Errorf("inject events = %+v, want one for anthropic toward api.test", inj)
	}
	ex := eventsOfKind(evs, sdk.EgressExfiltration)
	wantWhere := []struct {
		host, where string
		allowed     bool
	}{
		{"other.test", "header X-Api-Key", true},
		{"plain.test", "the request line", true},
		{"plain.test", "the body", true},
		{"nowhere.test", "header Authorization", false},
		{"other.test", "header X-Api-Key", false},
	}
	if len(ex) != len(wantWhere) {
		t.Fatalf("exfiltration events = %+v, want %d", ex, len(wantWhere))
	}
	for i, want := range wantWhere {
		if ex[i].Credential != "anthropic" || ex[i].Host != want.host || !strings.Contains(ex[i].Reason, want.where) || ex[i].Allowed != want.allowed {
			t.Errorf("exfiltration event %d = %+v, want %s in %s", i, ex[i], want.host, want.where)
		}
	}
	// Requests on terminated connections are in the audit with their path.
	var paths []string
	for _, ev := range evs {
		if ev.Kind == "" && ev.Path != "" {
			paths = append(paths, ev.Host+ev.Path)
		}
	}
	if want := "api.test/v1/messages other.test/x plain.test/q plain.test/b nowhere.test/x other.test/y"; strings.Join(paths, " ") != want {
		t.Errorf("request events %q, want %q", paths, want)
	}
	w.noSecret(t)
}

func TestRevokeTakesEffectOnTheNextRequest(t *testing.T) {
	w := newCredWorld(t)
	c := bottleClient(w.h, w.ca, w.upCA, true) // one kept-alive connection
	u := urlOf("https", "api.test", w.api.port()) + "/v1"
	hdr := map[string]string{"X-Api-Key": w.cred.Placeholder}
	do(t, c, "GET", u, hdr, "")
	if got := w.api.last(t).header.Get("X-Api-Key"); got != testSecret {
		t.Fatalf("before revoke: %q", got)
	}
	if got := w.h.p.Credentials(); len(got) != 1 || got[0] != "anthropic" {
		t.Errorf("Credentials() = %q", got)
	}
	if w.h.p.Revoke("nope") {
		t.Error("Revoke of an unknown name reported true")
	}
	if !w.h.p.Revoke("anthropic") {
		t.Fatal("Revoke(anthropic) = false")
	}
	if got := w.h.p.Credentials(); len(got) != 0 {
		t.Errorf("Credentials() after revoke = %q", got)
	}
	do(t, c, "GET", u, hdr, "")
	if got := w.api.last(t).header.Get("X-Api-Key"); got != w.cred.Placeholder {
		t.Errorf("after revoke the upstream got %q, want the placeholder", got)
	}
	if w.api.count() != 2 {
		t.Errorf("upstream answered %d requests", w.api.count())
	}
	w.h.p.Revoke("anthropic") // again: no second event
	evs := w.h.eventsOf()
	rev := eventsOfKind(evs, sdk.EgressRevoke)
	if len(rev) != 1 || rev[0].Credential != "anthropic" {
		t.Errorf("revoke events = %+v, want one", rev)
	}
	if n := len(eventsOfKind(evs, sdk.EgressInject)); n != 1 {
		t.Errorf("%d inject events, want 1 (before the revoke)", n)
	}
	w.noSecret(t)
}

func TestMethodAndPathRules(t *testing.T) {
	upCA := newTestCA(t)
	ca, err := NewCA(testIdentity)
	if err != nil {
		t.Fatal(err)
	}
	gh := newRecorder(t, upCA, "gh.test")
	wide := newRecorder(t, upCA, "wide.test")
	plain := newRecorder(t, nil, "plain.test")
	ghRule := "GET,HEAD gh.test:" + gh.port() + "/repos/acme/"
	rules := []string{
		ghRule,
		"!gh.test:" + gh.port() + "/repos/acme/secret",
		hostPort("wide.test", wide.port()),
		"!wide.test:" + wide.port() + "/admin",
		// First of the plain host's rules, so that the host is reached
		// "by" it: an event must still name the rule that allowed the
		// request.
		"GET plain.test:" + plain.port() + "/status",
		"POST plain.test:" + plain.port() + "/hook",
	}
	rules = append(rules, loopbackRules(gh, wide, plain)...)
	h := startProxy(t, rules, withCA(ca), withRoots(upCA.pool))
	for _, n := range []string{"gh.test", "wide.test", "plain.test"} {
		h.res.add(n, "127.0.0.1")
	}
	c := bottleClient(h, ca, nil, true)
	ghURL, wideURL, plainURL := urlOf("https", "gh.test", gh.port()), urlOf("https", "wide.test", wide.port()), urlOf("http", "plain.test", plain.port())
	for _, tc := range []struct {
		method, url string
		status      int
		msg         string // a part of the refusal
	}{
		{"GET", ghURL + "/repos/acme/widget", 200, ""},
		{"HEAD", ghURL + "/repos/acme/", 200, ""},
		{"POST", ghURL + "/repos/acme/widget", 403, "no rule of bottle " + testIdentity + " allows POST /repos/acme/widget (its rules for gh.test:" + gh.port() + ": " + ghRule},
		{"GET", ghURL + "/repos/other/x", 403, "(ask: bottle request egress 'GET gh.test:" + gh.port() + "/repos/other/x' --reason ...)"},
		{"GET", ghURL + "/repos/acme/secret/key", 403, "is denied by rule !gh.test:" + gh.port() + "/repos/acme/secret"},
		{"GET", ghURL + "/repos/acme/../../admin", 403, "has an empty, . or .. segment"},
		{"GET", ghURL + "/repos/acme//x", 403, "has an empty, . or .. segment"},
		{"DELETE", wideURL + "/anything", 200, ""},
		{"GET", wideURL + "/admin/users", 403, "GET /admin/users is denied by rule !wide.test:" + wide.port() + "/admin"},
		{"POST", plainURL + "/hook", 200, ""},
		{"GET", plainURL + "/hook", 403, "no rule of bottle"},
		{"POST", plainURL + "/other", 403, "no rule of bottle"},
	} {
		before := gh.count() + wide.count() + plain.count()
		resp, body := do(t, c, tc.method, tc.url, nil, "")
		after := gh.count() + wide.count() + plain.count()
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: status %d, want %d (%q)", tc.method, tc.url, resp.StatusCode, tc.status, body)
			continue
		}
		if tc.status == 200 && after != before+1 {
			t.Errorf("%s %s: the upstream did not get it", tc.method, tc.url)
		}
		if tc.status != 200 {
			if after != before {
				t.Errorf("%s %s: refused, yet the upstream got it", tc.method, tc.url)
			}
			if !strings.Contains(body, tc.msg) || resp.Header.Get(RefusedHeader)+"\n" != body {
				t.Errorf("%s %s: refusal %q, want it to contain %q", tc.method, tc.url, body, tc.msg)
			}
		}
	}
	// An allowed request on a host with rules about requests is recorded
	// with the rule that allowed the request, over plain HTTP as over TLS.
	hookRule := "POST plain.test:" + plain.port() + "/hook"
	found := false
	for _, ev := range h.eventsOf() {
		if ev.Allowed && ev.Method == "POST" && ev.Path == "/hook" && ev.Host == "plain.test" {
			found = true
			if ev.Rule != hookRule {
				t.Errorf("POST /hook over plain HTTP recorded as allowed by %q, want %q", ev.Rule, hookRule)
			}
		}
	}
	if !found {
		t.Error("no allowed event for POST /hook over plain HTTP")
	}
	// The refusals list has the line that asks for the refused request.
	var asks []string
	for _, r := range h.p.RecentRefusals(testIdentity) {
		asks = append(asks, r.Ask)
	}
	if want := "bottle request egress 'GET gh.test:" + gh.port() + "/repos/other/x' --reason WHY"; !strings.Contains(strings.Join(asks, "\n"), want) {
		t.Errorf("refusals' asks %q, want %q", asks, want)
	}
	// Approving exactly that line takes its refusal off the list, and the
	// request through.
	h.p.SetRules(mustRules(t, append(rules, "GET gh.test:"+gh.port()+"/repos/other/x")...))
	for _, r := range h.p.RecentRefusals(testIdentity) {
		if r.Path == "/repos/other/x" {
			t.Errorf("refusal %+v still listed after its approval", r)
		}
	}
	if resp, _ := do(t, c, "GET", ghURL+"/repos/other/x", nil, ""); resp.StatusCode != 200 {
		t.Errorf("GET /repos/other/x after its approval: %d", resp.StatusCode)
	}
	for _, ev := range h.eventsOf() {
		if !ev.Allowed && ev.Path == "" && ev.Kind == "" {
			t.Errorf("a refused request's event has no path: %+v", ev)
		}
	}
}

func TestHostDenyRuleRefusesTheConnection(t *testing.T) {
	a := newUpstream(t, "A", false)
	h := startProxy(t, []string{"*.corp.test:" + a.port(), "!db.corp.test:" + a.port(), "127.0.0.1:" + a.port()})
	h.res.add("db.corp.test", "127.0.0.1")
	h.res.add("web.corp.test", "127.0.0.1")
	resp, body, _ := h.raw("CONNECT db.corp.test:" + a.port() + " HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != 403 || !strings.Contains(body, "denied by rule !db.corp.test:"+a.port()) {
		t.Errorf("CONNECT to a denied host: %d %q", resp.StatusCode, body)
	}
	if h.res.wasAsked("db.corp.test") {
		t.Error("a denied name was resolved")
	}
	resp, _, _ = h.raw("CONNECT web.corp.test:" + a.port() + " HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Errorf("CONNECT to an allowed host: %d", resp.StatusCode)
	}
	// An allowed name that resolves to a denied address is refused.
	h.p.SetRules(mustRules(t, "*.corp.test:"+a.port(), "127.0.0.2:"+a.port(), "!127.0.0.2:"+a.port()))
	h.res.add("moved.corp.test", "127.0.0.2")
	resp, body, _ = h.raw("CONNECT moved.corp.test:" + a.port() + " HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != 403 || !strings.Contains(body, "resolves to 127.0.0.2, which rule !127.0.0.2:"+a.port()+" of bottle "+testIdentity+" denies") {
		t.Errorf("CONNECT to a name resolving to a denied address: %d %q", resp.StatusCode, body)
	}
}

func TestTerminatedConnectChecksHostAndName(t *testing.T) {
	w := newCredWorld(t)
	// A Host header other than the CONNECT target is refused.
	resp, body, conn := w.h.raw("CONNECT api.test:" + w.api.port() + " HTTP/1.1\r\nHost: api.test\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %d %q", resp.StatusCode, body)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(w.ca.CertPEM())
	tc := tls.Client(conn, &tls.Config{ServerName: "api.test", RootCAs: pool})
	fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: other.test:%s\r\nX-Api-Key: %s\r\n\r\n", w.other.port(), w.cred.Placeholder)
	r, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("Host mismatch: status %d", r.StatusCode)
	}
	if w.api.count() != 0 || w.other.count() != 0 {
		t.Error("a misdirected request reached an upstream")
	}
	// A TLS server name other than the CONNECT host gets no certificate.
	_, _, conn = w.h.raw("CONNECT api.test:" + w.api.port() + " HTTP/1.1\r\nHost: api.test\r\n\r\n")
	tc = tls.Client(conn, &tls.Config{ServerName: "evil.test", RootCAs: pool})
	if err := tc.Handshake(); err == nil {
		t.Error("handshake for another name succeeded")
	}
}

func TestUpstreamCertificateIsVerified(t *testing.T) {
	// The proxy trusts only upCA; an upstream whose certificate another CA
	// signed must not get the credential.
	upCA := newTestCA(t)
	ca, _ := NewCA(testIdentity)
	rogue := newRecorder(t, newTestCA(t), "api.test")
	hp := hostPort("api.test", rogue.port())
	cred := Credential{Name: "k", Hosts: []string{hp}, Header: "x-api-key", Placeholder: NewPlaceholder("k"), Value: testSecret}
	h := startProxy(t, append([]string{hp}, loopbackRules(rogue)...), withCA(ca), withRoots(upCA.pool), withCreds(cred))
	h.res.add("api.test", "127.0.0.1")
	c := bottleClient(h, ca, nil, false)
	resp, body := do(t, c, "GET", "https://"+hp+"/", map[string]string{"X-Api-Key": cred.Placeholder}, "")
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "certificate") {
		t.Errorf("rogue upstream: %d %q, want 502 naming the certificate", resp.StatusCode, body)
	}
	if rogue.count() != 0 {
		t.Error("the rogue upstream got a request")
	}
	if strings.Contains(h.events.String()+h.logs.String(), testSecret) {
		t.Error("the secret is in the events or logs")
	}
}

func TestNewRefusesWhatNeedsACAWithoutOne(t *testing.T) {
	ev := NewEventLog(io.Discard)
	cred := Credential{Name: "k", Hosts: []string{"api.test"}, Header: "x-api-key", Placeholder: NewPlaceholder("k"), Value: testSecret}
	for name, cfg := range map[string]Config{
		"credentials":      {Identity: "b", Events: ev, Credentials: []Credential{cred}},
		"a rule with path": {Identity: "b", Events: ev, Rules: mustRules(t, "api.test/x")},
		"a method rule":    {Identity: "b", Events: ev, Rules: mustRules(t, "GET api.test")},
	} {
		_, err := New(cfg)
		if err == nil || !strings.Contains(err.Error(), "CA") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s without a CA: %v, want a one-line error naming the CA", name, err)
		}
	}
	ca, _ := NewCA("b")
	for name, c := range map[string]Credential{
		"no hosts":          {Name: "k", Header: "x", Placeholder: cred.Placeholder, Value: testSecret},
		"short placeholder": {Name: "k", Hosts: []string{"a.test"}, Header: "x", Placeholder: "short", Value: "v"},
		"bad header":        {Name: "k", Hosts: []string{"a.test"}, Header: "x y", Placeholder: cred.Placeholder, Value: "v"},
		"value with CRLF":   {Name: "k", Hosts: []string{"a.test"}, Header: "x", Placeholder: cred.Placeholder, Value: testSecret + "\r\nX: y"},
		"host with path":    {Name: "k", Hosts: []string{"a.test/x"}, Header: "x", Placeholder: cred.Placeholder, Value: testSecret},
		"bad name":          {Name: "a b", Hosts: []string{"a.test"}, Header: "x", Placeholder: cred.Placeholder, Value: testSecret},
	} {
		_, err := New(Config{Identity: "b", Events: ev, CA: ca, Credentials: []Credential{c}})
		if err == nil {
			t.Errorf("credential with %s: accepted", name)
		} else if strings.Contains(err.Error(), testSecret) {
			t.Errorf("credential with %s: the error quotes the value: %v", name, err)
		}
	}
	_, err := New(Config{Identity: "b", Events: ev, CA: ca, Credentials: []Credential{cred, cred}})
	if err == nil {
		t.Error("two credentials of one name: accepted")
	}
}

func TestNewPlaceholder(t *testing.T) {
	a, b := NewPlaceholder("anthropic"), NewPlaceholder("anthropic")
	if a == b || !strings.HasPrefix(a, "bbph-anthropic-") || len(a) != len("bbph-anthropic-")+32 || !sdk.IsPlaceholder(a) {
		t.Errorf("placeholders %q, %q", a, b)
	}
}

func mustRules(t testing.TB, rules ...string) *egressrule.Rules {
	t.Helper()
	rs, err := egressrule.ParseRules(rules)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func TestPlainHTTPCredentialAndPlainInsideConnect(t *testing.T) {
	ca, _ := NewCA(testIdentity)
	up := newRecorder(t, nil, "hook.test")
	hp := hostPort("hook.test", up.port())
	cred := Credential{Name: "hook", Hosts: []string{hp}, Header: "Authorization", Prefix: "Bearer ", Placeholder: NewPlaceholder("hook"), Value: testSecret}
	h := startProxy(t, []string{hp, "!GET " + hp + "/private", "*.wild.test:" + up.port(), "127.0.0.1:" + up.port()}, withCA(ca), withCreds(cred))
	h.res.add("hook.test", "127.0.0.1")
	c := bottleClient(h, ca, nil, false)
	// Plain HTTP, even toward the credential's own host:port, never
	// carries the value: it would cross the network in clear.
	do(t, c, "POST", "http://"+hp+"/in", map[string]string{"Authorization": "Bearer " + cred.Placeholder}, "{}")
	if got := up.last(t).header.Get("Authorization"); got != "Bearer "+cred.Placeholder {
		t.Errorf("plain HTTP: Authorization %q, want the placeholder", got)
	}
	// Plain HTTP inside a CONNECT to a host the proxy reads: served and
	// judged as such.
	resp, _, conn := h.raw("CONNECT " + hp + " HTTP/1.1\r\nHost: " + hp + "\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %d", resp.StatusCode)
	}
	fmt.Fprintf(conn, "GET /private/x HTTP/1.1\r\nHost: %s\r\n\r\n", hp)
	r, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.StatusCode != 403 || !strings.Contains(r.Header.Get(RefusedHeader), "denied by rule !GET "+hp+"/private") {
		t.Errorf("plain GET inside CONNECT: %d %q", r.StatusCode, r.Header.Get(RefusedHeader))
	}
	io.Copy(io.Discard, r.Body)
	fmt.Fprintf(conn, "GET /in HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", hp, cred.Placeholder)
	if r, err = http.ReadResponse(bufio.NewReader(conn), nil); err != nil || r.StatusCode != 200 {
		t.Fatalf("plain GET /in inside CONNECT: %v %v", r, err)
	}
	if got := up.last(t).header.Get("Authorization"); got != "Bearer "+cred.Placeholder {
		t.Errorf("plain HTTP inside CONNECT: Authorization %q, want the placeholder", got)
	}
	if n := len(eventsOfKind(h.eventsOf(), sdk.EgressInject)); n != 0 {
		t.Errorf("%d inject events over plain HTTP", n)
	}
	// A placeholder in a CONNECT host name is audited.
	h.res.add(cred.Placeholder+".wild.test", "127.0.0.1")
	h.raw("CONNECT " + cred.Placeholder + ".wild.test:" + up.port() + " HTTP/1.1\r\nHost: x\r\n\r\n")
	ex := eventsOfKind(h.eventsOf(), sdk.EgressExfiltration)
	if len(ex) != 1 || !strings.Contains(ex[0].Reason, "the CONNECT host name") {
		t.Errorf("exfiltration events %+v, want one for the CONNECT host name", ex)
	}
	if strings.Contains(h.events.String()+h.logs.String(), testSecret) {
		t.Error("the secret is in the events or logs")
	}
}

func TestRequestRuleArrivingWithoutCAIsRefused(t *testing.T) {
	up := newRecorder(t, nil, "api.test")
	hp := hostPort("api.test", up.port())
	h := startProxy(t, []string{hp, "127.0.0.1:" + up.port()})
	h.res.add("api.test", "127.0.0.1")
	h.p.SetRules(mustRules(t, "GET "+hp+"/v1/", "127.0.0.1:"+up.port()))
	resp, body, _ := h.raw("CONNECT " + hp + " HTTP/1.1\r\nHost: " + hp + "\r\n\r\n")
	if resp.StatusCode != 403 || !strings.Contains(body, "rule GET "+hp+"/v1/ makes the proxy read its requests, and this proxy has no CA") {
		t.Errorf("CONNECT without a CA: %d %q", resp.StatusCode, body)
	}
	// Plain HTTP needs no CA: the rule is applied as it is.
	c := bottleClient(h, mustCA(t), nil, false)
	if resp, _ := do(t, c, "GET", "http://"+hp+"/v1/x", nil, ""); resp.StatusCode != 200 {
		t.Errorf("plain GET /v1/x: %d", resp.StatusCode)
	}
	if resp, _ := do(t, c, "GET", "http://"+hp+"/v2", nil, ""); resp.StatusCode != 403 {
		t.Errorf("plain GET /v2: %d", resp.StatusCode)
	}
}

func mustCA(t testing.TB) *CA {
	ca, err := NewCA(testIdentity)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestTraceNeverCarriesTheCredential(t *testing.T) {
	w := newCredWorld(t)
	c := bottleClient(w.h, w.ca, w.upCA, false)
	do(t, c, "TRACE", urlOf("https", "api.test", w.api.port())+"/", map[string]string{"X-Api-Key": w.cred.Placeholder}, "")
	if got := w.api.last(t).header.Get("X-Api-Key"); got != w.cred.Placeholder {
		t.Errorf("TRACE carried x-api-key %q, want the placeholder", got)
	}
	do(t, c, "GET", urlOf("https", "api.test", w.api.port())+"/", map[string]string{"X-Api-Key": w.cred.Placeholder}, "")
	if got := w.api.last(t).header.Get("X-Api-Key"); got != testSecret {
		t.Errorf("GET after TRACE: x-api-key %q, want the value", got)
	}
}
