package main_test

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/bot-bottle/bot-bottle/internal/syncbuf"
)

// TestDockerFailedBuildShowsItsLastLines (issue 22): on a terminal the
// build's progress is one overwritten line; when the build fails, its last
// lines are printed whole, so apt's own error is on the screen next to the
// exit code, not only "returned a non-zero code: 100".
func TestDockerFailedBuildShowsItsLastLines(t *testing.T) {
	home := dockerHome(t)
	dir := filepath.Join(home, "agents", "broken")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"agent.hcl": "description = \"does not build\"\ndockerfile = \"Dockerfile\"\ncommand = [\"true\"]\n",
		// What apt says without package lists, then its exit code.
		"Dockerfile": "FROM debian:bookworm-slim\nRUN echo 'Reading package lists...' && echo 'E: Unable to locate package ripgrep' && exit 100\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 24, Cols: 80}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, "bot-bottle"), "start", "broken")
	cmd.Env = append(os.Environ(), "BOT_BOTTLE_HOME="+home, "TERM=xterm")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	screen := &syncbuf.Buffer{}
	copied := make(chan struct{})
	go func() { _, _ = io.Copy(screen, ptmx); close(copied) }()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
			t.Fatalf("a failed build: exit %v, want non-zero\n%s", err, screen.String())
		}
	case <-time.After(180 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("bot-bottle did not exit\n%s", screen.String())
	}
	select {
	case <-copied:
	case <-time.After(5 * time.Second):
	}
	out := strings.ReplaceAll(screen.String(), "\r\n", "\n")
	_, tail, ok := strings.Cut(out, "the launch failed; its last ")
	if !ok {
		t.Fatalf("no last lines after the failed build:\n%q", out)
	}
	for _, want := range []string{"\n  build: E: Unable to locate package ripgrep\n", "returned a non-zero code: 100"} {
		if !strings.Contains(tail, want) {
			t.Errorf("the last lines lack %q:\n%s", want, tail)
		}
	}
	// The failed first launch leaves nothing: no bottle to list.
	list, err := exec.Command(filepath.Join(binDir, "bot-bottle"), "--home", home, "list").CombinedOutput()
	if err != nil || strings.Contains(string(list), "broken-") {
		t.Errorf("after the failed build, list: %v\n%s", err, list)
	}
}
