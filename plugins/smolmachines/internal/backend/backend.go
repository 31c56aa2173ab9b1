// Package backend implements the bot-bottle Backend on smolvm microVMs: one
// machine per bottle, driven through the smolvm CLI. It is stateless between
// calls: everything a later call needs is in the handle's Data (never a
// secret value).
package backend

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"log/slog"

	"github.com/bot-bottle/bot-bottle/plugins/smolmachines/internal/smolvm"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// Name is the backend's name, as plugins.hcl and metadata spell it.
const Name = "smolmachines"

// Version is this plugin's version.
const Version = "0.1.0"

// handleVersion is the layout version of handleData.
const handleVersion = 1

// Config is the plugin's config block in plugins.hcl.
type Config struct {
	// Smolvm is the smolvm executable; `smolvm` on $PATH when empty.
	Smolvm string `json:"smolvm"`
	// CPUs and MemoryMiB size every machine; smolvm's defaults when zero.
	CPUs      int `json:"cpus"`
	MemoryMiB int `json:"memory_mib"`
}

func parseConfig(raw json.RawMessage) (Config, error) {
	var c Config
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return c, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("plugin config (plugins.hcl, plugin \"smolmachines\"): %w (known keys: smolvm, cpus, memory_mib)", err)
	}
	if c.CPUs < 0 || c.CPUs > 255 {
		return c, fmt.Errorf("plugin config: cpus must be 1-255, got %d", c.CPUs)
	}
	if c.MemoryMiB < 0 {
		return c, fmt.Errorf("plugin config: memory_mib must be positive, got %d", c.MemoryMiB)
	}
	return c, nil
}

// configuredSmolvm is the smolvm path from the plugin's config block as the
// core passed it at process start, for calls that get no Spec.
func configuredSmolvm() string {
	c, err := parseConfig(sdk.PluginConfig())
	if err != nil {
		return ""
	}
	return c.Smolvm
}

// Backend is the smolmachines backend.
type Backend struct {
	sdk.UnimplementedBackend
	log *slog.Logger

	// secrets keeps, in memory only, the passed-through env of bottles this
	// process launched, because smolvm resolves --secret-env on the host at
	// every exec, and Attach gets no Spec. A later plugin process gets them
	// from the environment it inherits from the core.
	mu      sync.Mutex
	secrets map[string]map[string]string
}

// New returns a Backend that logs to log.
func New(log *slog.Logger) *Backend {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Backend{log: log, secrets: map[string]map[string]string{}}
}

var (
	_ sdk.Backend   = (*Backend)(nil)
	_ sdk.Committer = (*Backend)(nil)
	_ sdk.Execer    = (*Backend)(nil)
	_ sdk.Copier    = (*Backend)(nil)
)

// Info never fails: a missing smolvm shows up in Details.
func (b *Backend) Info(ctx context.Context) (sdk.Info, error) {
	info := sdk.Info{
		Name:        Name,
		Version:     Version,
		APIVersions: []string{sdk.APIVersion},
		// Egress audit, but no live egress: smolvm cannot change a
		// machine's allow-list after create.
		Capabilities: []sdk.Capability{sdk.CapCommit, sdk.CapExec, sdk.CapCopy, sdk.CapEgressAudit},
		Details:      map[string]string{"smolvm": "not found"},
	}
	path, err := smolvm.Locate(configuredSmolvm())
	if err != nil {
		return info, nil
	}
	info.Details["smolvm_path"] = path
	vctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cli := &smolvm.CLI{Path: path}
	if v, err := cli.Version(vctx); err == nil {
		info.Details["smolvm"] = v
	} else {
		info.Details["smolvm"] = "unknown (" + err.Error() + ")"
	}
	return info, nil
}

// handleData is what a Handle carries: no secret values, only their names.
type handleData struct {
	Machine     string   `json:"machine"`
	Smolvm      string   `json:"smolvm"`
	Workdir     string   `json:"workdir"`
	TTY         bool     `json:"tty"`
	Command     []string `json:"command"`
	Env         []string `json:"env,omitempty"`
	SecretNames []string `json:"secret_names,omitempty"`
	ImageKind   string   `json:"image_kind"`
	Image       string   `json:"image"`
	Detached    bool     `json:"detached,omitempty"`
	// EgressLog is where refused connections are imported to.
	EgressLog string `json:"egress_log,omitempty"`
}

func decodeHandle(h sdk.Handle) (handleData, error) {
	var d handleData
	if h.Backend != "" && h.Backend != Name {
		return d, fmt.Errorf("handle of bottle %s belongs to backend %q, not %q", h.Identity, h.Backend, Name)
	}
	if h.Version != handleVersion {
		return d, fmt.Errorf("handle of bottle %s has version %d; this plugin reads version %d", h.Identity, h.Version, handleVersion)
	}
	if err := json.Unmarshal(h.Data, &d); err != nil {
		return d, fmt.Errorf("handle of bottle %s: %w", h.Identity, err)
	}
	if err := smolvm.ValidateName(d.Machine); err != nil {
		return d, fmt.Errorf("handle of bottle %s: %w", h.Identity, err)
	}
	if d.Smolvm == "" {
		return d, fmt.Errorf("handle of bottle %s names no smolvm executable", h.Identity)
	}
	return d, nil
}

// cliFor returns a CLI for a handle's bottle whose environment carries the
// bottle's secrets (from this process's memory when it launched the
// bottle, else from the inherited environment). It fails when a secret is
// nowhere, because smolvm would fail at exec anyway, less clearly.
func (b *Backend) cliFor(identity string, d handleData) (*smolvm.CLI, error) {
	cli := &smolvm.CLI{Path: d.Smolvm}
	b.mu.Lock()
	mem := b.secrets[identity]
	b.mu.Unlock()
	var missing []string
	for _, n := range d.SecretNames {
		if v, ok := mem[n]; ok {
			cli.Env = append(cli.Env, n+"="+v)
		} else if !envSet(n) {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("bottle %s needs %s in the environment: smolvm resolves --secret-env on the host at every exec", identity, strings.Join(missing, ", "))
	}
	return cli, nil
}

func (b *Backend) rememberSecrets(identity string, env map[string]string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(env) == 0 {
		delete(b.secrets, identity)
		return
	}
	cp := make(map[string]string, len(env))
	for k, v := range env {
		cp[k] = v
	}
	b.secrets[identity] = cp
}

func (b *Backend) forgetSecrets(identity string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.secrets, identity)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// markNotFound makes smolvm's "vm not found" an sdk.ErrNotFound, which the
// core reads as "the bottle is gone" (gRPC NotFound) rather than a failure.
func markNotFound(err *error) {
	if *err != nil && smolvm.IsNotFound(*err) && !errors.Is(*err, sdk.ErrNotFound) {
		*err = notFoundError{*err}
	}
}

type notFoundError struct{ error }

func (e notFoundError) Unwrap() []error { return []error{e.error, sdk.ErrNotFound} }
