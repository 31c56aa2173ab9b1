package lifecycle_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bot-bottle/bot-bottle/internal/lifecycle"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// operatorRepo is a committed repository with the test's git identity.
func operatorRepo(t *testing.T) string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "gitconfig")
	if err := os.WriteFile(cfg, []byte("[user]\n\tname = Operator\n\temail = op@example.test\n[safe]\n\tdirectory = *\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GIT_CONFIG_GLOBAL", cfg)
	repo := t.TempDir()
	for _, args := range [][]string{{"init", "-q"}, {"commit", "-q", "--allow-empty", "-m", "base"}} {
		if out, err := exec.Command("git", append([]string{"-C", repo}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	return repo
}

type failingLaunch struct{ sdk.Backend }

func (failingLaunch) Launch(context.Context, sdk.Spec, sdk.Plan, func(sdk.Progress)) (sdk.Handle, error) {
	return sdk.Handle{}, errors.New("no room for it")
}

// A review bottle whose first launch fails leaves nothing: no state, no
// clone, no branch in the operator's repository.
func TestReviewFailedFirstLaunchLeavesNothing(t *testing.T) {
	r := newRig(t)
	repo := operatorRepo(t)
	r.env.Backends = inProcess{t, failingLaunch{r.backend}}
	before := tree(t, repo)
	_, err := r.env.Start(context.Background(), lifecycle.StartOptions{Agent: "tsh", Cwd: repo, Review: true, Command: []string{"true"}})
	if err == nil || !strings.Contains(err.Error(), "no room for it") {
		t.Fatalf("start: %v", err)
	}
	if ids, _ := r.env.Store.Identities(); len(ids) != 0 {
		t.Fatalf("left %v", ids)
	}
	if tree(t, repo) != before {
		t.Fatal("a failed start changed the operator's repository")
	}
}

// A review bottle is kept when its session ends, its clone is the project
// the backend gets, and rm keeps an unmerged branch unless forced.
func TestReviewBottleIsKeptAndRmKeepsItsWork(t *testing.T) {
	r := newRig(t)
	repo := operatorRepo(t)
	_, err := r.env.Start(context.Background(), lifecycle.StartOptions{Agent: "tsh", Cwd: repo, Review: true,
		Command: []string{"sh", "-c", "pwd; echo work > w.txt"}})
	if err != nil {
		t.Fatalf("start: %v\n%s", err, r.msgs)
	}
	ids, _ := r.env.Store.Identities()
	if len(ids) != 1 {
		t.Fatalf("a review bottle was not kept: %v\n%s", ids, r.msgs)
	}
	id := ids[0]
	if want := filepath.Join(r.env.Store.Dir(id), "review", "clone"); !strings.Contains(r.out.String(), want) {
		t.Fatalf("the agent ran in %q, not its clone %s", r.out, want)
	}
	if !strings.Contains(r.msgs.String(), "review") || !strings.Contains(r.msgs.String(), "bot-bottle/"+id) {
		t.Fatalf("preflight: %s", r.msgs)
	}
	if _, err := os.Stat(filepath.Join(repo, "w.txt")); err == nil {
		t.Fatal("the bottle wrote the operator's tree")
	}
	res, err := r.env.RemoveWith(context.Background(), id, lifecycle.RemoveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.KeptBranch == nil || res.KeptBranch.Unmerged != 1 || res.KeptBranch.Branch != "bot-bottle/"+id {
		t.Fatalf("rm of unmerged work: %+v", res.KeptBranch)
	}
	if r.exists(id) {
		t.Fatal("rm left the state and its clone")
	}
	out, err := exec.Command("git", "-C", repo, "show", "bot-bottle/"+id+":w.txt").Output()
	if err != nil || string(out) != "work\n" {
		t.Fatalf("the kept branch lacks the work: %q %v", out, err)
	}
}

// rm refuses while the work cannot be saved, and --force removes it.
func TestReviewRmRefusesWhenTheWorkCannotBeSaved(t *testing.T) {
	r := newRig(t)
	repo := operatorRepo(t)
	if _, err := r.env.Start(context.Background(), lifecycle.StartOptions{Agent: "tsh", Cwd: repo, Review: true,
		Command: []string{"sh", "-c", "mv .git real.git && echo 'gitdir: real.git' > .git"}}); err != nil {
		t.Fatalf("start: %v\n%s", err, r.msgs)
	}
	ids, _ := r.env.Store.Identities()
	id := ids[0]
	if _, err := r.env.RemoveWith(context.Background(), id, lifecycle.RemoveOptions{}); err == nil || !strings.Contains(err.Error(), "rm --force discards it") {
		t.Fatalf("rm: %v", err)
	}
	if !r.exists(id) {
		t.Fatal("a refused rm removed the bottle")
	}
	if _, err := r.env.RemoveWith(context.Background(), id, lifecycle.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if r.exists(id) {
		t.Fatal("rm --force left the bottle")
	}
}

func TestReviewFlagsNeedReview(t *testing.T) {
	r := newRig(t)
	for _, o := range []lifecycle.StartOptions{
		{Agent: "tsh", From: "HEAD", Command: []string{"true"}},
		{Agent: "tsh", Review: true, Command: []string{"true"}},
		{Agent: "tsh", Review: true, Cwd: t.TempDir(), Author: "nobody", Command: []string{"true"}},
	} {
		if _, err := r.env.Start(context.Background(), o); err == nil {
			t.Errorf("%+v: started", o)
		}
	}
	if ids, _ := r.env.Store.Identities(); len(ids) != 0 {
		t.Fatalf("left %v", ids)
	}
}

func TestReviewCommandsRefuseOtherBottles(t *testing.T) {
	r := newRig(t)
	id := r.detached()
	if _, err := r.env.Diff(context.Background(), id, false); !errors.Is(err, lifecycle.ErrNotReview) {
		t.Fatalf("diff: %v", err)
	}
	if _, err := r.env.Merge(context.Background(), id); !errors.Is(err, lifecycle.ErrNotReview) {
		t.Fatalf("merge: %v", err)
	}
	if _, err := r.env.ApplyChanges(context.Background(), id); !errors.Is(err, lifecycle.ErrNotReview) {
		t.Fatalf("apply: %v", err)
	}
}

// A bottle's clone is never a project: not even the operator's git may open
// it (its hooks and config are the agent's).
func TestReviewRefusesABottlesClone(t *testing.T) {
	r := newRig(t)
	repo := operatorRepo(t)
	if _, err := r.env.Start(context.Background(), lifecycle.StartOptions{Agent: "tsh", Cwd: repo, Review: true, Command: []string{"true"}}); err != nil {
		t.Fatalf("start: %v\n%s", err, r.msgs)
	}
	ids, _ := r.env.Store.Identities()
	clone := filepath.Join(r.env.Store.Dir(ids[0]), "review", "clone")
	marker := filepath.Join(t.TempDir(), "ran")
	if out, err := exec.Command("git", "-C", clone, "config", "core.fsmonitor", "touch "+marker).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	_, err := r.env.Start(context.Background(), lifecycle.StartOptions{Agent: "tsh", Cwd: clone, Review: true, Command: []string{"true"}})
	if err == nil || !strings.Contains(err.Error(), "in bot-bottle's state") {
		t.Fatalf("start on a clone: %v", err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the clone's fsmonitor ran")
	}
}
