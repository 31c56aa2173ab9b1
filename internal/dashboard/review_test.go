package dashboard_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/dashboard"
	"github.com/bot-bottle/bot-bottle/internal/lifecycle"
	"github.com/bot-bottle/bot-bottle/internal/operatortest"
)

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestReviewBottleKeys: on a --review bottle the dashboard shows its diff
// (v), and merges (m) and discards (x) only after a y/n, through the flows
// of bot-bottle diff, merge and rm.
func TestReviewBottleKeys(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "gitconfig")
	if err := os.WriteFile(cfg, []byte("[user]\n\tname = Operator\n\temail = op@example.test\n[safe]\n\tdirectory = *\n[init]\n\tdefaultBranch = main\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GIT_CONFIG_GLOBAL", cfg)
	repo := t.TempDir()
	git(t, repo, "init", "-q")
	if err := os.WriteFile(filepath.Join(repo, "a.txt"), []byte("a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	git(t, repo, "add", "a.txt")
	git(t, repo, "commit", "-qm", "base")

	w := operatortest.New(t, binDir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The test backend runs the agent on the host in its project: the clone.
	if _, err := w.Env.Start(ctx, lifecycle.StartOptions{Agent: "shell", Backend: "test", Detach: true, Cwd: repo, Review: true,
		Command: []string{"sh", "-c", "echo from-the-bottle > dash.txt && git add dash.txt && git -c core.hooksPath=/dev/null commit -qm dash && sleep 600"}}); err != nil {
		t.Fatalf("start: %v\n%s", err, w.Errs.String())
	}
	ids, _ := w.Env.Store.Identities()
	if len(ids) != 1 {
		t.Fatalf("bottles %v", ids)
	}
	id := ids[0]
	deadline := time.Now().Add(20 * time.Second)
	for {
		if d, err := w.Env.Diff(ctx, id, false); err == nil && d.Commits == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the bottle never committed")
		}
		time.Sleep(100 * time.Millisecond)
	}

	tm, scr := dash(t, w, dashboard.Options{})
	scr.waitFor(t, 10*time.Second, id, "v diff", "m merge", "x discard")
	keys(tm, "v")
	scr.waitFor(t, 10*time.Second, "+from-the-bottle", "bot-bottle/"+id, "dash.txt | 1 +")
	keys(tm, "esc")
	keys(tm, "m")
	scr.waitFor(t, 5*time.Second, "merge branch bot-bottle/"+id+" into the current branch")
	keys(tm, "n")
	scr.waitFor(t, 5*time.Second, "cancelled")
	if _, err := os.Stat(filepath.Join(repo, "dash.txt")); err == nil {
		t.Fatal("merged without a yes")
	}
	keys(tm, "m", "y")
	scr.waitFor(t, 20*time.Second, "merged bot-bottle/"+id)
	if got := git(t, repo, "log", "-1", "--format=%s"); got != "Merge bot-bottle/"+id {
		t.Fatalf("HEAD: %q", got)
	}
	keys(tm, "x", "y")
	scr.waitFor(t, 30*time.Second, "removed "+id)
	if _, err := w.Env.Store.ReadMetadata(id); err == nil {
		t.Fatal("the bottle is still there")
	}
	if _, err := exec.Command("git", "-C", repo, "rev-parse", "--verify", "-q", "refs/heads/bot-bottle/"+id).Output(); err == nil {
		t.Fatal("a merged branch was kept")
	}
}
