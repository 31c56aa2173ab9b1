package egress

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"time"
)

// credBench is one HTTPS upstream (names direct.test, tunnel.test and
// inject.test) and three clients of it: direct, through a plain CONNECT
// tunnel, and through the injecting route (TLS terminated by the proxy,
// the credential put on, TLS again to the upstream).
type credBench struct {
	direct, tunnel, inject *http.Client
	port                   string
	gotKey                 chan string
}

func newCredBench(b *testing.B, keepAlive bool) *credBench {
	upCA := newTestCA(b)
	ca, err := NewCA(testIdentity)
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i)
	}
	cb := &credBench{gotKey: make(chan string, 1)}
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/key" {
			select {
			case cb.gotKey <- r.Header.Get("X-Api-Key"):
			default:
			}
		}
		if r.URL.Path != "/big" {
			io.WriteString(w, "ok")
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(benchSize))
		for range benchSize / len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	up.TLS = &tls.Config{Certificates: []tls.Certificate{upCA.leaf(b, "direct.test", "tunnel.test", "inject.test")}}
	up.StartTLS()
	b.Cleanup(up.Close)
	addr := up.Listener.Addr().String()
	_, cb.port, _ = net.SplitHostPort(addr)

	cred := Credential{Name: "bench", Hosts: []string{"inject.test:" + cb.port}, Header: "x-api-key", Placeholder: NewPlaceholder("bench"), Value: testSecret}
	h := startProxy(b, []string{"tunnel.test:" + cb.port, "inject.test:" + cb.port, "127.0.0.1:" + cb.port},
		withCA(ca), withRoots(upCA.pool), withCreds(cred), withEvents(io.Discard))
	h.res.add("tunnel.test", "127.0.0.1")
	h.res.add("inject.test", "127.0.0.1")

	pool := x509.NewCertPool()
	pool.AddCert(upCA.cert)
	pool.AppendCertsFromPEM(ca.CertPEM())
	mk := func(proxy bool) *http.Client {
		tr := &http.Transport{
			DisableKeepAlives: !keepAlive,
			TLSClientConfig:   &tls.Config{RootCAs: pool},
		}
		if proxy {
			tr.Proxy = http.ProxyURL(&url.URL{Scheme: "http", Host: h.addr})
		} else {
			var d net.Dialer
			tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, addr)
			}
		}
		return &http.Client{Transport: &headerRT{rt: tr, key: cred.Placeholder}, Timeout: time.Minute}
	}
	cb.direct, cb.tunnel, cb.inject = mk(false), mk(true), mk(true)
	// The injecting route really injects.
	if _, err := getAll(cb.inject, "https://inject.test:"+cb.port+"/key", make([]byte, 1024)); err != nil {
		b.Fatal(err)
	}
	if got := <-cb.gotKey; got != testSecret {
		b.Fatalf("the injecting route sent x-api-key %q", got)
	}
	return cb
}

// headerRT sends the placeholder on every request, as an agent would.
type headerRT struct {
	rt  http.RoundTripper
	key string
}

func (h *headerRT) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Api-Key", h.key)
	return h.rt.RoundTrip(r)
}

func (cb *credBench) url(name, path string) string {
	return "https://" + name + ".test:" + cb.port + path
}

// BenchmarkCredentialRoute100MiB downloads 100 MiB over HTTPS directly,
// through a plain CONNECT tunnel and through the injecting route, in the
// same run, and reports each rate and the ratios to direct.
func BenchmarkCredentialRoute100MiB(b *testing.B) {
	cb := newCredBench(b, false)
	buf := make([]byte, 256<<10)
	var tDirect, tTunnel, tInject time.Duration
	b.ResetTimer()
	for range b.N {
		tDirect += timed(b, func() (int64, error) { return getAll(cb.direct, cb.url("direct", "/big"), buf) })
		tTunnel += timed(b, func() (int64, error) { return getAll(cb.tunnel, cb.url("tunnel", "/big"), buf) })
		tInject += timed(b, func() (int64, error) { return getAll(cb.inject, cb.url("inject", "/big"), buf) })
	}
	b.StopTimer()
	rate := func(d time.Duration) float64 { return float64(benchSize) * float64(b.N) / d.Seconds() / 1e6 }
	b.ReportMetric(rate(tDirect), "direct-MB/s")
	b.ReportMetric(rate(tTunnel), "tunnel-MB/s")
	b.ReportMetric(rate(tInject), "inject-MB/s")
	b.ReportMetric(tDirect.Seconds()/tTunnel.Seconds(), "tunnel/direct")
	b.ReportMetric(tDirect.Seconds()/tInject.Seconds(), "inject/direct")
}

// BenchmarkCredentialRouteLatency times small HTTPS requests directly,
// through a tunnel and through the injecting route, in the same run: on a
// kept-alive connection (req-µs) and each on a new connection, handshakes
// included (conn-µs).
func BenchmarkCredentialRouteLatency(b *testing.B) {
	warm, cold := newCredBench(b, true), newCredBench(b, false)
	buf := make([]byte, 1024)
	small := func(c *http.Client, u string) func() (int64, error) {
		return func() (int64, error) { return getAll(c, u, buf) }
	}
	type route struct {
		name string
		c    func(*credBench) *http.Client
		warm time.Duration
		cold time.Duration
	}
	routes := []*route{
		{name: "direct", c: func(cb *credBench) *http.Client { return cb.direct }},
		{name: "tunnel", c: func(cb *credBench) *http.Client { return cb.tunnel }},
		{name: "inject", c: func(cb *credBench) *http.Client { return cb.inject }},
	}
	for _, r := range routes { // open the kept-alive connections
		if _, err := small(r.c(warm), warm.url(r.name, "/"))(); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		for _, r := range routes {
			r.warm += timedSmall(b, small(r.c(warm), warm.url(r.name, "/")))
			r.cold += timedSmall(b, small(r.c(cold), cold.url(r.name, "/")))
		}
	}
	b.StopTimer()
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) }
	for _, r := range routes {
		b.ReportMetric(us(r.warm), r.name+"-req-µs")
		b.ReportMetric(us(r.cold), r.name+"-conn-µs")
	}
	b.ReportMetric(routes[2].warm.Seconds()/routes[0].warm.Seconds(), "inject/direct-req")
	b.ReportMetric(routes[2].cold.Seconds()/routes[0].cold.Seconds(), "inject/direct-conn")
	b.ReportMetric(routes[1].cold.Seconds()/routes[0].cold.Seconds(), "tunnel/direct-conn")
}

func timedSmall(b *testing.B, get func() (int64, error)) time.Duration {
	start := time.Now()
	n, err := get()
	d := time.Since(start)
	if err != nil || n != 2 {
		b.Fatalf("small request: %d bytes, %v", n, err)
	}
	return d
}
