package egress

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"time"
)

const benchSize = 100 << 20

// BenchmarkThroughput100MiB downloads 100 MiB from a loopback upstream
// directly, through a CONNECT tunnel and as plain HTTP through the proxy, in
// the same run, and reports each rate and the proxied/direct ratios.
func BenchmarkThroughput100MiB(b *testing.B) {
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i)
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(benchSize))
		for range benchSize / len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	b.Cleanup(up.Close)
	hostport := up.Listener.Addr().String()
	h := startProxy(b, []string{hostport})
	direct := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	viaProxy := &http.Client{Transport: &http.Transport{
		Proxy:             http.ProxyURL(&url.URL{Scheme: "http", Host: h.addr}),
		DisableKeepAlives: true,
	}}
	buf := make([]byte, 256<<10)

	var tDirect, tConnect, tPlain time.Duration
	b.ResetTimer()
	for range b.N {
		tDirect += timed(b, func() (int64, error) { return getAll(direct, up.URL, buf) })
		tConnect += timed(b, func() (int64, error) { return connectGet(h.addr, hostport, buf) })
		tPlain += timed(b, func() (int64, error) { return getAll(viaProxy, up.URL, buf) })
	}
	b.StopTimer()
	rate := func(d time.Duration) float64 { return float64(benchSize) * float64(b.N) / d.Seconds() / 1e6 }
	b.ReportMetric(rate(tDirect), "direct-MB/s")
	b.ReportMetric(rate(tConnect), "connect-MB/s")
	b.ReportMetric(rate(tPlain), "plain-MB/s")
	b.ReportMetric(tDirect.Seconds()/tConnect.Seconds(), "connect/direct")
	b.ReportMetric(tDirect.Seconds()/tPlain.Seconds(), "plain/direct")
}

func timed(b *testing.B, get func() (int64, error)) time.Duration {
	start := time.Now()
	n, err := get()
	d := time.Since(start)
	if err != nil {
		b.Fatal(err)
	}
	if n != benchSize {
		b.Fatalf("downloaded %d bytes, want %d", n, benchSize)
	}
	return d
}

func getAll(c *http.Client, u string, buf []byte) (int64, error) {
	resp, err := c.Get(u)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return 0, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return io.CopyBuffer(struct{ io.Writer }{io.Discard}, resp.Body, buf)
}

// connectGet opens a CONNECT tunnel and sends a plain GET through it: no
// TLS, so that only the proxy's cost is measured.
func connectGet(proxy, target string, buf []byte) (int64, error) {
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReaderSize(c, 64<<10)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != 200 {
		return 0, fmt.Errorf("CONNECT %s: %s", target, resp.Status)
	}
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target)
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return io.CopyBuffer(struct{ io.Writer }{io.Discard}, resp.Body, buf)
}
