package dashboard_test

import (
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/x/exp/teatest"

	"github.com/bot-bottle/bot-bottle/internal/dashboard"
	"github.com/bot-bottle/bot-bottle/internal/operatortest"
)

// TestNarrowTerminal: on an 80x24 terminal with long request text, no line
// is wider than the terminal (a wider one would wrap and tear the screen)
// and the resume hint after an approval is still there whole.
func TestNarrowTerminal(t *testing.T) {
	const w80, h24 = 80, 24
	w := operatortest.New(t, binDir)
	id := w.StartDetached(t, "shell", "sleep", "600")
	w.File(t, id, "request", "capability", "--run", "apt-get install -y ripgrep fd-find bat and a very long list of packages",
		"--reason", "need rg to search, and a very long reason that goes on and on past the edge of any terminal")
	src := &dashboard.LifecycleSource{Env: w.Env, DecidedBy: "user:tester"}
	tm := teatest.NewTestModel(t, dashboard.New(t.Context(), src, dashboard.Options{Refresh: 100 * time.Millisecond}),
		teatest.WithInitialTermSize(w80, h24))
	t.Cleanup(func() { _ = tm.Quit(); tm.WaitFinished(t, teatest.WithFinalTimeout(10*time.Second)) })
	scr := newScreen(tm.Output(), w80, h24)
	check := func(txt string) {
		t.Helper()
		lines := strings.Split(txt, "\n")
		if len(lines) > h24 {
			t.Errorf("%d lines on a %d-line terminal", len(lines), h24)
		}
		for _, l := range lines {
			if len([]rune(l)) > w80 {
				t.Errorf("line wider than %d: %q", w80, l)
			}
		}
	}
	check(scr.waitFor(t, 10*time.Second, "1 bottle (1 running)", "1 pending request "))
	keys(tm, "tab", "a")
	check(scr.waitFor(t, 20*time.Second, "bot-bottle resume "+id))
}
