package wire

import (
	"os"
	"strings"
	"testing"
)

// The plugin reads its key once and removes it, so nothing it starts
// inherits it; without the core's certificates it leaves TLS to AutoMTLS.
func TestServerTLSFromTheEnvironment(t *testing.T) {
	t.Setenv(EnvServerTLS, "")
	os.Unsetenv(EnvServerTLS)
	if cfg, err := ServerTLS(); cfg != nil || err != nil {
		t.Fatalf("without %s: %v, %v; want nil, nil", EnvServerTLS, cfg, err)
	}
	_, env, err := ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	if !strings.Contains(os.Getenv(EnvServerTLS), "PRIVATE KEY") || strings.Contains(os.Getenv(envClientCert), "PRIVATE KEY") {
		t.Fatal("the plugin gets its own key and only the core's certificate")
	}
	cfg, err := ServerTLS()
	if err != nil || cfg == nil || len(cfg.Certificates) != 1 || cfg.ClientCAs == nil {
		t.Fatalf("ServerTLS = %+v, %v", cfg, err)
	}
	if _, set := os.LookupEnv(EnvServerTLS); set {
		t.Fatalf("%s is still in the environment", EnvServerTLS)
	}
	t.Setenv(EnvServerTLS, "not pem")
	if _, err := ServerTLS(); err == nil {
		t.Fatal("a malformed key was accepted")
	}
}
