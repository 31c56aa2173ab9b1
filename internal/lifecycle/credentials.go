package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/bot-bottle/bot-bottle/internal/audit"
	"github.com/bot-bottle/bot-bottle/internal/config"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// loadAgent loads an agent's definition with the operator's credentials of
// plugins.hcl applied.
func (e *Env) loadAgent(name string) (*config.Agent, error) {
	a, err := config.LoadAgent(e.Home, name)
	if err != nil {
		return nil, err
	}
	if err := e.Plugins.ApplyCredentials(a); err != nil {
		return nil, err
	}
	return a, nil
}

// addCredentials resolves the agent's credentials on the host for one
// launch and puts them in spec: on a backend with CapCredentials, the value
// in spec.Credentials (for its egress proxy) and a fresh placeholder in the
// agent's environment; on another, the value itself in the environment only
// when the agent's env passes that variable through (the operator's choice,
// as before credentials), and otherwise a refusal. It returns the preflight
// lines that say which protection each credential has. Nothing it returns
// or any error holds a value.
func (e *Env) addCredentials(ctx context.Context, s session, spec *sdk.Spec) ([]sdk.PreflightLine, error) {
	a := s.agent
	if len(a.Credentials) == 0 {
		return nil, nil
	}
	capable := s.plugin != nil && s.plugin.Info.Has(sdk.CapCredentials)
	backend := s.meta.Backend
	var lines []sdk.PreflightLine
	var unset []config.Credential
	for _, c := range a.Credentials {
		v, err := c.Resolve(ctx, e.lookupEnv)
		if errors.Is(err, config.ErrCredentialUnset) {
			delete(spec.Env, c.EnvName)
			unset = append(unset, c)
			continue
		}
		if err != nil {
			return nil, err
		}
		if !capable {
			if !contains(a.Env, c.EnvName) {
				return nil, fmt.Errorf("credential %s: the %s backend cannot keep it from the agent (no %s); use a backend that can (docker), or pass the value into the bottle by listing %s in the agent's env",
					c.Name, backend, sdk.CapCredentials, c.EnvName)
			}
			spec.Env[c.EnvName] = v
			lines = append(lines, sdk.PreflightLine{Key: "credential " + c.Name,
				Value: fmt.Sprintf("%s from %s, passed through: the agent holds the value (the %s backend cannot inject credentials)", c.EnvName, c.Source(), backend)})
			continue
		}
		ph := sdk.NewPlaceholder(c.Name)
		spec.Agent.Credentials = append(spec.Agent.Credentials, c.SDK(ph))
		if spec.Credentials == nil {
			spec.Credentials = map[string]string{}
		}
		spec.Credentials[c.Name] = v
		spec.Env[c.EnvName] = ph
		lines = append(lines, sdk.PreflightLine{Key: "credential " + c.Name,
			Value: fmt.Sprintf("%s from %s, injected by the egress proxy into %s toward %s; the agent holds a placeholder",
				c.EnvName, c.Source(), c.Header, strings.Join(c.Hosts, ", "))})
	}
	// An agent may offer several ways to sign in (an API key, a
	// subscription's token): one not set beside one that is, is only said;
	// none set at all is worth a warning.
	for _, c := range unset {
		if len(lines) == 0 {
			e.warn("%s not set on this host; the agent starts without credential %s", c.FromEnv, c.Name)
		} else {
			e.say("%s not set on this host; credential %s is not used", c.FromEnv, c.Name)
		}
	}
	return lines, nil
}

// credentialNames are the credentials the backend injects for this
// launch, for the audit: names only.
func credentialNames(spec sdk.Spec) []string {
	out := []string{}
	for _, c := range spec.Agent.Credentials {
		out = append(out, c.Name)
	}
	return out
}

// credentialSecrets are the values the audit log refuses to record: those
// the host has without running anything (a command's output is not
// fetched again for every record).
func (e *Env) credentialSecrets(ctx context.Context, agent *config.Agent) []string {
	var out []string
	for _, c := range agent.Credentials {
		if len(c.FromCommand) > 0 {
			continue
		}
		if v, err := c.Resolve(ctx, e.lookupEnv); err == nil {
			out = append(out, v)
		}
	}
	return out
}

// RevokeCredential revokes credential name of the running bottle id live:
// its egress proxy stops putting it on the wire, from the next request.
// The core's audit records it.
func (e *Env) RevokeCredential(ctx context.Context, id, name string) error {
	if err := sdk.ValidCredentialName(name); err != nil {
		return err
	}
	meta, err := e.readMeta(id)
	if err != nil {
		return err
	}
	h, err := e.Store.ReadHandle(id)
	if err != nil {
		return err
	}
	if h == nil {
		return fmt.Errorf("revoke %s: %s is not running; a stopped bottle holds no credential (its next resume reads them anew)", name, id)
	}
	p, err := e.startPlugin(ctx, meta.Backend)
	if err != nil {
		return err
	}
	defer p.Close()
	if !p.Info.Has(sdk.CapCredentials) {
		return fmt.Errorf("revoke %s: the %s backend does not inject credentials, so it has none to revoke; stop %s to take a passed-through value away", name, meta.Backend, id)
	}
	rctx, cancel := context.WithTimeout(ctx, stopTimeout)
	defer cancel()
	err = p.Backend.RevokeCredential(rctx, *h, name)
	switch {
	case errors.Is(err, sdk.ErrNotFound):
		return fmt.Errorf("revoke %s: %s has no credential %s in force", name, id, name)
	case err != nil:
		return p.Wrap(fmt.Errorf("revoke %s of %s: %w", name, id, err))
	}
	var agent *config.Agent
	if a, err := e.loadAgent(meta.AgentName); err == nil {
		agent = a
	}
	e.record(agent, audit.Event{Identity: id, Kind: audit.KindRevoke, Fields: map[string]any{"credential": name, "backend": meta.Backend}})
	return nil
}
