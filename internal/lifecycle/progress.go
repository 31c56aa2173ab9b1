package lifecycle

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/bot-bottle/bot-bottle/internal/term"
	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/render"
)

// progressTail is how many of the last progress lines a failed launch on a
// terminal prints: there each line overwrote the one before, and the
// error alone ("returned a non-zero code: 100") hides what failed.
const progressTail = 20

// progress shows launch progress: one rewritten line on a terminal (tty
// set), plain lines otherwise. Lines come from the plugin and, for a build,
// from the bottle's own Dockerfile: they are rendered as untrusted text.
type progress struct {
	w     io.Writer
	tty   *os.File
	width func() int
	shown bool
	last  string
	// tail is the last progressTail lines shown on the terminal.
	tail []string
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok && isTerminal(f) {
		p.tty = f
		p.width = func() int { return int(term.Size(f).Cols) }
	}
	return p
}

func (p *progress) show(ev sdk.Progress) {
	msg := strings.TrimSpace(ev.Message)
	if msg == "" {
		return
	}
	line := msg
	if ev.Stage != "" {
		line = ev.Stage + ": " + msg
	}
	if ev.Total > 0 {
		line += fmt.Sprintf(" (%d/%d)", ev.Current, ev.Total)
	}
	line = render.Text(line)
	if p.tty == nil {
		if line != p.last {
			fmt.Fprintf(p.w, "bot-bottle: %s\n", line)
			p.last = line
		}
		return
	}
	if len(p.tail) == progressTail {
		p.tail = append(p.tail[:0], p.tail[1:]...)
	}
	p.tail = append(p.tail, line)
	width := p.width()
	if width <= 0 {
		width = 80
	}
	if r := []rune(line); len(r) > width-1 {
		line = string(r[:width-1])
	}
	fmt.Fprintf(p.w, "\r\x1b[K%s", line)
	p.shown = true
}

// done clears the progress line; after a failed launch on a terminal it
// prints the last lines it showed, whole, so the build's own error stays
// on the screen above bot-bottle's.
func (p *progress) done(failed bool) {
	if p.tty == nil || !p.shown {
		return
	}
	fmt.Fprint(p.w, "\r\x1b[K")
	if !failed || len(p.tail) == 0 {
		return
	}
	fmt.Fprintf(p.w, "bot-bottle: the launch failed; its last %d lines of progress:\n", len(p.tail))
	for _, l := range p.tail {
		fmt.Fprintf(p.w, "  %s\n", l)
	}
}
