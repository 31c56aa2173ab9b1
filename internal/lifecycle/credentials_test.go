package lifecycle_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/bot-bottle/bot-bottle/internal/audit"
	"github.com/bot-bottle/bot-bottle/internal/config"
	"github.com/bot-bottle/bot-bottle/internal/lifecycle"
	"github.com/bot-bottle/bot-bottle/internal/testbackend"
	"github.com/bot-bottle/bot-bottle/sdk"
)

const credValue = "sk-flow-7d1e0c-never-stored"

// credBackend is the test backend with CapCredentials: it records what
// each launch was given and which revokes it was asked for.
type credBackend struct {
	sdk.Backend
	mu      sync.Mutex
	specs   []sdk.Spec
	revoked []string
}

func (b *credBackend) Info(ctx context.Context) (sdk.Info, error) {
	info, err := b.Backend.Info(ctx)
	info.Capabilities = append(info.Capabilities, sdk.CapCredentials)
	return info, err
}

func (b *credBackend) Launch(ctx context.Context, spec sdk.Spec, plan sdk.Plan, progress func(sdk.Progress)) (sdk.Handle, error) {
	b.mu.Lock()
	b.specs = append(b.specs, spec)
	b.mu.Unlock()
	return b.Backend.Launch(ctx, spec, plan, progress)
}

func (b *credBackend) RevokeCredential(_ context.Context, h sdk.Handle, name string) error {
	if name != "api" {
		return sdk.ErrNotFound
	}
	b.mu.Lock()
	b.revoked = append(b.revoked, h.Identity+"/"+name)
	b.mu.Unlock()
	return nil
}

const credAgentHCL = `image = "host"
command = ["sleep", "30"]
resume_command = ["sleep", "30"]
egress = ["other.example.com"]
credential "api" {
  env      = "API_KEY"
  from_env = "HOST_API_KEY"
  hosts    = ["api.example.com"]
  header   = "Authorization"
  prefix   = "Bearer "
}
`

func credRig(t *testing.T, capable bool, hcl string) (*rig, *credBackend) {
	r := newRig(t)
	if err := os.WriteFile(filepath.Join(r.env.Home, "agents", "tsh", "agent.hcl"), []byte(hcl), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"HOST_API_KEY": credValue}
	r.env.Getenv = func(k string) string { return env[k] }
	var cb *credBackend
	if capable {
		cb = &credBackend{Backend: testbackend.New(filepath.Join(r.env.Home, "tproot"), testbackend.Options{})}
		r.backend = cb
		r.env.Backends = inProcess{t, cb}
	}
	return r, cb
}

// noSecret fails if the value is in any file of the home (state, audit,
// queue, the test backend's own files).
func noSecret(t *testing.T, home string) {
	t.Helper()
	err := filepath.WalkDir(home, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), credValue) {
			t.Errorf("%s holds the credential's value", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// On a backend that injects: the value goes in Spec.Credentials only, the
// agent's env gets a fresh placeholder at every launch, the credential's
// host joins the egress, the preflight says how it is protected, revoke
// reaches the backend and the audit, and no file of the home holds the value.
func TestCredentialsOnACapableBackend(t *testing.T) {
	r, cb := credRig(t, true, credAgentHCL)
	ctx := context.Background()
	id := r.detached()
	if len(cb.specs) != 1 {
		t.Fatalf("%d launches", len(cb.specs))
	}
	s := cb.specs[0]
	ph := s.Env["API_KEY"]
	if !sdk.IsPlaceholder(ph) || s.Credentials["api"] != credValue || len(s.Agent.Credentials) != 1 || s.Agent.Credentials[0].Placeholder != ph ||
		s.Agent.Credentials[0].Header != "Authorization" || s.Agent.Credentials[0].Prefix != "Bearer " {
		t.Errorf("spec: env %v, credentials %v, agent credentials %+v", s.Env, len(s.Credentials), s.Agent.Credentials)
	}
	if strings.Join(s.Egress, " ") != "other.example.com api.example.com" {
		t.Errorf("egress %v, want the credential's host added", s.Egress)
	}
	msgs := r.msgs.String()
	if !strings.Contains(msgs, "credential api") || !strings.Contains(msgs, "injected by the egress proxy") || strings.Contains(msgs, credValue) {
		t.Errorf("preflight:\n%s", msgs)
	}

	if err := r.env.RevokeCredential(ctx, id, "nope"); err == nil || !strings.Contains(err.Error(), "has no credential nope in force") {
		t.Errorf("revoke of an unknown credential: %v", err)
	}
	if err := r.env.RevokeCredential(ctx, id, "Bad Name"); err == nil {
		t.Error("revoke of a bad name accepted")
	}
	if err := r.env.RevokeCredential(ctx, "tsh-zzzzz", "api"); err == nil {
		t.Error("revoke on an unknown bottle accepted")
	}
	if err := r.env.RevokeCredential(ctx, id, "api"); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if strings.Join(cb.revoked, ",") != id+"/api" {
		t.Errorf("the backend was asked to revoke %v", cb.revoked)
	}
	evs, err := r.env.Audit(id)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, ev := range evs {
		kinds = append(kinds, ev.Kind)
		if ev.Kind == audit.KindRevoke && ev.Fields["credential"] != "api" {
			t.Errorf("revoke record %+v", ev)
		}
		if ev.Kind == audit.KindStart && strings.Join(toStrings(ev.Fields["credentials"]), ",") != "api" {
			t.Errorf("start record's credentials %v", ev.Fields["credentials"])
		}
	}
	if !strings.Contains(strings.Join(kinds, " "), audit.KindRevoke) {
		t.Errorf("audit kinds %v lack %s", kinds, audit.KindRevoke)
	}

	// A resume reads the value again and makes a new placeholder.
	if err := r.env.Stop(ctx, id, true); err != nil {
		t.Fatal(err)
	}
	if _, err := r.env.Resume(ctx, id, lifecycle.ResumeOptions{Detach: true, Command: []string{"sleep", "30"}}); err != nil {
		t.Fatalf("resume: %v\n%s", err, r.msgs)
	}
	if len(cb.specs) != 2 || cb.specs[1].Env["API_KEY"] == ph || !sdk.IsPlaceholder(cb.specs[1].Env["API_KEY"]) || cb.specs[1].Credentials["api"] != credValue {
		t.Errorf("resume's spec: %d launches, env %v", len(cb.specs), cb.specs[len(cb.specs)-1].Env)
	}
	noSecret(t, r.env.Home)
}

// On a backend that cannot inject: refused in one line, nothing left; the
// same with the variable in env passes the value through, as before
// credentials, and the preflight says the agent holds it; revoke is
// refused; a credential the host does not have starts without it.
func TestCredentialsOnABackendThatCannotInject(t *testing.T) {
	r, _ := credRig(t, false, credAgentHCL)
	ctx := context.Background()
	_, err := r.env.Start(ctx, lifecycle.StartOptions{Agent: "tsh", Command: []string{"sleep", "30"}, Detach: true})
	if err == nil || !strings.Contains(err.Error(), "credential api: the test backend cannot keep it from the agent") || strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), credValue) {
		t.Fatalf("start: %v, want a one-line refusal", err)
	}
	if ids, _ := r.env.Store.List(); len(ids) != 0 {
		t.Errorf("a refused start left state: %v", ids)
	}

	r, _ = credRig(t, false, strings.Replace(credAgentHCL, `egress =`, `env = ["API_KEY"]
egress =`, 1))
	id := r.detached()
	if msgs := r.msgs.String(); !strings.Contains(msgs, "passed through: the agent holds the value") || strings.Contains(msgs, credValue) {
		t.Errorf("preflight:\n%s", msgs)
	}
	if err := r.env.RevokeCredential(ctx, id, "api"); err == nil || !strings.Contains(err.Error(), "does not inject credentials") {
		t.Errorf("revoke on a backend that cannot: %v", err)
	}

	r, _ = credRig(t, false, credAgentHCL)
	r.env.Getenv = func(string) string { return "" }
	r.detached()
	if msgs := r.msgs.String(); !strings.Contains(msgs, "HOST_API_KEY not set on this host; the agent starts without credential api") {
		t.Errorf("start without the host's value:\n%s", msgs)
	}
}

func toStrings(v any) []string {
	var out []string
	if xs, ok := v.([]any); ok {
		for _, x := range xs {
			s, _ := x.(string)
			out = append(out, s)
		}
	}
	return out
}

// plugins.hcl's credentials reach the agents they name at start: the
// operator's replaces the agent's of the same name (here its source).
func TestOperatorCredentialsAtStart(t *testing.T) {
	r, cb := credRig(t, true, credAgentHCL)
	hcl := `default_backend = "test"
credential "api" {
  agents   = ["tsh"]
  env      = "API_KEY"
  from_env = "OPERATOR_KEY"
  hosts    = ["api.example.com"]
  header   = "x-api-key"
}
`
	if err := os.WriteFile(filepath.Join(r.env.Home, "plugins.hcl"), []byte(hcl), 0o600); err != nil {
		t.Fatal(err)
	}
	plugins, err := config.LoadPlugins(r.env.Home)
	if err != nil {
		t.Fatal(err)
	}
	r.env.Plugins = plugins
	env := map[string]string{"HOST_API_KEY": "not-this-one", "OPERATOR_KEY": credValue}
	r.env.Getenv = func(k string) string { return env[k] }
	r.detached()
	s := cb.specs[0]
	if s.Credentials["api"] != credValue || s.Agent.Credentials[0].Header != "x-api-key" || !sdk.IsPlaceholder(s.Env["API_KEY"]) {
		t.Errorf("spec: %d credentials, agent credentials %+v", len(s.Credentials), s.Agent.Credentials)
	}
	noSecret(t, r.env.Home)
}

// Of two ways to sign in, the one the host lacks is only said, not warned.
func TestCredentialUnsetBesideASetOne(t *testing.T) {
	r, cb := credRig(t, true, credAgentHCL+`credential "other" {
  env      = "OTHER_TOKEN"
  from_env = "UNSET_ON_HOST"
  hosts    = ["api.example.com"]
  header   = "x-other"
}
`)
	r.detached()
	msgs := r.msgs.String()
	if !strings.Contains(msgs, "UNSET_ON_HOST not set on this host; credential other is not used") || strings.Contains(msgs, "warning: UNSET_ON_HOST") {
		t.Errorf("messages:\n%s", msgs)
	}
	if s := cb.specs[0]; len(s.Agent.Credentials) != 1 || s.Env["OTHER_TOKEN"] != "" {
		t.Errorf("the unset credential reached the spec: %+v %v", s.Agent.Credentials, s.Env)
	}
}
