package main_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/bot-bottle/bot-bottle/internal/syncbuf"
	"github.com/bot-bottle/bot-bottle/internal/testenv"
)

// ptyRun is one bot-bottle command on a real pty of its own.
type ptyRun struct {
	ptmx   *os.File
	screen *syncbuf.Buffer
	done   chan error
}

func startOnPTY(t *testing.T, home string, args ...string) *ptyRun {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ptmx.Close() })
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 24, Cols: 80}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, "bot-bottle"), args...)
	cmd.Env = append(os.Environ(), "BOT_BOTTLE_HOME="+home, "TERM=xterm")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	r := &ptyRun{ptmx: ptmx, screen: &syncbuf.Buffer{}, done: make(chan error, 1)}
	go func() { r.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})
	go func() { _, _ = io.Copy(r.screen, ptmx) }()
	return r
}

func (r *ptyRun) typ(t *testing.T, s string) {
	t.Helper()
	if _, err := r.ptmx.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

// exit waits for the command and returns its exit code.
func (r *ptyRun) exit(t *testing.T) int {
	t.Helper()
	select {
	case err := <-r.done:
		// Let the last output drain from the pty.
		time.Sleep(200 * time.Millisecond)
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(90 * time.Second):
		t.Fatalf("bot-bottle did not exit\n%s", r.screen.String())
	}
	return -1
}

func dockerHome(t *testing.T) string {
	t.Helper()
	cli := testenv.RequireDocker(t)
	if _, err := cli.ImageInspect(context.Background(), "debian:bookworm-slim"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("base image missing (run: make base-image): %v", err)
		}
		t.Skipf("skipping: base image missing (run: make base-image): %v", err)
	}
	runID := testenv.RunID(t, cli)
	home := t.TempDir()
	hcl := fmt.Sprintf("plugin \"docker\" {\n  config {\n    labels = { %q = %q }\n  }\n}\n", testenv.Label, runID)
	if err := os.WriteFile(filepath.Join(home, "plugins.hcl"), []byte(hcl), 0o600); err != nil {
		t.Fatal(err)
	}
	return home
}

func containerState(t *testing.T, id string) string {
	t.Helper()
	out, err := exec.Command("docker", "inspect", "-f", "{{.State.Status}}", "bot-bottle-"+id).CombinedOutput()
	if err != nil {
		return "gone: " + strings.TrimSpace(string(out))
	}
	return strings.TrimSpace(string(out))
}

var detachedShellID = regexp.MustCompile(`(shell-[0-9a-z]{5}) is running detached`)

// TestDockerAttachToDetached is issue 17's acceptance 1: a bottle started
// --detach from a non-terminal gets a terminal, so an attach through a real
// pty runs typed commands; Ctrl-P Ctrl-Q leaves the agent running; an
// attach to the agent after it exited prints its code, and the audit has
// the stop.
func TestDockerAttachToDetached(t *testing.T) {
	home := dockerHome(t)
	start := exec.Command(filepath.Join(binDir, "bot-bottle"), "start", "shell", "--detach", "--", "bash", "--norc", "-i")
	start.Env = append(os.Environ(), "BOT_BOTTLE_HOME="+home)
	out, err := start.CombinedOutput()
	if err != nil {
		t.Fatalf("start --detach: %v\n%s", err, out)
	}
	m := detachedShellID.FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("no identity in:\n%s", out)
	}
	id := m[1]
	t.Cleanup(func() { _ = exec.Command(filepath.Join(binDir, "bot-bottle"), "--home", home, "rm", id).Run() })

	a := startOnPTY(t, home, "attach", id)
	time.Sleep(time.Second)
	a.typ(t, "echo typed-$((6*7))\r")
	pos := a.screen.WaitFor(t, 0, "typed-42", 30*time.Second)
	// The agent will exit by itself while nobody is attached.
	a.typ(t, "sleep 6; exit 5\r")
	time.Sleep(300 * time.Millisecond)
	a.typ(t, "\x10\x11")
	if code := a.exit(t); code != 0 {
		t.Fatalf("detach: exit %d\n%s", code, a.screen.String())
	}
	a.screen.WaitFor(t, pos, "keeps running", 5*time.Second)
	if st := containerState(t, id); st != "running" {
		t.Fatalf("after Ctrl-P Ctrl-Q the agent is %s, want running", st)
	}

	deadline := time.Now().Add(30 * time.Second)
	for containerState(t, id) == "running" && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	b := startOnPTY(t, home, "attach", id)
	if code := b.exit(t); code != 5 {
		t.Fatalf("attach to the exited agent: exit %d, want 5\n%s", code, b.screen.String())
	}
	if s := b.screen.String(); !strings.Contains(s, id+" exited with code 5") || strings.Contains(s, "keeps running") {
		t.Fatalf("attach to the exited agent says:\n%s", s)
	}
	auditOut, err := exec.Command(filepath.Join(binDir, "bot-bottle"), "--home", home, "audit", id, "--json").CombinedOutput()
	if err != nil {
		t.Fatalf("audit: %v\n%s", err, auditOut)
	}
	if !hasAuditStop(t, string(auditOut), 5) {
		t.Fatalf("the audit has no stop with exit code 5:\n%s", auditOut)
	}
	if st := containerState(t, id); !strings.HasPrefix(st, "gone") {
		t.Fatalf("after the exit was collected the container is %s", st)
	}
}

func hasAuditStop(t *testing.T, jsonl string, code int) bool {
	for _, line := range strings.Split(strings.TrimSpace(jsonl), "\n") {
		var ev struct {
			Kind   string         `json:"kind"`
			Fields map[string]any `json:"fields"`
		}
		if json.Unmarshal([]byte(line), &ev) != nil {
			continue
		}
		if ev.Kind == "stop" && ev.Fields["exit_code"] == float64(code) {
			return true
		}
	}
	return false
}

// TestDockerApproveWhileAttached is issue 17's acceptance 2: approving a
// capability while the bottle is attached ends the attached session with
// one teardown — no warning — and the resume hint printed once.
func TestDockerApproveWhileAttached(t *testing.T) {
	home := dockerHome(t)
	s := startOnPTY(t, home, "start", "shell", "--", "bash", "--norc", "-i")
	s.screen.WaitFor(t, 0, "$ ", 120*time.Second)
	s.typ(t, "bottle request capability --run 'touch /approved' --reason 'need it' --no-wait\r")
	bb := func(args ...string) string {
		out, err := exec.Command(filepath.Join(binDir, "bot-bottle"), append([]string{"--home", home}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("bot-bottle %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	var req, id string
	deadline := time.Now().Add(30 * time.Second)
	for req == "" && time.Now().Before(deadline) {
		var reqs []struct{ ID, Status string }
		_ = json.Unmarshal([]byte(bb("requests", "--json")), &reqs)
		for _, r := range reqs {
			if r.Status == "pending" {
				req = r.ID
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	if req == "" {
		t.Fatalf("no request arrived\n%s", s.screen.String())
	}
	id = req[:strings.LastIndexByte(req, '-')]
	t.Cleanup(func() { _ = exec.Command(filepath.Join(binDir, "bot-bottle"), "--home", home, "rm", id).Run() })
	bb("approve", req)
	s.exit(t)
	screen := s.screen.String()
	hint := "resume it with: bot-bottle resume " + id
	if n := strings.Count(screen, hint); n != 1 {
		t.Fatalf("the resume hint is printed %d times:\n%s", n, screen)
	}
	for _, bad := range []string{"warning", "already in progress", "bot-bottle prune"} {
		if strings.Contains(screen, bad) {
			t.Fatalf("the attached terminal shows %q (two teardowns?):\n%s", bad, screen)
		}
	}
	if st := containerState(t, id); !strings.HasPrefix(st, "gone") {
		t.Fatalf("after the approval the container is %s", st)
	}
	if _, err := os.Stat(filepath.Join(home, "state", id, "Dockerfile")); err != nil {
		t.Fatalf("the approved change is not kept: %v", err)
	}
}
