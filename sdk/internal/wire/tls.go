package wire

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"time"
)

// Mutual TLS between the core and a plugin, made by the core alone.
//
// go-plugin's AutoMTLS makes a P-521 key and certificate on each side at
// every start, which is most of a plugin's start time. Instead the core
// makes two P-256 ones (well under a millisecond): its own, which it hands
// over in go-plugin's PLUGIN_CLIENT_CERT as AutoMTLS does, and the plugin's,
// certificate and key, in EnvServerTLS. A plugin of this SDK serves with
// the latter (sdk.Serve's TLSProvider) and the core trusts only that
// certificate. A plugin built against an earlier SDK ignores EnvServerTLS,
// sees PLUGIN_CLIENT_CERT and answers with AutoMTLS's server side: its own
// certificate in the handshake line, which go-plugin's client then trusts
// in place of the one the core made. So the choice needs no negotiation and
// no record: both kinds of plugin keep mutual authentication, and only an
// old plugin still pays for its P-521 key.

// EnvServerTLS carries the plugin's certificate and private key (PEM) from
// the core into the plugin process. The plugin removes it from its
// environment when it has read it, so its own children never see the key.
const EnvServerTLS = "BOT_BOTTLE_PLUGIN_TLS"

// envClientCert is go-plugin's variable for the core's certificate.
const envClientCert = "PLUGIN_CLIENT_CERT"

// certLifetime bounds the certificates: they live in two processes' memory
// for one plugin run, and gRPC may redial with them while it lasts (an
// attached session can last days).
const certLifetime = 30 * 24 * time.Hour

// ClientTLS makes the core's and the plugin's certificates for one plugin
// start. It returns the core's TLS configuration (go-plugin's
// ClientConfig.TLSConfig, with AutoMTLS off) and the variables to add to the
// plugin's environment.
func ClientTLS() (*tls.Config, []string, error) {
	clientPEM, clientKey, err := makeCert(x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, nil, err
	}
	serverPEM, serverKey, err := makeCert(x509.ExtKeyUsageServerAuth)
	if err != nil {
		return nil, nil, err
	}
	clientCert, err := tls.X509KeyPair(clientPEM, clientKey)
	if err != nil {
		return nil, nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(serverPEM) {
		return nil, nil, errors.New("plugin certificate does not parse")
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{clientCert},
		RootCAs:      roots,
		ServerName:   "localhost",
		MinVersion:   tls.VersionTLS12,
	}
	env := []string{
		envClientCert + "=" + string(clientPEM),
		EnvServerTLS + "=" + string(serverPEM) + string(serverKey),
	}
	return cfg, env, nil
}

// ServerTLS is the plugin's TLS configuration from what the core handed
// over in EnvServerTLS and PLUGIN_CLIENT_CERT, or nil when it handed over
// no EnvServerTLS (a core of an earlier SDK, which uses AutoMTLS: go-plugin
// then does its part).
func ServerTLS() (*tls.Config, error) {
	both, ok := os.LookupEnv(EnvServerTLS)
	if !ok {
		return nil, nil
	}
	os.Unsetenv(EnvServerTLS)
	cert, err := tls.X509KeyPair([]byte(both), []byte(both))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EnvServerTLS, err)
	}
	clients := x509.NewCertPool()
	if !clients.AppendCertsFromPEM([]byte(os.Getenv(envClientCert))) {
		return nil, fmt.Errorf("%s is set but %s holds no certificate", EnvServerTLS, envClientCert)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clients,
		MinVersion:   tls.VersionTLS12,
	}, nil
}

// makeCert makes a self-signed P-256 certificate for "localhost", which its
// peer trusts as the only root: the shape AutoMTLS's certificates have, so
// that a plugin of an earlier SDK accepts the core's.
func makeCert(usage x509.ExtKeyUsage) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "localhost", Organization: []string{"bot-bottle"}},
		DNSNames:              []string{"localhost"},
		ExtKeyUsage:           []x509.ExtKeyUsage{usage},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(certLifetime),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	var c, k bytes.Buffer
	if err := pem.Encode(&c, &pem.Block{Type: "CERTIFICATE", Bytes: der}); err != nil {
		return nil, nil, err
	}
	if err := pem.Encode(&k, &pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}); err != nil {
		return nil, nil, err
	}
	return c.Bytes(), k.Bytes(), nil
}
