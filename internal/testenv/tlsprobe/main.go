// Command tlsprobe is the credential tests' upstream and client, built
// static and put in their busybox images.
//
//	tlsprobe serve CERT KEY   HTTPS on :443 and plain HTTP on :80; answers
//	                          each request with its host, method and path and
//	                          the sha256 of each header value (so that no
//	                          value it was sent goes back to the bottle)
//	tlsprobe get URL [NAME: VALUE]...
//	                          a Go client through $HTTPS_PROXY/$HTTP_PROXY,
//	                          trusting $SSL_CERT_FILE; prints the status, the
//	                          issuer of the server's certificate and the body
package main

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: tlsprobe serve CERT KEY | tlsprobe get URL [NAME: VALUE]...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2], os.Args[3])
	case "get":
		os.Exit(get(os.Args[2], os.Args[3:]))
	}
	os.Exit(2)
}

func echo(w http.ResponseWriter, r *http.Request) {
	var b strings.Builder
	fmt.Fprintf(&b, "host=%s method=%s path=%s tls=%v\n", r.Host, r.Method, r.URL.RequestURI(), r.TLS != nil)
	names := make([]string, 0, len(r.Header))
	for k := range r.Header {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		for _, v := range r.Header[k] {
			sum := sha256.Sum256([]byte(v))
			fmt.Fprintf(&b, "header %s sha256=%s\n", strings.ToLower(k), hex.EncodeToString(sum[:]))
		}
	}
	io.WriteString(w, b.String())
}

func serve(cert, key string) {
	go func() {
		if err := http.ListenAndServe(":80", http.HandlerFunc(echo)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}()
	if err := http.ListenAndServeTLS(":443", cert, key, http.HandlerFunc(echo)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func get(url string, headers []string) int {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{} // the system roots: $SSL_CERT_FILE
	c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	fmt.Printf("status=%d\n", resp.StatusCode)
	if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
		fmt.Printf("issuer=%s\n", resp.TLS.PeerCertificates[0].Issuer.CommonName)
	}
	os.Stdout.Write(body)
	return 0
}
