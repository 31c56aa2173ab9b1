package lifecycle

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bot-bottle/bot-bottle/internal/audit"
	"github.com/bot-bottle/bot-bottle/internal/config"
)

// The audit refuses a from_env credential's value as the flow's environment
// has it (Env.Getenv: the dashboard's, a test's), not only the process's.
func TestAuditRefusesCredentialFromTheFlowsEnv(t *testing.T) {
	const value = "sk-audit-5c2e-only-in-getenv"
	home := t.TempDir()
	e := &Env{Home: home, Getenv: func(k string) string {
		if k == "FLOW_ONLY_API_KEY" {
			return value
		}
		return ""
	}}
	agent := &config.Agent{Credentials: []config.Credential{{
		Name: "api", EnvName: "API_KEY", Hosts: []string{"api.example.com"},
		Header: "Authorization", FromEnv: "FLOW_ONLY_API_KEY",
	}}}
	if got := e.credentialSecrets(context.Background(), agent); len(got) != 1 || got[0] != value {
		t.Fatalf("credentialSecrets = %d values, want the one from Getenv", len(got))
	}
	if err := e.auditLog(agent).Append(audit.Event{Identity: "tsh-aud01", Kind: "request",
		Fields: map[string]any{"command": "echo " + value}}); err != nil {
		t.Fatal(err)
	}
	var found bool
	err := filepath.WalkDir(home, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		found = found || strings.Contains(string(b), "tsh-aud01")
		if strings.Contains(string(b), value) {
			t.Errorf("%s holds the credential's value", p)
		}
		return err
	})
	if err != nil || !found {
		t.Fatalf("no audit record written (%v)", err)
	}
}
