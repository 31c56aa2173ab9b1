package main

// backend.go is the SDK glue, and what a backend of your own keeps: the six
// methods of sdk.Backend. Each checks its input, turns the SDK's types into
// the runtime's and back, and leaves the work to the runtime (the
// runtime_*.go files: namespaces, the bottle's init, its files), which is
// what a podman or VM backend replaces.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/bot-bottle/bot-bottle/sdk"
)

const (
	name    = "skeleton"
	version = "0.1.0"
	// handleVersion changes when Handle.Data changes shape: the core keeps
	// handles across upgrades of the plugin.
	handleVersion = 1
)

// backend is stateless: every call finds what it needs under root.
type backend struct {
	// UnimplementedBackend declines Exec, Copy, Commit and live egress
	// with sdk.ErrNotSupported. Info declares none of them, so the core
	// never asks: that is capability gating.
	sdk.UnimplementedBackend
	root string
	// home is sdk.HomeID: a configured root may serve several homes, so
	// each bottle records its own and List reports only the caller's.
	home string
	err  error // a bad plugin config, reported by every call that needs root
}

func (b *backend) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{
		Name:        name,
		Version:     version,
		APIVersions: []string{sdk.APIVersion},
		Details: map[string]string{
			"root":       b.root,
			"isolation":  isolation,
			"network":    "none (loopback only)",
			"filesystem": filesystem,
		},
	}, nil
}

func (b *backend) Prepare(_ context.Context, spec sdk.Spec) (sdk.Plan, error) {
	if err := b.check(spec); err != nil {
		return sdk.Plan{}, err
	}
	// Fail now, not inside the bottle, when the command is not on this
	// host: there is no image to bring it.
	if cmd := spec.Command[0]; !strings.Contains(cmd, "/") {
		if _, err := exec.LookPath(cmd); err != nil {
			return sdk.Plan{}, fmt.Errorf("prepare %s: %s is not on this host's PATH (skeleton runs the host's own binaries)", spec.Identity, cmd)
		}
	}
	project := "(none: an empty directory in the bottle)"
	switch {
	case spec.Cwd != "" && spec.CopyCwd:
		project = spec.Cwd + " (copied into the bottle)"
	case spec.Cwd != "":
		project = spec.Cwd + " (shared, read-write)"
	}
	envNames := make([]string, 0, len(spec.Env))
	for k := range spec.Env {
		envNames = append(envNames, k)
	}
	sort.Strings(envNames)
	plan := sdk.Plan{Preflight: []sdk.PreflightLine{
		{Key: "isolation", Value: isolation},
		{Key: "network", Value: "none (loopback only)"},
		{Key: "filesystem", Value: filesystem},
		{Key: "project", Value: project},
		{Key: "env", Value: orNone(strings.Join(envNames, ", "))},
		{Key: "bottle dir", Value: filepath.Join(b.root, spec.Identity)},
	}}
	if src := imageSource(spec); src != "" {
		plan.Warnings = append(plan.Warnings, fmt.Sprintf("%s is not used: skeleton runs this host's own binaries", src))
	}
	if len(spec.Egress) > 0 {
		plan.Warnings = append(plan.Warnings, fmt.Sprintf("egress allowlist %s is not applied: a skeleton bottle has no network at all", strings.Join(spec.Egress, ", ")))
	}
	plan.Warnings = append(plan.Warnings, limits(os.Getuid())...)
	return plan, nil
}

func (b *backend) check(spec sdk.Spec) error {
	if b.err != nil {
		return b.err
	}
	if !validName(spec.Identity) {
		return fmt.Errorf("identity %q is not a plain name", spec.Identity)
	}
	if len(spec.Command) == 0 {
		return fmt.Errorf("bottle %s: no command", spec.Identity)
	}
	return nil
}

type handleData struct {
	Dir string `json:"dir"`
}

func (b *backend) handle(bt bottle, id string) sdk.Handle {
	data, _ := json.Marshal(handleData{Dir: bt.dir})
	return sdk.Handle{Version: handleVersion, Backend: name, Identity: id, Data: data}
}

func (b *backend) Launch(ctx context.Context, spec sdk.Spec, _ sdk.Plan, progress func(sdk.Progress)) (sdk.Handle, error) {
	if err := b.check(spec); err != nil {
		return sdk.Handle{}, err
	}
	bt := bottle{dir: filepath.Join(b.root, spec.Identity)}
	if err := bt.launch(ctx, spec, b.home, progress); err != nil {
		return sdk.Handle{}, fmt.Errorf("launch %s: %w", spec.Identity, err)
	}
	return b.handle(bt, spec.Identity), nil
}

func (b *backend) Attach(ctx context.Context, req sdk.AttachRequest, s sdk.AttachStreams) (sdk.ExitStatus, error) {
	bt, err := b.bottleOf(&req.Handle, req.Handle.Identity)
	if err != nil {
		return sdk.ExitStatus{}, err
	}
	return bt.attach(ctx, req, s)
}

// bottleOf finds the bottle a call is about. The handle's directory wins
// (root may have been reconfigured since the launch), but only when it is
// plainly a bottle directory of that identity: the core keeps handles in
// files a user can edit, and Stop removes what this returns.
func (b *backend) bottleOf(h *sdk.Handle, id string) (bottle, error) {
	if h != nil && h.Identity != "" {
		id = h.Identity
	}
	if !validName(id) {
		return bottle{}, fmt.Errorf("identity %q is not a plain name", id)
	}
	if h != nil && len(h.Data) > 0 {
		if h.Version != handleVersion {
			return bottle{}, fmt.Errorf("bottle %s: handle version %d, this plugin reads %d", id, h.Version, handleVersion)
		}
		var d handleData
		if err := json.Unmarshal(h.Data, &d); err != nil {
			return bottle{}, fmt.Errorf("bottle %s: bad handle: %w", id, err)
		}
		if filepath.IsAbs(d.Dir) && filepath.Base(d.Dir) == id {
			bt := bottle{dir: filepath.Clean(d.Dir)}
			if rec, err := bt.record(); err == nil && rec.Identity == id {
				return bt, nil
			}
		}
	}
	if b.err != nil {
		return bottle{}, b.err
	}
	return bottle{dir: filepath.Join(b.root, id)}, nil
}

func (b *backend) Stop(ctx context.Context, req sdk.StopRequest) ([]string, error) {
	bt, err := b.bottleOf(req.Handle, req.Identity)
	if err != nil {
		return nil, err
	}
	return bt.stop(ctx)
}

func (b *backend) List(context.Context) ([]sdk.Bottle, error) {
	if b.err != nil {
		return nil, b.err
	}
	found, err := listBottles(b.root)
	if err != nil {
		return nil, err
	}
	out := make([]sdk.Bottle, 0, len(found))
	for _, f := range found {
		if f.rec.Home != b.home {
			continue
		}
		h := b.handle(f.bottle, f.id)
		out = append(out, sdk.Bottle{Identity: f.id, Agent: f.rec.Agent, Status: f.status,
			StartedAt: f.rec.Created, Resources: f.resources, Handle: &h})
	}
	return out, nil
}
