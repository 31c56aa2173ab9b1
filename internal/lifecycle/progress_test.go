package lifecycle

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// runProgress shows lines on a real terminal and ends the launch failed or
// not; it returns what the terminal got.
func runProgress(t *testing.T, lines []string, failed bool) string {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer ptmx.Close()
	got := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(ptmx)
		got <- string(b)
	}()
	p := newProgress(tty)
	if p.tty == nil {
		t.Fatal("a pty is not taken for a terminal")
	}
	for _, l := range lines {
		p.show(sdk.Progress{Stage: "build", Message: l})
	}
	p.done(failed)
	tty.Close()
	select {
	case s := <-got:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("the terminal's output did not end")
		return ""
	}
}

// On a terminal each progress line overwrites the last; a failed launch
// then prints its last lines whole, so the build's own error (apt's
// "Unable to locate package") stays above the exit code. A launch that
// came up prints nothing more.
func TestFailedLaunchPrintsTheLastProgressLines(t *testing.T) {
	var lines []string
	for i := range 30 {
		lines = append(lines, fmt.Sprintf("Step %d/30 : RUN step-%d", i+1, i+1))
	}
	lines = append(lines, "E: Unable to locate package ripgrep", "The command '/bin/sh -c apt-get install -y ripgrep' returned a non-zero code: 100")

	out := runProgress(t, lines, true)
	_, after, ok := strings.Cut(out, "the launch failed; its last 20 lines of progress:")
	if !ok {
		t.Fatalf("no tail after a failure:\n%q", out)
	}
	tail := strings.Split(strings.Trim(strings.ReplaceAll(after, "\r\n", "\n"), "\n"), "\n")
	if len(tail) != progressTail {
		t.Fatalf("%d lines in the tail, want %d:\n%s", len(tail), progressTail, after)
	}
	if tail[0] != "  build: Step 13/30 : RUN step-13" || tail[18] != "  build: E: Unable to locate package ripgrep" ||
		!strings.HasSuffix(tail[19], "returned a non-zero code: 100") {
		t.Errorf("the tail is not the last lines, whole, in order:\n%s", strings.Join(tail, "\n"))
	}
	if strings.Contains(after, "step-12\r") || strings.Contains(after, "\x1b[K") {
		t.Errorf("the tail holds older or overwritten lines:\n%q", after)
	}

	if out := runProgress(t, lines, false); strings.Contains(out, "launch failed") || strings.Contains(out, "Unable to locate package ripgrep\r\n") {
		t.Errorf("a launch that came up printed the tail:\n%q", out)
	}
}

// Build output comes from the bottle's Dockerfile: on the line and in the
// tail it is rendered, never sent raw to the terminal.
func TestProgressRendersBottleText(t *testing.T) {
	out := runProgress(t, []string{"evil \x1b]0;pwned\x07 \u202etxt"}, true)
	if strings.Contains(out, "\x1b]0;") || strings.Contains(out, "\u202e") {
		t.Errorf("raw controls reached the terminal: %q", out)
	}
	if !strings.Contains(out, `evil \x1b]0;pwned\x07 \u202etxt`) {
		t.Errorf("the line is not shown escaped: %q", out)
	}
}
