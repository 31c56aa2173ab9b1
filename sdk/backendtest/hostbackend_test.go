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
)

type hostRecord struct {
	Identity string   `json:"identity"`
	Command  []string `json:"command"`
	Started  string   `json:"started"`
}

func (b *hostBackend) path(id, ext string) string { return filepath.Join(b.root, id+ext) }

func (b *hostBackend) Info(context.Context) (sdk.Info, error) {
	info := sdk.Info{Name: "host", Version: "0.0.1", APIVersions: []string{sdk.APIVersion}}
	if b.break_ == breakDeclaresExec {
		info.Capabilities = []sdk.Capability{sdk.CapExec}
	}
	return info, nil
}

func (b *hostBackend) Prepare(_ context.Context, spec sdk.Spec) (sdk.Plan, error) {
	if len(spec.Command) == 0 {
		return sdk.Plan{}, fmt.Errorf("prepare %s: no command", spec.Identity)
	}
	return sdk.Plan{Preflight: []sdk.PreflightLine{{Key: "runs", Value: "on the host"}}}, nil
}

func (b *hostBackend) Launch(_ context.Context, spec sdk.Spec, _ sdk.Plan, _ func(sdk.Progress)) (sdk.Handle, error) {
	rec, _ := json.Marshal(hostRecord{Identity: spec.Identity, Command: spec.Command, Started: time.Now().UTC().Format(time.RFC3339)})
	if err := os.WriteFile(b.path(spec.Identity, ".json"), rec, 0o600); err != nil {
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
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
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
	_ = os.WriteFile(b.path(id, ".pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600)
	go func() {
		_ = cmd.Wait()
		_ = os.WriteFile(b.path(id, ".exit"), []byte(strconv.Itoa(cmd.ProcessState.ExitCode())), 0o600)
	}()
	return nil
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
	cmd := exec.Command(rec.Command[0], rec.Command[1:]...)
	cmd.Dir = b.root
	return cmd, nil
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
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
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
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
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
	for _, ext := range []string{".pid", ".log", ".exit"} {
		_ = os.Remove(b.path(id, ext))
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
