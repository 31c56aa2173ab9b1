package dashboard_test

import (
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/charmbracelet/x/vt"
)

// screen is what a terminal would show: every byte the program wrote,
// played through a terminal emulator, so tests assert on the screen and not
// on the repaint stream (which sends only the lines that changed).
type screen struct {
	mu  sync.Mutex
	src io.Reader
	em  *vt.Emulator
}

func newScreen(src io.Reader, w, h int) *screen {
	s := &screen{src: src, em: vt.NewEmulator(w, h)}
	// The emulator answers terminal queries through a pipe; nobody asks
	// here, but an unread answer would block its writer.
	go func() { _, _ = io.Copy(io.Discard, s.em) }()
	return s
}

// text pumps what the program wrote since the last call and returns the
// screen's text.
func (s *screen) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, _ := io.ReadAll(s.src)
	_, _ = s.em.Write(data)
	return s.em.String()
}

// waitFor waits until every want is on the screen, and returns it.
func (s *screen) waitFor(t testing.TB, timeout time.Duration, want ...string) string {
	t.Helper()
	return s.waitUntil(t, timeout, "shows "+strings.Join(want, ", "), func(txt string) bool {
		for _, w := range want {
			if !strings.Contains(txt, w) {
				return false
			}
		}
		return true
	})
}

func (s *screen) waitUntil(t testing.TB, timeout time.Duration, what string, cond func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		txt := s.text()
		if cond(txt) {
			return txt
		}
		if time.Now().After(deadline) {
			t.Fatalf("the screen never %s within %s; it shows:\n%s", what, timeout, txt)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
