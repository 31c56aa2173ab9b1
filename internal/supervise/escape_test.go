package supervise_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/operatortest"
	"github.com/bot-bottle/bot-bottle/internal/queue"
	"github.com/bot-bottle/bot-bottle/internal/supervise"
	"github.com/bot-bottle/bot-bottle/sdk/render"
)

// TestLogLinesAreEscaped: a request record that got past the ingest with
// an ESC, a C1 byte, a bidi override and a newline in its host is logged
// on one line, each of them escaped.
func TestLogLinesAreEscaped(t *testing.T) {
	w := operatortest.New(t, binDir)
	id := w.StartDetached(t, "shell", "sleep", "600")
	w.File(t, id, "request", "egress", "docs.example.test", "--reason", "read")
	w.Pending(t)
	r := queue.Request{ID: id + "-zzzzzz", Identity: id, Kind: queue.KindEgress, Host: "evil\x1b[2J\u009b\u202e\nforged.test",
		Reason: "r", Status: queue.StatusPending, CreatedAt: time.Now()}
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(w.Home, "requests", id, r.ID+".json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	pol, err := supervise.Load(writePolicy(t, policy))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	s := &supervise.Supervisor{Env: w.Env, Policy: pol, Out: &out}
	if _, err := s.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if !strings.Contains(got, `evil\x1b[2J\u009b\u202e\nforged.test`) {
		t.Errorf("the hostile host is not escaped:\n%s", got)
	}
	for _, l := range strings.Split(strings.TrimSuffix(got, "\n"), "\n") {
		if !strings.HasPrefix(l, "bot-bottle supervise: ") {
			t.Errorf("a line that is not the supervisor's: %q", l)
		}
		for _, c := range l {
			if render.Unsafe(c) {
				t.Errorf("raw %U in %q", c, l)
			}
		}
	}
}
