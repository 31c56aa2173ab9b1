package host_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/bot-bottle/bot-bottle/sdk/host"
)

// dialPlugin opens a TLS connection to a started plugin's socket with cfg
// and completes the handshake and a first read (TLS 1.3 reports a refused
// client certificate only then).
func dialPlugin(t *testing.T, pc *plugin.Client, cfg *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	addr := pc.ReattachConfig().Addr
	raw, err := net.Dial(addr.Network(), addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	cfg.NextProtos = []string{"h2"} // gRPC's servers insist on it
	c := tls.Client(raw, cfg)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := c.Handshake(); err != nil {
		return tls.ConnectionState{}, err
	}
	// After HTTP/2's preface a gRPC server answers with its SETTINGS, so a
	// read returns data on an accepted connection and the alert on a
	// refused one.
	if _, err := c.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")); err != nil {
		return c.ConnectionState(), err
	}
	if _, err := c.Read(make([]byte, 1)); err != nil {
		return c.ConnectionState(), err
	}
	return c.ConnectionState(), nil
}

// The core makes both sides' certificates: the plugin serves with the P-256
// one the core made (not an AutoMTLS P-521 one of its own), and refuses a
// client without the core's certificate.
func TestPluginServesWithTheCoresCertificate(t *testing.T) {
	bin := buildEcho(t)
	cfg := host.ClientConfig(exec.Command(bin), hclog.New(&hclog.LoggerOptions{Output: os.Stderr, Level: hclog.Warn}))
	if cfg.AutoMTLS || cfg.TLSConfig == nil {
		t.Fatalf("ClientConfig: AutoMTLS %v, TLSConfig %v; want the core's own TLS", cfg.AutoMTLS, cfg.TLSConfig)
	}
	pc := plugin.NewClient(cfg)
	t.Cleanup(pc.Kill)
	c, _, err := host.Dispense(pc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Info(context.Background()); err != nil {
		t.Fatal(err)
	}
	st, err := dialPlugin(t, pc, cfg.TLSConfig.Clone())
	if err != nil {
		t.Fatalf("the core's own configuration: %v", err)
	}
	key, ok := st.PeerCertificates[0].PublicKey.(*ecdsa.PublicKey)
	if !ok || key.Curve != elliptic.P256() {
		t.Fatalf("the plugin's certificate has a %T key (%v); want the core's P-256 one", st.PeerCertificates[0].PublicKey, key)
	}

	// Another start's certificates, and none at all, are refused.
	other := host.ClientConfig(exec.Command(bin), hclog.NewNullLogger()).TLSConfig
	stranger := cfg.TLSConfig.Clone()
	stranger.Certificates = other.Certificates
	if _, err := dialPlugin(t, pc, stranger); err == nil {
		t.Error("the plugin accepted a client certificate the core did not hand it")
	}
	anonymous := cfg.TLSConfig.Clone()
	anonymous.Certificates = nil
	if _, err := dialPlugin(t, pc, anonymous); err == nil {
		t.Error("the plugin accepted a client without a certificate")
	}
	// And the core does not trust a plugin certificate it did not make.
	impostor := other.Clone()
	impostor.Certificates = cfg.TLSConfig.Certificates
	if _, err := dialPlugin(t, pc, impostor); err == nil {
		t.Error("a client trusting other roots accepted the plugin's certificate")
	}
}

// A core of an earlier SDK uses go-plugin's AutoMTLS; a plugin of this SDK
// still serves it, with AutoMTLS's P-521 certificate.
func TestPluginServesAnAutoMTLSCore(t *testing.T) {
	bin := buildEcho(t)
	cfg := host.AutoMTLSClientConfig(exec.Command(bin), hclog.NewNullLogger())
	pc := plugin.NewClient(cfg)
	t.Cleanup(pc.Kill)
	c, _, err := host.Dispense(pc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Info(context.Background()); err != nil {
		t.Fatal(err)
	}
	st, err := dialPlugin(t, pc, cfg.TLSConfig.Clone())
	if err != nil {
		t.Fatal(err)
	}
	if key, ok := st.PeerCertificates[0].PublicKey.(*ecdsa.PublicKey); !ok || key.Curve != elliptic.P521() {
		t.Fatalf("the plugin's certificate under AutoMTLS: %T; want AutoMTLS's P-521", st.PeerCertificates[0].PublicKey)
	}
}
