package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"

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
	err  error // a bad plugin config, reported by every call that needs root
}

// config is the plugin block of plugins.hcl:
//
//	plugin "skeleton" {
//	  config { root = "/var/tmp/skeleton-bottles" }
//	}
type config struct {
	Root string `json:"root"`
}

func newBackend(raw json.RawMessage, homeID string) *backend {
	b := &backend{}
	var c config
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		b.err = fmt.Errorf("plugin config: %w", err)
		return b
	}
	b.root = c.Root
	if b.root == "" {
		b.root, b.err = defaultRoot(homeID)
	} else if !filepath.IsAbs(b.root) {
		b.err = fmt.Errorf("plugin config: root %q is not an absolute path", b.root)
	}
	return b
}

// defaultRoot is $XDG_STATE_HOME (or ~/.local/state) /bot-bottle-skeleton/
// <home id>: one root per bot-bottle home, so that List reports only the
// bottles of the home that asks, as sdk.HomeID requires.
func defaultRoot(homeID string) (string, error) {
	base := os.Getenv("XDG_STATE_HOME")
	if !filepath.IsAbs(base) {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("no root for bottles: %w", err)
		}
		base = filepath.Join(home, ".local", "state")
	}
	if homeID == "" {
		homeID = "default"
	}
	if !validName(homeID) {
		return "", fmt.Errorf("home id %q is not a plain name", homeID)
	}
	return filepath.Join(base, "bot-bottle-skeleton", homeID), nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// validName keeps an identity from naming anything but a directory right
// under root.
func validName(s string) bool { return nameRE.MatchString(s) }

func (b *backend) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{
		Name:        name,
		Version:     version,
		APIVersions: []string{sdk.APIVersion},
		Details:     map[string]string{"root": b.root, "network": "none"},
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
		{Key: "isolation", Value: "host binaries in new user, mount, pid, network, uts and ipc namespaces"},
		{Key: "network", Value: "none (loopback only)"},
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
	plan.Warnings = append(plan.Warnings, "the agent runs as you and sees your files: skeleton isolates processes, network, hostname and IPC, not the filesystem")
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

func imageSource(spec sdk.Spec) string {
	switch {
	case spec.CommittedImage != "":
		return "committed image " + spec.CommittedImage
	case spec.BottleDockerfile != "":
		return "the per-bottle Dockerfile"
	case spec.Agent.Dockerfile != "":
		return "the agent's Dockerfile " + spec.Agent.Dockerfile
	case spec.Agent.Image != "":
		return "the agent's image " + spec.Agent.Image
	}
	return ""
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

type handleData struct {
	Dir string `json:"dir"`
}

func (b *backend) Launch(ctx context.Context, spec sdk.Spec, _ sdk.Plan, progress func(sdk.Progress)) (h sdk.Handle, err error) {
	if err := b.check(spec); err != nil {
		return sdk.Handle{}, err
	}
	if err := os.MkdirAll(b.root, 0o700); err != nil {
		return sdk.Handle{}, err
	}
	bt := bottle{dir: filepath.Join(b.root, spec.Identity)}
	if err := os.Mkdir(bt.dir, 0o700); err != nil {
		// The core stops a bottle before it reuses its identity.
		return sdk.Handle{}, fmt.Errorf("launch %s: %w", spec.Identity, err)
	}
	var initCmd *exec.Cmd
	defer func() {
		// Launch cleans up after itself; Stop by identity would too.
		if err != nil {
			if initCmd != nil {
				_ = initCmd.Process.Kill()
			}
			_ = os.RemoveAll(bt.dir)
		}
	}()

	cwd := spec.Cwd
	if cwd == "" || spec.CopyCwd {
		cwd = bt.path(dirWork)
		if spec.CopyCwd {
			progress(sdk.Progress{Stage: "copy", Message: "copying " + spec.Cwd})
			err = os.CopyFS(cwd, os.DirFS(spec.Cwd))
		} else {
			err = os.Mkdir(cwd, 0o700)
		}
		if err != nil {
			return sdk.Handle{}, fmt.Errorf("launch %s: project: %w", spec.Identity, err)
		}
	}
	if spec.HelperBinary != "" {
		if err = os.Mkdir(bt.path(dirBin), 0o700); err == nil {
			err = os.Symlink(spec.HelperBinary, filepath.Join(bt.path(dirBin), "bottle"))
		}
		if err != nil {
			return sdk.Handle{}, fmt.Errorf("launch %s: helper: %w", spec.Identity, err)
		}
	}
	rec := record{Identity: spec.Identity, Agent: spec.Agent.Name, Command: spec.Command, Cwd: cwd,
		TTY: spec.TTY, Detach: spec.Detach, Created: time.Now().UTC().Format(time.RFC3339)}
	if err = bt.writeRecord(rec); err != nil {
		return sdk.Handle{}, err
	}
	if err = syscall.Mkfifo(bt.path(fileStdin), 0o600); err != nil {
		return sdk.Handle{}, fmt.Errorf("launch %s: stdin: %w", spec.Identity, err)
	}

	progress(sdk.Progress{Stage: "namespaces", Message: "creating user, mount, pid, network, uts and ipc namespaces"})
	initCmd, err = b.startInit(ctx, bt, agentEnv(spec, bt))
	if err != nil {
		return sdk.Handle{}, fmt.Errorf("launch %s: %w", spec.Identity, err)
	}
	data, _ := json.Marshal(handleData{Dir: bt.dir})
	return sdk.Handle{Version: handleVersion, Backend: name, Identity: spec.Identity, Data: data}, nil
}

// startInit starts the bottle's init (this binary, see init.go) in new
// namespaces and waits until it is ready: namespaces set up and files made.
// The init then starts the agent (Detach) or waits for the first Attach.
func (b *backend) startInit(ctx context.Context, bt bottle, env []string) (*exec.Cmd, error) {
	// The init reports a setup failure on this pipe and closes it when
	// ready, so Launch can say what went wrong instead of leaving a dead
	// bottle behind.
	ready, readyW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer ready.Close()
	uid, gid := os.Getuid(), os.Getgid()
	cmd := &exec.Cmd{
		// The init is this very binary; /proc/self/exe names it even when
		// it was started through a relative path or replaced on disk.
		Path:       "/proc/self/exe",
		Args:       []string{initName, bt.dir},
		Env:        env, // the agent's: the init passes its own environment on
		ExtraFiles: []*os.File{readyW},
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID |
				syscall.CLONE_NEWNET | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC,
			// Root in the bottle is the caller outside it (like
			// `unshare -r`): no privileges, no subordinate id ranges, and
			// the init can still set up its namespaces. Its files on the
			// host are the caller's own.
			UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}},
			GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: gid, Size: 1}},
			GidMappingsEnableSetgroups: false,
			// Its own session: the caller's terminal signals (Ctrl-C in the
			// core's process group) never reach a bottle directly.
			Setsid: true,
		},
	}
	err = cmd.Start()
	readyW.Close()
	if err != nil {
		return nil, fmt.Errorf("start namespaces: %w", err)
	}
	// This process reaps the init if it exits first; when this process
	// goes, the init lives on (a detached bottle must).
	go func() { _ = cmd.Wait() }()
	_ = ready.SetReadDeadline(time.Now().Add(30 * time.Second))
	stopRead := context.AfterFunc(ctx, func() { _ = ready.SetReadDeadline(time.Now()) })
	defer stopRead()
	var msg bytes.Buffer
	_, err = msg.ReadFrom(ready)
	switch {
	case msg.Len() > 0:
		return cmd, fmt.Errorf("bottle setup: %s", strings.TrimSpace(msg.String()))
	case ctx.Err() != nil:
		return cmd, ctx.Err()
	case err != nil:
		return cmd, fmt.Errorf("bottle setup: no answer from its init: %w", err)
	}
	return cmd, nil
}

// agentEnv is the agent's whole environment. Not the plugin's: that is the
// core's, with whatever the user exported, and a bottle gets only the
// values its agent definition names (Spec.Env), plus what a host program
// needs and the bottle's own variables.
func agentEnv(spec sdk.Spec, bt bottle) []string {
	var env []string
	for _, k := range []string{"HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/bin:/usr/bin:/bin"
	}
	if spec.HelperBinary != "" {
		path = bt.path(dirBin) + ":" + path
	}
	env = append(env, "PATH="+path)
	if spec.TTY {
		term := os.Getenv("TERM")
		if term == "" || term == "dumb" {
			term = "xterm-256color"
		}
		env = append(env, "TERM="+term)
	}
	env = append(env, sdk.EnvIdentity+"="+spec.Identity)
	if spec.QueueDir != "" {
		// The host path: a host process has no sdk.GuestQueueDir.
		env = append(env, sdk.EnvQueueDir+"="+spec.QueueDir)
	}
	keys := make([]string, 0, len(spec.Env))
	for k := range spec.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+spec.Env[k])
	}
	return env
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
	if _, err := os.Lstat(bt.dir); errors.Is(err, os.ErrNotExist) {
		return nil, nil // nothing left: Stop is repeatable
	}
	var removed []string
	if p, ok := bt.proc(); ok && p.alive() {
		// The init is pid 1 of the bottle's pid namespace: when it dies,
		// the kernel kills every other process in there, however deep.
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
		for p.alive() {
			select {
			case <-ctx.Done():
				return removed, fmt.Errorf("stop %s: init %d still alive: %w", filepath.Base(bt.dir), p.pid, ctx.Err())
			case <-time.After(10 * time.Millisecond):
			}
		}
		removed = append(removed, fmt.Sprintf("process %d (and its pid namespace)", p.pid))
	}
	if err := os.RemoveAll(bt.dir); err != nil {
		return removed, fmt.Errorf("stop %s: %w", filepath.Base(bt.dir), err)
	}
	return append(removed, bt.dir), nil
}

func (b *backend) List(context.Context) ([]sdk.Bottle, error) {
	if b.err != nil {
		return nil, b.err
	}
	entries, err := os.ReadDir(b.root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []sdk.Bottle
	for _, e := range entries {
		if !e.IsDir() || !validName(e.Name()) {
			continue
		}
		bt := bottle{dir: filepath.Join(b.root, e.Name())}
		// A bottle whose launch died half way has no record yet; list it
		// anyway, so that the core's prune stops it.
		rec, _ := bt.record()
		data, _ := json.Marshal(handleData{Dir: bt.dir})
		h := sdk.Handle{Version: handleVersion, Backend: name, Identity: e.Name(), Data: data}
		res := []string{bt.dir}
		if p, ok := bt.proc(); ok && p.alive() {
			res = append(res, fmt.Sprintf("process %d", p.pid))
		}
		out = append(out, sdk.Bottle{Identity: e.Name(), Agent: rec.Agent, Status: bt.status(),
			StartedAt: rec.Created, Resources: res, Handle: &h})
	}
	return out, nil
}
