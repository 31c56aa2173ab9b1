// Package testbackend is a backend for the core's tests: it runs each
// bottle's command as a host process (no isolation at all — never ship it).
// It keeps its bottles under a root directory so that any plugin process
// can drive any bottle, as the SDK requires. It declares the exec
// capability, and commit when asked to. Flows' unit tests serve it in
// process (backendtest.InProcess); internal/testplugin builds it as the
// bot-bottle-plugin-test binary the CLI scripts drive.
//
// Its "build" honours one thing of a per-bottle Dockerfile: a RUN line
// whose command is `false` or `exit N` fails the launch the way a failing
// docker build does, so that the failure paths of the rebuild loop can be
// tested without an engine.
//
// Knobs for tests, all environment variables:
//
//	BB_TESTPLUGIN_ROOT          where bottles are kept (required)
//	BB_TESTPLUGIN_LAUNCH_DELAY  a duration Launch spends "building"
//	BB_TESTPLUGIN_HANG_LIST     when set, List never answers
//	BB_TESTPLUGIN_COMMIT        when 1, declare and serve commit
//	BB_TESTPLUGIN_QUEUE_SYNC    when 1, each bottle has a queue of its own
//	                            that SyncQueue moves (sdk.CapQueueSync)
//	BB_TESTPLUGIN_IMAGE_USER    the image user every launch reports
package testbackend

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
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

// Version is what Info reports.
const Version = "0.3.1-test"

// Options choose the optional features the backend declares.
type Options struct {
	Commit bool
	// QueueSync gives each bottle a queue of its own, as a bottle on a remote
	// machine has, which SyncQueue moves to and from Spec.QueueDir
	// (sdk.CapQueueSync).
	QueueSync bool
	// ImageUser is the USER every launch reports its image has
	// (sdk.Handle.ImageUser); "" says it cannot tell, as an earlier plugin.
	ImageUser string
}

// New returns the backend keeping its bottles under root.
func New(root string, o Options) sdk.Backend {
	b := &backend{root: root, queueSync: o.QueueSync, imageUser: o.ImageUser}
	if o.Commit {
		return &committer{b}
	}
	return b
}

// FromEnv is New configured by the BB_TESTPLUGIN_* variables.
func FromEnv() sdk.Backend {
	return New(os.Getenv("BB_TESTPLUGIN_ROOT"), Options{Commit: os.Getenv("BB_TESTPLUGIN_COMMIT") == "1",
		QueueSync: os.Getenv("BB_TESTPLUGIN_QUEUE_SYNC") == "1", ImageUser: os.Getenv("BB_TESTPLUGIN_IMAGE_USER")})
}

type backend struct {
	sdk.UnimplementedBackend
	root      string
	queueSync bool
	imageUser string
}

// record is what the plugin keeps per bottle (its "runtime" state). Secret
// env values live in a separate 0600 file, never in the handle.
type record struct {
	Identity string   `json:"identity"`
	Agent    string   `json:"agent"`
	Command  []string `json:"command"`
	Cwd      string   `json:"cwd"`
	Queue    string   `json:"queue"`
	Started  string   `json:"started"`
}

func (b *backend) dir() string { return filepath.Join(b.root, "bottles") }

func (b *backend) path(id, ext string) string { return filepath.Join(b.dir(), id+ext) }

// checkIdentity keeps anything but a valid identity from naming a file.
func checkIdentity(id string) error { return sdk.CheckName("identity", id) }

func (b *backend) Info(context.Context) (sdk.Info, error) {
	caps := []sdk.Capability{sdk.CapExec}
	if b.queueSync {
		caps = append(caps, sdk.CapQueueSync)
	}
	return sdk.Info{
		Name: "test", Version: Version, APIVersions: []string{sdk.APIVersion},
		Capabilities: caps,
		Details:      map[string]string{"root": b.root},
	}, nil
}

func (b *backend) Prepare(_ context.Context, spec sdk.Spec) (sdk.Plan, error) {
	if b.root == "" {
		return sdk.Plan{}, errors.New("BB_TESTPLUGIN_ROOT is not set")
	}
	if err := checkIdentity(spec.Identity); err != nil {
		return sdk.Plan{}, err
	}
	src := "agent image " + spec.Agent.Image
	if spec.Agent.Dockerfile != "" {
		src = "agent Dockerfile " + spec.Agent.Dockerfile
	}
	if spec.BottleDockerfile != "" {
		src = "per-bottle Dockerfile"
	}
	plan := sdk.Plan{Preflight: []sdk.PreflightLine{
		{Key: "image", Value: src},
		{Key: "project", Value: orNone(spec.Cwd)},
		{Key: "egress", Value: orNone(strings.Join(spec.Egress, ", "))},
		{Key: "env", Value: orNone(strings.Join(spec.Agent.EnvNames, ", "))},
	}}
	return plan, nil
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func (b *backend) Launch(ctx context.Context, spec sdk.Spec, _ sdk.Plan, progress func(sdk.Progress)) (sdk.Handle, error) {
	if err := checkIdentity(spec.Identity); err != nil {
		return sdk.Handle{}, err
	}
	if err := os.MkdirAll(b.dir(), 0o700); err != nil {
		return sdk.Handle{}, err
	}
	// Tests kill this process mid-launch; they find it here. Written whole
	// and renamed into place: a test that sees the file reads the pid.
	pidFile := filepath.Join(b.root, "launch.pid")
	if os.WriteFile(pidFile+".tmp", []byte(strconv.Itoa(os.Getpid())), 0o600) == nil {
		_ = os.Rename(pidFile+".tmp", pidFile)
	}
	rec := record{Identity: spec.Identity, Agent: spec.Agent.Name, Command: spec.Command, Cwd: spec.Cwd, Queue: spec.QueueDir,
		Started: time.Now().UTC().Format(time.RFC3339)}
	if spec.Cwd != "" && spec.CopyCwd {
		// A copy the agent works in: the host's project is never written.
		rec.Cwd = b.path(spec.Identity, ".cwd")
		_ = os.RemoveAll(rec.Cwd)
		if err := os.CopyFS(rec.Cwd, os.DirFS(spec.Cwd)); err != nil {
			return sdk.Handle{}, fmt.Errorf("launch %s: copy the project: %w", spec.Identity, err)
		}
	}
	if b.queueSync {
		rec.Queue = b.remoteQueue(spec.Identity)
		for _, d := range []string{rec.Queue, filepath.Join(rec.Queue, "inbox"), filepath.Join(rec.Queue, "outbox")} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				return sdk.Handle{}, fmt.Errorf("launch %s: %w", spec.Identity, err)
			}
		}
	}
	data, _ := json.Marshal(rec)
	if err := os.WriteFile(b.path(spec.Identity, ".json"), data, 0o600); err != nil {
		return sdk.Handle{}, err
	}
	env, _ := json.Marshal(spec.Env)
	if err := os.WriteFile(b.path(spec.Identity, ".env"), env, 0o600); err != nil {
		return sdk.Handle{}, err
	}
	delay, _ := time.ParseDuration(os.Getenv("BB_TESTPLUGIN_LAUNCH_DELAY"))
	const steps = 3
	for i := 1; i <= steps; i++ {
		progress(sdk.Progress{Stage: "build", Message: "building", Current: int64(i), Total: steps})
		select {
		case <-ctx.Done():
			return sdk.Handle{}, ctx.Err()
		case <-time.After(delay / steps):
		}
	}
	if err := failingRun(spec.BottleDockerfile); err != nil {
		return sdk.Handle{}, err
	}
	h := sdk.Handle{Version: 1, Backend: "test", Identity: spec.Identity, Data: []byte(spec.Identity), ImageUser: b.imageUser}
	if spec.Detach {
		logf, err := os.Create(b.path(spec.Identity, ".log"))
		if err != nil {
			return sdk.Handle{}, err
		}
		defer logf.Close()
		cmd, err := b.command(spec.Identity)
		if err != nil {
			return sdk.Handle{}, err
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			return sdk.Handle{}, err
		}
		_ = os.WriteFile(b.path(spec.Identity, ".pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600)
		go func() { _ = cmd.Wait() }()
	}
	return h, nil
}

func (b *backend) load(id string) (record, map[string]string, error) {
	var rec record
	if err := checkIdentity(id); err != nil {
		return rec, nil, err
	}
	data, err := os.ReadFile(b.path(id, ".json"))
	if errors.Is(err, os.ErrNotExist) {
		return rec, nil, fmt.Errorf("bottle %s: %w", id, sdk.ErrNotFound)
	}
	if err != nil {
		return rec, nil, err
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		return rec, nil, err
	}
	env := map[string]string{}
	if data, err := os.ReadFile(b.path(id, ".env")); err == nil {
		_ = json.Unmarshal(data, &env)
	}
	return rec, env, nil
}

func (b *backend) command(id string) (*exec.Cmd, error) {
	rec, env, err := b.load(id)
	if err != nil {
		return nil, err
	}
	if len(rec.Command) == 0 {
		return nil, fmt.Errorf("bottle %s has no command", id)
	}
	// A shell around the agent records its exit code: the plugin process
	// that started it may be long gone when someone attaches and asks.
	cmd := exec.Command("/bin/sh", append([]string{"-c", `"$@"; c=$?; echo $c > "$0"; exit $c`, b.path(id, ".exit")}, rec.Command...)...)
	cmd.Dir = rec.Cwd
	if cmd.Dir == "" {
		cmd.Dir = b.root
	}
	// A host process sees the queue at its host path, not sdk.GuestQueueDir.
	cmd.Env = append(os.Environ(), sdk.EnvIdentity+"="+id, sdk.EnvQueueDir+"="+rec.Queue)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd, nil
}

func (b *backend) Attach(ctx context.Context, req sdk.AttachRequest, s sdk.AttachStreams) (sdk.ExitStatus, error) {
	id := req.Handle.Identity
	cmd, err := b.command(id)
	if err != nil {
		return sdk.ExitStatus{}, err
	}
	if pid, ok := b.pid(id); ok {
		// Started before (detached, or by an attach that detached):
		// follow it until it exits.
		return b.follow(ctx, id, pid, s)
	}
	if req.TTY {
		return b.attachTTY(ctx, id, cmd, req.Size, s)
	}
	if s.Stdin != nil {
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return sdk.ExitStatus{}, err
		}
		go func() { _, _ = io.Copy(stdin, s.Stdin); stdin.Close() }()
	}
	cmd.Stdout, cmd.Stderr = s.Stdout, s.Stderr
	if err := cmd.Start(); err != nil {
		return sdk.ExitStatus{}, fmt.Errorf("start %s: %w", id, err)
	}
	_ = os.WriteFile(b.path(id, ".pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600)
	return wait(ctx, cmd, nil)
}

// wait returns cmd's exit status, or Detached when ctx ends first (the
// agent goes on). drained, when set, is closed once its last output was
// copied: a pty's is read after the exit, so it gets a moment.
func wait(ctx context.Context, cmd *exec.Cmd, drained <-chan struct{}) (sdk.ExitStatus, error) {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-ctx.Done():
		return sdk.ExitStatus{Detached: true}, nil
	case err := <-done:
		if drained != nil {
			select {
			case <-drained:
			case <-time.After(2 * time.Second):
			}
		}
		return exitStatus(err)
	}
}

// attachTTY runs the command on a pty of the requested size and follows
// resizes, like a real backend's terminal session.
func (b *backend) attachTTY(ctx context.Context, id string, cmd *exec.Cmd, size sdk.TermSize, s sdk.AttachStreams) (sdk.ExitStatus, error) {
	cmd.SysProcAttr = nil // pty.Start makes it a session leader instead
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: size.Rows, Cols: size.Cols})
	if err != nil {
		return sdk.ExitStatus{}, fmt.Errorf("start %s: %w", id, err)
	}
	_ = os.WriteFile(b.path(id, ".pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600)
	copied := make(chan struct{})
	go func() { _, _ = io.Copy(s.Stdout, ptmx); close(copied) }()
	if s.Stdin != nil {
		go func() { _, _ = io.Copy(ptmx, s.Stdin) }()
	}
	go func() {
		for sz := range s.Resize {
			_ = pty.Setsize(ptmx, &pty.Winsize{Rows: sz.Rows, Cols: sz.Cols})
		}
	}()
	st, err := wait(ctx, cmd, copied)
	if !st.Detached {
		ptmx.Close()
	}
	return st, err
}

func exitStatus(err error) (sdk.ExitStatus, error) {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return sdk.ExitStatus{Code: 128 + int(ws.Signal())}, nil
		}
		return sdk.ExitStatus{Code: ee.ExitCode()}, nil
	}
	if err != nil {
		return sdk.ExitStatus{}, err
	}
	return sdk.ExitStatus{}, nil
}

func (b *backend) follow(ctx context.Context, id string, pid int, s sdk.AttachStreams) (sdk.ExitStatus, error) {
	// No log when an attach started it: its output went to that attach.
	f, _ := os.Open(b.path(id, ".log"))
	if f != nil {
		defer f.Close()
	}
	copyLog := func() {
		if f != nil && s.Stdout != nil {
			_, _ = io.Copy(s.Stdout, f)
		}
	}
	for {
		copyLog()
		if !alive(pid) {
			copyLog()
			// The shell wrote it before it exited; none means it was killed.
			data, err := os.ReadFile(b.path(id, ".exit"))
			if err != nil {
				return sdk.ExitStatus{Code: 128 + int(syscall.SIGKILL)}, nil
			}
			code, _ := strconv.Atoi(strings.TrimSpace(string(data)))
			return sdk.ExitStatus{Code: code}, nil
		}
		select {
		case <-ctx.Done():
			return sdk.ExitStatus{Detached: true}, nil
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (b *backend) pid(id string) (int, bool) {
	data, err := os.ReadFile(b.path(id, ".pid"))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid, err == nil && pid > 0
}

func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	// A zombie child of a dead plugin process still answers kill(0).
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

func (b *backend) Stop(_ context.Context, req sdk.StopRequest) ([]string, error) {
	id := req.Identity
	if req.Handle != nil && req.Handle.Identity != "" {
		id = req.Handle.Identity
	}
	if err := checkIdentity(id); err != nil {
		return nil, fmt.Errorf("stop: %w", err)
	}
	var removed []string
	if pid, ok := b.pid(id); ok && alive(pid) {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		removed = append(removed, fmt.Sprintf("process %d", pid))
	}
	for _, ext := range []string{".json", ".env", ".pid", ".log", ".exit"} {
		if err := os.Remove(b.path(id, ext)); err == nil && ext == ".json" {
			removed = append(removed, "bottle "+id)
		}
	}
	_ = os.RemoveAll(b.path(id, ".cwd"))
	_ = os.RemoveAll(b.remoteQueue(id))
	if req.RemoveSnapshots {
		for _, ref := range b.snapshots(id) {
			removed = append(removed, "snapshot "+ref)
		}
		_ = os.Remove(b.snapshotFile(id))
	}
	return removed, nil
}

func (b *backend) List(ctx context.Context) ([]sdk.Bottle, error) {
	if os.Getenv("BB_TESTPLUGIN_HANG_LIST") != "" {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	entries, err := os.ReadDir(b.dir())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []sdk.Bottle
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		rec, _, err := b.load(id)
		if err != nil {
			continue
		}
		status := sdk.StatusCreated
		if pid, ok := b.pid(id); ok {
			status = sdk.StatusExited
			if alive(pid) {
				status = sdk.StatusRunning
			}
		}
		h := sdk.Handle{Version: 1, Backend: "test", Identity: id, Data: []byte(id)}
		out = append(out, sdk.Bottle{Identity: id, Agent: rec.Agent, Status: status, StartedAt: rec.Started, Handle: &h,
			Snapshots: b.snapshots(id)})
	}
	snaps, _ := os.ReadDir(filepath.Join(b.root, "snapshots"))
	for _, e := range snaps {
		id := e.Name()
		if _, err := os.Stat(b.path(id, ".json")); err == nil {
			continue
		}
		if refs := b.snapshots(id); len(refs) > 0 {
			out = append(out, sdk.Bottle{Identity: id, Status: sdk.StatusSnapshot, Snapshots: refs})
		}
	}
	return out, nil
}

// failingRun is the test backend's whole "build" of a per-bottle
// Dockerfile: the first RUN whose command is false or exit N fails it.
func failingRun(dockerfile string) error {
	if dockerfile == "" {
		return nil
	}
	f, err := os.Open(dockerfile)
	if err != nil {
		return fmt.Errorf("build: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		cmd, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "RUN ")
		if !ok {
			continue
		}
		cmd = strings.TrimSpace(cmd)
		code := ""
		if cmd == "false" {
			code = "1"
		} else if n, ok := strings.CutPrefix(cmd, "exit "); ok {
			code = strings.TrimSpace(n)
		}
		if code != "" && code != "0" {
			return fmt.Errorf("build: The command '/bin/sh -c %s' returned a non-zero code: %s", cmd, code)
		}
	}
	return sc.Err()
}

func (b *backend) snapshotFile(id string) string { return filepath.Join(b.root, "snapshots", id) }

// snapshots are the refs Commit recorded for id, oldest first.
func (b *backend) snapshots(id string) []string {
	data, err := os.ReadFile(b.snapshotFile(id))
	if err != nil {
		return nil
	}
	return strings.Fields(string(data))
}

// committer is the backend with the commit capability: a snapshot is a
// reference it records, which List reports and Stop removes only when the
// bottle is removed for good.
type committer struct{ *backend }

func (c *committer) Info(ctx context.Context) (sdk.Info, error) {
	info, err := c.backend.Info(ctx)
	info.Capabilities = append(info.Capabilities, sdk.CapCommit)
	return info, err
}

func (c *committer) Commit(_ context.Context, h sdk.Handle, _ string) (sdk.CommitResult, error) {
	if _, _, err := c.load(h.Identity); err != nil {
		return sdk.CommitResult{}, err
	}
	if err := os.MkdirAll(filepath.Join(c.root, "snapshots"), 0o700); err != nil {
		return sdk.CommitResult{}, err
	}
	refs := c.snapshots(h.Identity)
	ref := fmt.Sprintf("test/%s:%d", h.Identity, len(refs)+1)
	refs = append(refs, ref)
	if err := os.WriteFile(c.snapshotFile(h.Identity), []byte(strings.Join(refs, "\n")+"\n"), 0o600); err != nil {
		return sdk.CommitResult{}, err
	}
	return sdk.CommitResult{Image: ref}, nil
}

func (b *backend) Exec(ctx context.Context, req sdk.ExecRequest) (sdk.ExecResult, error) {
	rec, _, err := b.load(req.Handle.Identity)
	if err != nil {
		return sdk.ExecResult{}, err
	}
	if len(req.Command) == 0 {
		return sdk.ExecResult{}, errors.New("exec: empty command")
	}
	cmd := exec.CommandContext(ctx, req.Command[0], req.Command[1:]...)
	cmd.Dir = rec.Cwd
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	st, err := exitStatus(cmd.Run())
	if err != nil {
		return sdk.ExecResult{}, err
	}
	return sdk.ExecResult{ExitCode: st.Code, Stdout: []byte(out.String()), Stderr: []byte(errb.String())}, nil
}

// remoteQueue is the queue a QueueSync bottle sees instead of Spec.QueueDir.
func (b *backend) remoteQueue(id string) string { return filepath.Join(b.root, "remote", id) }

// SyncQueue moves the requests the bottle finished writing into queueDir's
// inbox (and out of its own) and copies the host's receipts into the
// bottle's outbox, as a backend that reaches its bottles over a network
// would.
func (b *backend) SyncQueue(_ context.Context, h sdk.Handle, queueDir string) error {
	if !b.queueSync {
		return fmt.Errorf("sync queue: %w", sdk.ErrNotSupported)
	}
	if _, _, err := b.load(h.Identity); err != nil {
		return err
	}
	remote := b.remoteQueue(h.Identity)
	if err := moveFiles(filepath.Join(remote, "inbox"), filepath.Join(queueDir, "inbox"), filepath.Join(queueDir, "outbox")); err != nil {
		return fmt.Errorf("sync queue of %s: %w", h.Identity, err)
	}
	if err := moveFiles(filepath.Join(queueDir, "outbox"), filepath.Join(remote, "outbox"), ""); err != nil {
		return fmt.Errorf("sync queue of %s: %w", h.Identity, err)
	}
	return nil
}

// moveFiles copies every finished file of from into to (a temp name is a
// helper still writing). With receipts (the host's outbox) it moves
// requests: one that to lacks and the host has no receipt for (not
// ingested yet: a racing sync may have brought it in already), then deletes
// it from from. Without, it copies receipts whenever to's differs, since the
// host rewrites a receipt when the request is decided.
func moveFiles(from, to, receipts string) error {
	remove := receipts != ""
	ents, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	for _, e := range ents {
		name := e.Name()
		if !e.Type().IsRegular() || strings.HasPrefix(name, ".") {
			continue
		}
		src, dst := filepath.Join(from, name), filepath.Join(to, name)
		have, err := os.ReadFile(dst)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		ingested := false
		if remove {
			_, rerr := os.Lstat(filepath.Join(receipts, name))
			ingested = rerr == nil
		}
		if (err != nil && !ingested) || !remove {
			data, err := os.ReadFile(src)
			if errors.Is(err, fs.ErrNotExist) {
				continue // another syncer moved it
			}
			if err != nil {
				return err
			}
			if !bytes.Equal(data, have) {
				tmp := filepath.Join(to, fmt.Sprintf(".tmp-sync-%d-%s", os.Getpid(), name))
				if err := os.WriteFile(tmp, data, 0o644); err != nil {
					return err
				}
				if err := os.Rename(tmp, dst); err != nil {
					return err
				}
			}
		}
		if remove {
			if err := os.Remove(src); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}
