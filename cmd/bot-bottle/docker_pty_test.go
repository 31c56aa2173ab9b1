package main_test

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/bot-bottle/bot-bottle/internal/syncbuf"
)

// TestDockerInteractiveTTY is acceptance 3.2: through a real pty, start the
// shell agent, type a command and read its output, resize the window and see
// `stty size` follow, exit; the terminal's settings are restored.
func TestDockerInteractiveTTY(t *testing.T) {
	home := dockerHome(t)

	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 24, Cols: 80}); err != nil {
		t.Fatal(err)
	}
	before, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(filepath.Join(binDir, "bot-bottle"), "start", "shell", "--", "bash", "--norc", "-i")
	cmd.Env = append(os.Environ(), "BOT_BOTTLE_HOME="+home, "TERM=xterm")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})
	screen := &syncbuf.Buffer{}
	go func() { _, _ = io.Copy(screen, ptmx) }()

	type_ := func(s string) {
		if _, err := ptmx.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	pos := screen.WaitFor(t, 0, "$ ", 120*time.Second)
	type_("echo typed-$((6*7))\r")
	pos = screen.WaitFor(t, pos, "typed-42", 20*time.Second)
	type_("stty size\r")
	pos = screen.WaitFor(t, pos, "24 80", 20*time.Second)

	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 33, Cols: 101}); err != nil {
		t.Fatal(err)
	}
	// SIGWINCH reaches bot-bottle because the pty is its controlling
	// terminal; give it a moment to forward the new size.
	time.Sleep(300 * time.Millisecond)
	type_("stty size\r")
	pos = screen.WaitFor(t, pos, "33 101", 20*time.Second)

	type_("exit 3\r")
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
			t.Fatalf("bot-bottle exit: %v, want status 3\n%s", err, screen.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("bot-bottle did not exit\n%s", screen.String())
	}
	after, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if before.Lflag != after.Lflag || before.Iflag != after.Iflag || before.Oflag != after.Oflag || before.Cflag != after.Cflag {
		t.Fatalf("terminal not restored: before %+v after %+v", before, after)
	}
	if after.Lflag&unix.ECHO == 0 || after.Lflag&unix.ICANON == 0 {
		t.Fatalf("terminal left in raw mode: lflag %#x", after.Lflag)
	}
	_ = pos
}
