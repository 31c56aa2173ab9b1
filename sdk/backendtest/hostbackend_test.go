package backendtest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/creack/pty"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// hostBackend runs each bottle's command as a host process, keeping its
// bottles as files under root so that any instance can drive any bottle. It
// exists to test the conformance suite itself: a correct backend must pass
// it, and each of its breaks must fail the item it breaks.
type hostBackend struct {
	sdk.UnimplementedBackend
	root   string
	snaps  string // where snapshots are kept: the "engine's" image store
	home   string
	break_ string
}

// The ways hostBackend can be broken, each a promise a real backend might
// get wrong.
const (
	breakExitCode        = "exit-code"              // reports 0 whatever the agent's status
	breakStopLeaves      = "stop-leaves-resource"   // Stop kills the agent but keeps its record
	breakIgnoreResize    = "ignore-resize"          // never applies a terminal resize
	breakMergedStreams   = "merged-streams"         // stderr goes to stdout
	breakStdinNeverEnds  = "stdin-never-closed"     // the agent never sees stdin's end
	breakUnknownNotFound = "notfound-as-unknown"    // a missing bottle is a plain error
	breakKillOnDetach    = "kill-on-detach"         // a detach kills the agent
	breakExecUndeclared  = "exec-undeclared"        // Exec works but Info does not declare it
	breakDeclaresExec    = "declares-unimplemented" // Info declares exec, Exec declines
	breakStatePerProcess = "state-per-process"      // a fresh process knows no earlier bottle
	breakSecretInCommit  = "secret-in-commit"       // a snapshot keeps the agent's environment
	breakNetwork         = "network-when-empty"     // the agent has the host's network
	breakWritableOutbox  = "writable-outbox"        // the queue's outbox is shared read-write
	breakListAllHomes    = "list-all-homes"         // List reports every home's bottles
	breakProjectUnmount  = "project-not-mounted"    // the agent never sees Spec.Cwd
	breakSnapshotKept    = "snapshot-not-removable" // Stop ignores RemoveSnapshots
)

type hostRecord struct {
	Identity string   `json:"identity"`
	Home     string   `json:"home"`
	Command  []string `json:"command"`
	Started  string   `json:"started"`
	Cwd      string   `json:"cwd"`
	Queue    string   `json:"queue"`
	// Env is kept in a file of its own (ext .env), as an engine keeps a
	// container's environment; a snapshot copies the record only.
	Env map[string]string `json:"env,omitempty"`
}

func (b *hostBackend) path(id, ext string) string { return filepath.Join(b.root, id+ext) }

func (b *hostBackend) Info(context.Context) (sdk.Info, error) {
	info := sdk.Info{Name: "host", Version: "0.0.1", APIVersions: []string{sdk.APIVersion}, Capabilities: []sdk.Capability{sdk.CapCommit}}
	if b.break_ == breakDeclaresExec {
		info.Capabilities = append(info.Capabilities, sdk.CapExec)
	}
	return info, nil
}

func (b *hostBackend) Prepare(_ context.Context, spec sdk.Spec) (sdk.Plan, error) {
	if len(spec.Command) == 0 {
		return sdk.Plan{}, fmt.Errorf("prepare %s: no command", spec.Identity)
	}
	plan := sdk.Plan{Preflight: []sdk.PreflightLine{{Key: "runs", Value: "on the host"}}}
	if len(spec.Egress) > 0 {
		plan.Warnings = append(plan.Warnings, "egress allowlist not applied: a host bottle has no network")
	}
	return plan, nil
}

func (b *hostBackend) Launch(_ context.Context, spec sdk.Spec, _ sdk.Plan, _ func(sdk.Progress)) (sdk.Handle, error) {
	rec, err := b.provision(spec)
	if err != nil {
		return sdk.Handle{}, fmt.Errorf("launch %s: %w", spec.Identity, err)
	}
	data, _ := json.Marshal(rec)
	env, _ := json.Marshal(spec.Env)
	if err := os.WriteFile(b.path(spec.Identity, ".env"), env, 0o600); err != nil {
		return sdk.Handle{}, fmt.Errorf("launch %s: %w", spec.Identity, err)
	}
	if err := os.WriteFile(b.path(spec.Identity, ".json"), data, 0o600); err != nil {
		return sdk.Handle{}, fmt.Errorf("launch %s: %w", spec.Identity, err)
	}
	h := sdk.Handle{Version: 1, Backend: "host", Identity: spec.Identity}
	if !spec.Detach {
		return h, nil
	}
	cmd, err := b.command(spec.Identity)
	if err != nil {
		return sdk.Handle{}, err
	}
	cmd.SysProcAttr = b.isolate(&syscall.SysProcAttr{Setpgid: true})
	logf, err := os.Create(b.path(spec.Identity, ".log"))
	if err != nil {
		return sdk.Handle{}, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := b.start(spec.Identity, cmd); err != nil {
		return sdk.Handle{}, fmt.Errorf("launch %s: %w", spec.Identity, err)
	}
	return h, nil
}

// start starts cmd and records its pid, then its exit code when it ends.
// In-process, the waiting goroutine outlives every "plugin instance".
func (b *hostBackend) start(id string, cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	b.record(id, ".pid", cmd.Process.Pid)
	go func() {
		_ = cmd.Wait()
		b.record(id, ".exit", cmd.ProcessState.ExitCode())
	}()
	return nil
}

// record writes n to the bottle's file ext, renamed into place: a reader in
// another "process" must never see it half written.
func (b *hostBackend) record(id, ext string, n int) {
	tmp := b.path(id, ext+".tmp")
	if os.WriteFile(tmp, []byte(strconv.Itoa(n)), 0o600) == nil {
		_ = os.Rename(tmp, b.path(id, ext))
	}
}

func (b *hostBackend) command(id string) (*exec.Cmd, error) {
	data, err := os.ReadFile(b.path(id, ".json"))
	if errors.Is(err, os.ErrNotExist) {
		if b.break_ == breakUnknownNotFound {
			return nil, fmt.Errorf("bottle %s: no record", id)
		}
		return nil, fmt.Errorf("bottle %s: %w", id, sdk.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	var rec hostRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("bottle %s: %w", id, err)
	}
	var env map[string]string
	if data, err := os.ReadFile(b.path(id, ".env")); err == nil {
		_ = json.Unmarshal(data, &env)
	}
	cmd := exec.Command(rec.Command[0], rec.Command[1:]...)
	cmd.Dir = rec.Cwd
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env, sdk.EnvIdentity+"="+id, sdk.EnvQueueDir+"="+rec.Queue)
	return cmd, nil
}

// isolate gives the agent a network namespace of its own (loopback only),
// when the test runs as root and the backend is not broken so.
func (b *hostBackend) isolate(a *syscall.SysProcAttr) *syscall.SysProcAttr {
	if os.Geteuid() == 0 && b.break_ != breakNetwork {
		a.Cloneflags |= syscall.CLONE_NEWNET
	}
	return a
}

func (b *hostBackend) Attach(ctx context.Context, req sdk.AttachRequest, s sdk.AttachStreams) (sdk.ExitStatus, error) {
	id := req.Handle.Identity
	cmd, err := b.command(id)
	if err != nil {
		return sdk.ExitStatus{}, err
	}
	if _, started := b.pid(id); started {
		return b.follow(ctx, id, s)
	}
	var copied chan struct{}
	if req.TTY {
		ptmx, tty, err := pty.Open()
		if err != nil {
			return sdk.ExitStatus{}, fmt.Errorf("attach %s: %w", id, err)
		}
		defer ptmx.Close()
		_ = pty.Setsize(ptmx, &pty.Winsize{Rows: req.Size.Rows, Cols: req.Size.Cols})
		cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
		cmd.SysProcAttr = b.isolate(&syscall.SysProcAttr{Setsid: true, Setctty: true})
		if err := b.start(id, cmd); err != nil {
			tty.Close()
			return sdk.ExitStatus{}, fmt.Errorf("attach %s: %w", id, err)
		}
		tty.Close()
		copied = make(chan struct{})
		go func() { _, _ = io.Copy(s.Stdout, ptmx); close(copied) }()
		if s.Stdin != nil {
			go func() { _, _ = io.Copy(ptmx, s.Stdin) }()
		}
		go func() {
			for sz := range s.Resize {
				if b.break_ != breakIgnoreResize {
					_ = pty.Setsize(ptmx, &pty.Winsize{Rows: sz.Rows, Cols: sz.Cols})
				}
			}
		}()
	} else {
		cmd.SysProcAttr = b.isolate(&syscall.SysProcAttr{Setpgid: true})
		cmd.Stdout, cmd.Stderr = s.Stdout, s.Stderr
		if b.break_ == breakMergedStreams {
			cmd.Stderr = s.Stdout
		}
		if s.Stdin != nil {
			w, err := cmd.StdinPipe()
			if err != nil {
				return sdk.ExitStatus{}, err
			}
			go func() {
				_, _ = io.Copy(w, s.Stdin)
				if b.break_ != breakStdinNeverEnds {
					w.Close()
				}
			}()
		}
		if err := b.start(id, cmd); err != nil {
			return sdk.ExitStatus{}, fmt.Errorf("attach %s: %w", id, err)
		}
	}
	st, err := b.follow(ctx, id, s) // no log: its output comes straight here
	if st.Detached && b.break_ == breakKillOnDetach {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if copied != nil && !st.Detached {
		select {
		case <-copied:
		case <-time.After(2 * time.Second):
		}
	}
	return st, err
}

// follow waits until a bottle's exit code is recorded, streaming its log
// when it has one (it was launched detached).
func (b *hostBackend) follow(ctx context.Context, id string, s sdk.AttachStreams) (sdk.ExitStatus, error) {
	log, _ := os.Open(b.path(id, ".log")) // none when an attach started it
	if log != nil {
		defer log.Close()
	}
	for {
		if log != nil {
			_, _ = io.Copy(s.Stdout, log)
		}
		if data, err := os.ReadFile(b.path(id, ".exit")); err == nil {
			if log != nil {
				_, _ = io.Copy(s.Stdout, log)
			}
			return b.status(data), nil
		}
		select {
		case <-ctx.Done():
			return sdk.ExitStatus{Detached: true}, nil
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (b *hostBackend) status(data []byte) sdk.ExitStatus {
	code, _ := strconv.Atoi(string(bytes.TrimSpace(data)))
	if b.break_ == breakExitCode {
		code = 0
	}
	return sdk.ExitStatus{Code: code}
}

func (b *hostBackend) pid(id string) (int, bool) {
	data, err := os.ReadFile(b.path(id, ".pid"))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(string(data))
	return pid, err == nil && pid > 0
}

func (b *hostBackend) Exec(ctx context.Context, req sdk.ExecRequest) (sdk.ExecResult, error) {
	if b.break_ != breakExecUndeclared {
		return sdk.ExecResult{}, fmt.Errorf("exec: %w", sdk.ErrNotSupported)
	}
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, req.Command[0], req.Command[1:]...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	_ = cmd.Run()
	return sdk.ExecResult{ExitCode: cmd.ProcessState.ExitCode(), Stdout: out.Bytes(), Stderr: errOut.Bytes()}, nil
}

func (b *hostBackend) Stop(_ context.Context, req sdk.StopRequest) ([]string, error) {
	id := req.Identity
	if req.Handle != nil && req.Handle.Identity != "" {
		id = req.Handle.Identity
	}
	var removed []string
	if pid, ok := b.pid(id); ok {
		if _, err := os.Stat(b.path(id, ".exit")); err != nil {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			removed = append(removed, fmt.Sprintf("process %d", pid))
		}
	}
	for _, ext := range []string{".pid", ".log", ".exit", ".env"} {
		_ = os.Remove(b.path(id, ext))
	}
	for _, ext := range []string{".files", ".cwd"} {
		_ = os.RemoveAll(b.path(id, ext))
	}
	if req.RemoveSnapshots && b.break_ != breakSnapshotKept {
		snaps, _ := filepath.Glob(filepath.Join(b.snaps, "snap-"+id+"-*.snap"))
		for _, s := range snaps {
			if os.Remove(s) == nil {
				removed = append(removed, "snapshot "+filepath.Base(s))
			}
			_ = os.RemoveAll(strings.TrimSuffix(s, ".snap") + ".tmp")
		}
	}
	if b.break_ != breakStopLeaves {
		if os.Remove(b.path(id, ".json")) == nil {
			removed = append(removed, "bottle "+id)
		}
	}
	return removed, nil
}

func (b *hostBackend) List(context.Context) ([]sdk.Bottle, error) {
	entries, err := os.ReadDir(b.root)
	if err != nil {
		return nil, err
	}
	var out []sdk.Bottle
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		if data, err := os.ReadFile(b.path(id, ".json")); err == nil {
			var rec hostRecord
			if json.Unmarshal(data, &rec) == nil && rec.Home != b.home && b.break_ != breakListAllHomes {
				continue
			}
		}
		status := sdk.StatusCreated
		if _, ok := b.pid(id); ok {
			status = sdk.StatusRunning
			if _, err := os.Stat(b.path(id, ".exit")); err == nil {
				status = sdk.StatusExited
			}
		}
		out = append(out, sdk.Bottle{Identity: id, Status: status, Resources: []string{b.path(id, ".json")}})
	}
	return out, nil
}

// provision makes what a bottle's agent sees in place of the guest paths,
// and its record. A host bottle has no mounts: it runs in the project (or
// a copy), its /tmp, queue and helper are host paths its arguments and
// environment are mapped to.
func (b *hostBackend) provision(spec sdk.Spec) (hostRecord, error) {
	rec := hostRecord{Identity: spec.Identity, Home: b.home, Started: time.Now().UTC().Format(time.RFC3339), Cwd: b.root}
	files := b.path(spec.Identity, ".files")
	if err := os.MkdirAll(files, 0o700); err != nil {
		return rec, err
	}
	tmp := filepath.Join(files, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return rec, err
	}
	if spec.CommittedImage != "" {
		if err := os.CopyFS(tmp, os.DirFS(filepath.Join(b.snaps, spec.CommittedImage+".tmp"))); err != nil && !errors.Is(err, os.ErrNotExist) {
			return rec, err
		}
	}
	switch {
	case spec.Cwd == "" || b.break_ == breakProjectUnmount:
	case spec.CopyCwd:
		rec.Cwd = b.path(spec.Identity, ".cwd")
		if err := os.CopyFS(rec.Cwd, os.DirFS(spec.Cwd)); err != nil {
			return rec, err
		}
	default:
		rec.Cwd = spec.Cwd
	}
	if spec.QueueDir != "" {
		// The agent's queue: the inbox is the host's, the rest a private
		// copy, so that nothing it writes outside the inbox reaches the core.
		rec.Queue = filepath.Join(files, "queue")
		if err := os.CopyFS(rec.Queue, os.DirFS(spec.QueueDir)); err != nil {
			return rec, err
		}
		shared := []string{sdk.QueueInbox}
		if b.break_ == breakWritableOutbox {
			shared = append(shared, "outbox")
		}
		for _, d := range shared {
			_ = os.RemoveAll(filepath.Join(rec.Queue, d))
			if err := os.Symlink(filepath.Join(spec.QueueDir, d), filepath.Join(rec.Queue, d)); err != nil {
				return rec, err
			}
		}
	}
	helper := ""
	if spec.HelperBinary != "" {
		data, err := os.ReadFile(spec.HelperBinary)
		if err != nil {
			return rec, err
		}
		helper = filepath.Join(files, "bottle")
		if err := os.WriteFile(helper, data, 0o555); err != nil {
			return rec, err
		}
	}
	for _, a := range spec.Command {
		switch {
		case a == sdk.GuestHelperPath && helper != "":
			a = helper
		case a == sdk.GuestQueueDir && rec.Queue != "":
			a = rec.Queue
		case strings.HasPrefix(a, "/tmp/"):
			a = filepath.Join(files, a)
		}
		rec.Command = append(rec.Command, a)
	}
	return rec, nil
}

// Commit snapshots the bottle's record (never its environment, which an
// engine keeps with the container, unless broken so).
func (b *hostBackend) Commit(_ context.Context, h sdk.Handle, _ string) (sdk.CommitResult, error) {
	data, err := os.ReadFile(b.path(h.Identity, ".json"))
	if err != nil {
		return sdk.CommitResult{}, fmt.Errorf("commit %s: %w", h.Identity, sdk.ErrNotFound)
	}
	if b.break_ == breakSecretInCommit {
		var rec hostRecord
		_ = json.Unmarshal(data, &rec)
		env, _ := os.ReadFile(b.path(h.Identity, ".env"))
		_ = json.Unmarshal(env, &rec.Env)
		data, _ = json.Marshal(rec)
	}
	ref := fmt.Sprintf("snap-%s-%d", h.Identity, time.Now().UnixNano())
	if err := os.CopyFS(filepath.Join(b.snaps, ref+".tmp"), os.DirFS(filepath.Join(b.path(h.Identity, ".files"), "tmp"))); err != nil {
		return sdk.CommitResult{}, fmt.Errorf("commit %s: %w", h.Identity, err)
	}
	if err := os.WriteFile(filepath.Join(b.snaps, ref+".snap"), data, 0o600); err != nil {
		return sdk.CommitResult{}, fmt.Errorf("commit %s: %w", h.Identity, err)
	}
	return sdk.CommitResult{Image: ref}, nil
}

// removeSnapshot is the harness's RemoveSnapshot for host snapshots.
func removeSnapshot(root, ref string) error {
	_ = os.RemoveAll(filepath.Join(root, ref+".tmp"))
	return os.Remove(filepath.Join(root, ref+".snap"))
}

// snapshotContains is the harness's look into a host snapshot.
func snapshotContains(root, ref, needle string) (bool, error) {
	data, err := os.ReadFile(filepath.Join(root, ref+".snap"))
	if errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("snapshot %s: %w", ref, sdk.ErrNotFound)
	}
	return strings.Contains(string(data), needle), err
}
