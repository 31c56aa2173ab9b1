package backendtest_test

import (
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
	break_ string // "", "exit-code", "stop-leaves-resource", "ignore-resize"
}

type hostRecord struct {
	Identity string   `json:"identity"`
	Command  []string `json:"command"`
	Started  string   `json:"started"`
}

func (b *hostBackend) path(id, ext string) string { return filepath.Join(b.root, id+ext) }

func (b *hostBackend) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{Name: "host", Version: "0.0.1", APIVersions: []string{sdk.APIVersion}}, nil
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
	if spec.Detach {
		cmd, err := b.command(spec.Identity)
		if err != nil {
			return sdk.Handle{}, err
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		logf, err := os.Create(b.path(spec.Identity, ".log"))
		if err != nil {
			return sdk.Handle{}, err
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			logf.Close()
			return sdk.Handle{}, fmt.Errorf("launch %s: %w", spec.Identity, err)
		}
		logf.Close()
		_ = os.WriteFile(b.path(spec.Identity, ".pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600)
		// In-process, this goroutine outlives every "plugin instance".
		go func() {
			_ = cmd.Wait()
			_ = os.WriteFile(b.path(spec.Identity, ".exit"), []byte(strconv.Itoa(cmd.ProcessState.ExitCode())), 0o600)
		}()
	}
	return h, nil
}

func (b *hostBackend) command(id string) (*exec.Cmd, error) {
	data, err := os.ReadFile(b.path(id, ".json"))
	if errors.Is(err, os.ErrNotExist) {
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
	if pid, ok := b.pid(id); ok && alive(pid) {
		// Started detached: follow its log until its exit code is written.
		f, err := os.Open(b.path(id, ".log"))
		if err != nil {
			return sdk.ExitStatus{}, err
		}
		defer f.Close()
		for {
			_, _ = io.Copy(s.Stdout, f)
			if data, err := os.ReadFile(b.path(id, ".exit")); err == nil {
				_, _ = io.Copy(s.Stdout, f)
				code, _ := strconv.Atoi(string(data))
				return sdk.ExitStatus{Code: code}, nil
			}
			select {
			case <-ctx.Done():
				return sdk.ExitStatus{Detached: true}, nil
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	var copied chan struct{}
	if req.TTY {
		ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: req.Size.Rows, Cols: req.Size.Cols})
		if err != nil {
			return sdk.ExitStatus{}, fmt.Errorf("attach %s: %w", id, err)
		}
		defer ptmx.Close()
		copied = make(chan struct{})
		go func() { _, _ = io.Copy(s.Stdout, ptmx); close(copied) }()
		if s.Stdin != nil {
			go func() { _, _ = io.Copy(ptmx, s.Stdin) }()
		}
		go func() {
			for sz := range s.Resize {
				if b.break_ != "ignore-resize" {
					_ = pty.Setsize(ptmx, &pty.Winsize{Rows: sz.Rows, Cols: sz.Cols})
				}
			}
		}()
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Stdout, cmd.Stderr = s.Stdout, s.Stderr
		if s.Stdin != nil {
			w, err := cmd.StdinPipe()
			if err != nil {
				return sdk.ExitStatus{}, err
			}
			go func() { _, _ = io.Copy(w, s.Stdin); w.Close() }()
		}
		if err := cmd.Start(); err != nil {
			return sdk.ExitStatus{}, fmt.Errorf("attach %s: %w", id, err)
		}
	}
	_ = os.WriteFile(b.path(id, ".pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-ctx.Done():
		return sdk.ExitStatus{Detached: true}, nil
	case err := <-done:
		if copied != nil {
			select {
			case <-copied:
			case <-time.After(2 * time.Second):
			}
		}
		code := cmd.ProcessState.ExitCode()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			return sdk.ExitStatus{}, err
		}
		if b.break_ == "exit-code" {
			code = 0
		}
		return sdk.ExitStatus{Code: code}, nil
	}
}

func (b *hostBackend) pid(id string) (int, bool) {
	data, err := os.ReadFile(b.path(id, ".pid"))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(string(data))
	return pid, err == nil && pid > 0
}

func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

func (b *hostBackend) Stop(_ context.Context, req sdk.StopRequest) ([]string, error) {
	id := req.Identity
	if req.Handle != nil && req.Handle.Identity != "" {
		id = req.Handle.Identity
	}
	var removed []string
	if pid, ok := b.pid(id); ok {
		if alive(pid) {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			removed = append(removed, fmt.Sprintf("process %d", pid))
		}
		_ = os.Remove(b.path(id, ".pid"))
	}
	_ = os.Remove(b.path(id, ".log"))
	_ = os.Remove(b.path(id, ".exit"))
	if b.break_ != "stop-leaves-resource" {
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
		status := "created"
		if pid, ok := b.pid(id); ok {
			status = "exited"
			if alive(pid) {
				status = "running"
			}
		}
		out = append(out, sdk.Bottle{Identity: id, Status: status, Resources: []string{b.path(id, ".json")}})
	}
	return out, nil
}
