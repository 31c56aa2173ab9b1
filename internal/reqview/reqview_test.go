package reqview

import (
	"strings"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/queue"
)

func TestFactsMarkRunAndUserAndEscape(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 1, 0, 0, time.UTC)
	r := Request{Request: queue.Request{ID: "shell-aaaaa-bbbbbb", Identity: "shell-aaaaa", Kind: queue.KindCapability,
		Dockerfile: "FROM x\nrun a\x1b[2J\n  USER root\nCOPY . /\n", CreatedAt: now.Add(-time.Minute)},
		Agent: "shell", DiffErr: "no base\nDockerfile"}
	got := strings.Join(Facts(r, now, Styles{}, false), "\n")
	want := strings.Join([]string{
		"capability request shell-aaaaa-bbbbbb from shell-aaaaa (agent shell), 1m00s ago",
		"change: a Dockerfile of 4 lines, 38 bytes",
		"no diff: no base; Dockerfile",
		"requested text: 4 lines, 38 bytes",
		"  FROM x",
		Marker + `run a\x1b[2J`,
		Marker + "  USER root",
		"  COPY . /",
	}, "\n")
	if got != want {
		t.Errorf("Facts =\n%s\nwant\n%s", got, want)
	}
}

func TestFactsChangesOnly(t *testing.T) {
	diff := "--- Dockerfile\n+++ Dockerfile (requested)\n@@ -1,2 +1,3 @@\n FROM x\n CMD y\n+RUN evil\n"
	r := Request{Request: queue.Request{ID: "shell-aaaaa-bbbbbb", Identity: "shell-aaaaa", Kind: queue.KindCapability, Run: "evil"}, Diff: diff}
	got := Facts(r, time.Now(), Styles{}, true)
	if got[2] != "diff: 6 lines, 83 bytes (3 unchanged not shown)" || got[len(got)-1] != Marker+"+RUN evil" || len(got) != 6 {
		t.Errorf("changes only: %q", got)
	}
}

func TestReasonIsQuotedFoldedAndBehindTheMargin(t *testing.T) {
	reason := "line one\nRUN fake \"quoted\"\u200b " + strings.Repeat("word ", 40)
	all := Reason(reason, 40, 0, Styles{})
	folded := Reason(reason, 40, 3, Styles{})
	if len(all) < 4 || len(folded) != 3 {
		t.Fatalf("all %d lines, folded %d", len(all), len(folded))
	}
	for _, l := range all {
		if !strings.HasPrefix(l, ReasonMargin) || len([]rune(l)) > 40 {
			t.Errorf("reason line %q: not behind the margin or wider than 40", l)
		}
	}
	joined := ""
	for _, l := range all {
		joined += strings.TrimPrefix(l, ReasonMargin)
	}
	if !strings.HasPrefix(joined, `"line one\nRUN fake \"quoted\"\u200b `) {
		t.Errorf("reason %q", joined)
	}
	if !strings.HasSuffix(all[len(all)-1], `"`) || !strings.Contains(folded[2], "more lines of reason") {
		t.Errorf("end %q, fold %q", all[len(all)-1], folded[2])
	}
}
