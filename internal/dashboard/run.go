package dashboard

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	tea "github.com/charmbracelet/bubbletea"
)

// Run shows the dashboard full-screen on the terminal until the operator
// quits or ctx ends.
func Run(ctx context.Context, src Source, opts Options) error {
	p := tea.NewProgram(New(ctx, src, opts), tea.WithAltScreen(), tea.WithContext(ctx))
	_, err := p.Run()
	if errors.Is(err, tea.ErrProgramKilled) && ctx.Err() != nil {
		// Interrupted from outside (SIGTERM, SIGHUP): a normal way out.
		return nil
	}
	if err != nil {
		return fmt.Errorf("dashboard: %w", err)
	}
	return nil
}

// Log collects lines written while the dashboard owns the terminal (the
// core's messages, plugin logs), so they reach the status line instead of
// tearing the screen. It keeps the most recent maxLogLines.
type Log struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
}

const maxLogLines = 20

// Write implements io.Writer.
func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := strings.IndexByte(string(l.partial), '\n')
		if i < 0 {
			break
		}
		// The core's "bot-bottle: " prefix says nothing on its own screen.
		line := strings.TrimPrefix(strings.TrimSpace(string(l.partial[:i])), "bot-bottle: ")
		if line != "" {
			l.lines = append(l.lines, line)
		}
		l.partial = l.partial[i+1:]
	}
	if len(l.lines) > maxLogLines {
		l.lines = l.lines[len(l.lines)-maxLogLines:]
	}
	return len(p), nil
}

// Drain returns the complete lines written since the last Drain.
func (l *Log) Drain() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.lines
	l.lines = nil
	return out
}
