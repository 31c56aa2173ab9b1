package egress

import (
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"
)

func TestCARoundTripAndLeaves(t *testing.T) {
	ca, err := NewCA(testIdentity)
	if err != nil {
		t.Fatal(err)
	}
	c := ca.Certificate()
	if !c.IsCA || !strings.Contains(c.Subject.CommonName, testIdentity) || c.NotAfter.Sub(time.Now()) > CAValidity || c.NotAfter.Before(time.Now().Add(CAValidity-time.Hour)) {
		t.Errorf("CA %q valid until %s, IsCA %v", c.Subject.CommonName, c.NotAfter, c.IsCA)
	}
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(ca.CertPEM()), "PRIVATE") {
		t.Error("the certificate PEM carries a private key")
	}
	again, err := ParseCA(ca.CertPEM(), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM())
	for _, host := range []string{"api.test", "10.0.0.7", "2001:db8::7"} {
		leaf, err := again.leaf(host)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: pool}); err != nil {
			t.Errorf("leaf for %s does not verify against the CA: %v", host, err)
		}
		if _, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: "other.test", Roots: pool}); err == nil {
			t.Errorf("leaf for %s verifies for other.test", host)
		}
		if cached, _ := again.leaf(host); cached != leaf {
			t.Errorf("leaf for %s was minted twice", host)
		}
	}
	other, _ := NewCA("other")
	otherKey, _ := other.KeyPEM()
	for name, tc := range map[string][2][]byte{
		"another CA's key": {ca.CertPEM(), otherKey},
		"no certificate":   {keyPEM, keyPEM},
		"no key":           {ca.CertPEM(), ca.CertPEM()},
		"garbage":          {[]byte("x"), []byte("y")},
		"a leaf as the CA": {leafPEM(t, ca), keyPEM},
	} {
		if _, err := ParseCA(tc[0], tc[1]); err == nil {
			t.Errorf("ParseCA with %s: accepted", name)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseCA with %s: error not one line: %q", name, err)
		}
	}
}

func leafPEM(t *testing.T, ca *CA) []byte {
	l, err := ca.leaf("x.test")
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: l.Certificate[0]})
}
