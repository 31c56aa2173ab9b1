package main_test

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/charmbracelet/x/vt"
	"github.com/creack/pty"
)

// ptyScreen runs a command on a real pseudo-terminal and plays everything
// it writes through a terminal emulator, so a test reads the screen a user
// would see and types as a user would.
type ptyScreen struct {
	t    testing.TB
	cmd  *exec.Cmd
	tty  *os.File
	mu   sync.Mutex
	em   *vt.Emulator
	raw  bytes.Buffer // everything, for failure messages
	done chan error
	// drained is closed when the reader has read all the program wrote
	// (the pty reports the end once its last holder exits).
	drained chan struct{}
}

func startPTY(t testing.TB, cols, rows int, env []string, name string, args ...string) *ptyScreen {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = env
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Cols: uint16(cols), Rows: uint16(rows)})
	if err != nil {
		t.Fatalf("start %s on a pty: %v", name, err)
	}
	s := &ptyScreen{t: t, cmd: cmd, tty: tty, em: vt.NewEmulator(cols, rows), done: make(chan error, 1), drained: make(chan struct{})}
	go func() {
		defer close(s.drained)
		buf := make([]byte, 32<<10)
		for {
			n, err := tty.Read(buf)
			if n > 0 {
				s.mu.Lock()
				s.raw.Write(buf[:n])
				_, _ = s.em.Write(buf[:n])
				s.mu.Unlock()
			}
			if err != nil {
				return
			}
		}
	}()
	// The emulator's answers to terminal queries go back as input.
	go func() { _, _ = io.Copy(tty, s.em) }()
	go func() { s.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-s.done
		}
		tty.Close()
	})
	return s
}

func (s *ptyScreen) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.em.String()
}

func (s *ptyScreen) waitFor(timeout time.Duration, want ...string) string {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		txt := s.text()
		ok := true
		for _, w := range want {
			if !strings.Contains(txt, w) {
				ok = false
			}
		}
		if ok {
			return txt
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("the terminal never showed %q within %s; it shows:\n%s", want, timeout, txt)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (s *ptyScreen) waitUntil(timeout time.Duration, what string, cond func(string) bool) string {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		txt := s.text()
		if cond(txt) {
			return txt
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("the terminal never %s within %s; it shows:\n%s", what, timeout, txt)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (s *ptyScreen) waitGone(timeout time.Duration, what string) string {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		txt := s.text()
		if !strings.Contains(txt, what) {
			return txt
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("the terminal still shows %q after %s:\n%s", what, timeout, txt)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// typ types keys one at a time, as a person does: a burst would arrive as
// one paste-like key event.
func (s *ptyScreen) typ(keys string) {
	s.t.Helper()
	for _, k := range []byte(keys) {
		if _, err := s.tty.Write([]byte{k}); err != nil {
			s.t.Fatalf("type %q: %v", keys, err)
		}
		time.Sleep(15 * time.Millisecond)
	}
}

func (s *ptyScreen) wait(timeout time.Duration) error {
	s.t.Helper()
	select {
	case err := <-s.done:
		// The exit can beat the reader to the program's last lines.
		select {
		case <-s.drained:
		case <-time.After(5 * time.Second):
		}
		return err
	case <-time.After(timeout):
		s.t.Fatalf("%s did not exit within %s; screen:\n%s", s.cmd.Path, timeout, s.text())
		return nil
	}
}

// cliEnv is the environment of the real binaries in a fresh home.
func cliEnv(t testing.TB) ([]string, string) {
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	root := filepath.Join(dir, "tproot")
	t.Cleanup(func() { killPlugins(root) })
	env := append(os.Environ(),
		"PATH="+binDir+string(os.PathListSeparator)+os.Getenv("PATH"),
		"BOT_BOTTLE_HOME="+home, "BB_TESTPLUGIN_ROOT="+root, "HOME="+dir, "TERM=xterm-256color")
	return env, home
}

var startedID = regexp.MustCompile(`bot-bottle: starting ([a-z0-9-]+-[a-z0-9]{5})`)

// startDetached starts a test-backend bottle running script and returns
// its identity; the bottle is removed when the test ends.
func startDetached(t *testing.T, env []string, script string) string {
	t.Helper()
	return startOn(t, env, "test", "sh", "-c", script)
}

// startOn starts a detached shell bottle on backend, running command (the
// agent's own when there is none).
func startOn(t *testing.T, env []string, backend string, command ...string) string {
	t.Helper()
	args := []string{"start", "shell", "--backend", backend, "--detach"}
	if len(command) > 0 {
		args = append(append(args, "--"), command...)
	}
	cmd := exec.Command(filepath.Join(binDir, "bot-bottle"), args...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("start: %v\n%s", err, stderr.String())
	}
	m := startedID.FindStringSubmatch(stderr.String())
	if m == nil {
		t.Fatalf("no identity in:\n%s", stderr.String())
	}
	return removedAtCleanup(t, env, m[1])
}

// removedAtCleanup has `bot-bottle rm` remove bottle id when the test ends,
// pass or fail, and returns id.
func removedAtCleanup(t *testing.T, env []string, id string) string {
	t.Cleanup(func() {
		rm := exec.Command(filepath.Join(binDir, "bot-bottle"), "rm", id)
		rm.Env = env
		_ = rm.Run()
	})
	return id
}

func runCLI(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "bot-bottle"), args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bot-bottle %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

var pendingID = regexp.MustCompile(`"id": "([a-z0-9-]+)"`)

func waitPending(t *testing.T, env []string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		out := runCLI(t, env, "requests", "--json")
		if m := pendingID.FindStringSubmatch(out); m != nil && strings.Contains(out, `"status": "pending"`) {
			return m[1]
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("no pending request")
	return ""
}

// TestDashboardPTY drives the real `bot-bottle dashboard` on a real pty
// with the test backend: a bottle files a capability request through the
// helper; the dashboard shows it; pressing approve stops the bottle
// preserved and shows the resume hint. Then it attaches to a second
// bottle, sees its output, detaches with Ctrl-P Ctrl-Q and is back.
func TestDashboardPTY(t *testing.T) {
	env, home := cliEnv(t)
	asker := startDetached(t, env, `bottle request capability --run "apt-get install -y jq" --reason "parse json"; echo helper=$?; sleep 600`)
	talker := startDetached(t, env, `i=0; while true; do i=$((i+1)); echo "talker-line-$i"; sleep 0.2; done`)
	req := waitPending(t, env)

	scr := startPTY(t, 160, 40, env, filepath.Join(binDir, "bot-bottle"), "dashboard", "--refresh", "200ms")
	scr.waitFor(15*time.Second, asker, talker, req, "2 bottles (2 running)", "+RUN apt-get install -y jq")

	scr.typ("\t") // the requests pane
	scr.typ("a")
	scr.waitFor(20*time.Second, "approved "+req, "bot-bottle resume "+asker)
	if _, err := os.Stat(filepath.Join(home, "state", asker, ".preserve")); err != nil {
		t.Errorf("the approved bottle is not preserved: %v", err)
	}
	if out := runCLI(t, env, "requests", "--all"); !strings.Contains(out, req) || !strings.Contains(out, "approved") {
		t.Errorf("requests after approve:\n%s", out)
	}
	scr.waitFor(10*time.Second, "no pending requests")

	// Attach: the dashboard steps aside for the bottle's output.
	scr.typ("\t") // back to bottles
	scr.typ("/")  // narrow to the talker, so it is selected
	scr.waitFor(5*time.Second, "filter:")
	scr.typ(talker + "\r")
	scr.waitFor(5*time.Second, "Bottles (1 of 2)")
	scr.typ("\r") // attach
	scr.waitFor(10*time.Second, "talker-line-")
	scr.waitGone(5*time.Second, "bot-bottle dashboard")
	scr.typ("\x10\x11") // Ctrl-P Ctrl-Q
	scr.waitFor(10*time.Second, "bot-bottle dashboard", "back from "+talker)
	if out := runCLI(t, env, "list"); !strings.Contains(out, talker) || !strings.Contains(out, "running") {
		t.Errorf("the talker is not running after detach:\n%s", out)
	}

	scr.typ("q")
	if err := scr.wait(10 * time.Second); err != nil {
		t.Errorf("dashboard exit: %v\n%s", err, scr.text())
	}
}

// TestNoTerminalQueryAtStart: linking the dashboard's terminal UI library
// must not make every command query the terminal (bubbletea's init asks for
// the background colour). On a pty that never answers, `version` and
// `list` write no query and do not wait for one.
func TestNoTerminalQueryAtStart(t *testing.T) {
	env, _ := cliEnv(t)
	// termenv never queries under CI; this test is about everyone else.
	var noCI []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "CI=") {
			noCI = append(noCI, kv)
		}
	}
	for _, args := range [][]string{{"version"}, {"list"}} {
		cmd := exec.Command(filepath.Join(binDir, "bot-bottle"), args...)
		cmd.Env = noCI
		start := time.Now()
		tty, err := pty.Start(cmd)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(tty) // EIO once the command exits
		_ = cmd.Wait()
		tty.Close()
		took := time.Since(start)
		if bytes.Contains(out, []byte("\x1b]11;?")) || bytes.Contains(out, []byte("\x1b[6n")) {
			t.Errorf("bot-bottle %s queried the terminal: %q", args[0], out)
		}
		if took > 3*time.Second {
			t.Errorf("bot-bottle %s took %s on a silent terminal", args[0], took)
		}
	}
}

// TestDashboardFailedAttachIgnoresTypeAhead: attaching from the dashboard
// to a bottle attached elsewhere fails; what the operator then types (meant
// for the bottle: "c", "y", "s", Enter) changes nothing, and esc brings the
// dashboard back. Commit asks before it commits.
func TestDashboardFailedAttachIgnoresTypeAhead(t *testing.T) {
	env, home := cliEnv(t)
	id := startDetached(t, env, `sleep 600`)
	// Another terminal holds the bottle: a pipe attach that stays.
	holder := exec.Command(filepath.Join(binDir, "bot-bottle"), "attach", id)
	holder.Env = env
	in, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		_ = holder.Process.Kill()
		_ = holder.Wait()
	})
	// The holder takes the bottle's lock as it starts; if it had not yet,
	// the dashboard's attach below would succeed and the test fail.
	time.Sleep(500 * time.Millisecond)

	scr := startPTY(t, 160, 40, env, filepath.Join(binDir, "bot-bottle"), "dashboard", "--refresh", "200ms")
	scr.waitFor(15*time.Second, id, "1 bottle (1 running)")
	scr.typ("\r") // attach: fails, the bottle is attached elsewhere
	scr.waitFor(15*time.Second, "what was typed since is ignored", "attach exited with status")
	scr.typ("cy")
	scr.typ("sy\r")
	time.Sleep(time.Second)
	if _, err := os.Stat(filepath.Join(home, "state", id, ".preserve")); err == nil {
		t.Fatal("type-ahead after the failed attach committed the bottle")
	}
	if out := runCLI(t, env, "list"); !strings.Contains(out, id) || !strings.Contains(out, "running") {
		t.Fatalf("type-ahead after the failed attach stopped the bottle:\n%s", out)
	}
	scr.typ("\x1b")
	scr.waitFor(5*time.Second, "c commit")

	scr.typ("c")
	scr.waitFor(5*time.Second, "commit "+id+"? it is then kept until bot-bottle rm (y/n)")
	scr.typ("n")
	scr.waitFor(5*time.Second, "cancelled")
	if _, err := os.Stat(filepath.Join(home, "state", id, ".preserve")); err == nil {
		t.Fatal("declining the commit committed the bottle")
	}
	scr.typ("q")
	if err := scr.wait(10 * time.Second); err != nil {
		t.Errorf("dashboard exit: %v\n%s", err, scr.text())
	}
}
