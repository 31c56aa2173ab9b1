package main_test

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bot-bottle/bot-bottle/internal/lifecycle"
)

// reviewOwner owns the operator's repository: not root, not 1000.
const reviewOwner = 4321

// TestReviewCrashPoints kills the real core with SIGKILL (lifecycle's halt)
// at each kill point of apply, merge and rm of a --review bottle on the
// test backend, then checks: the operator's repository is as before (or,
// past the merge's checkout, refused with a one-line error naming how to
// finish), no git lock file is left, the bottle's work is still reachable
// (its clone or its branch), and running the same command again succeeds.
func TestReviewCrashPoints(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the operator's repository belongs to another uid")
	}
	untouched := map[string][]string{
		"apply": {lifecycle.HaltReviewSnapshotted, lifecycle.HaltReviewFetched},
		"merge": {lifecycle.HaltReviewSnapshotted, lifecycle.HaltReviewFetched, lifecycle.HaltMergeCommitted},
		"rm":    {lifecycle.HaltReviewSnapshotted, lifecycle.HaltReviewFetched, lifecycle.HaltRemoveSaved},
	}
	for _, verb := range []string{"apply", "merge", "rm"} {
		for _, point := range untouched[verb] {
			t.Run(verb+"-"+point, func(t *testing.T) {
				h := newReviewHome(t)
				id := h.startBottle()
				before := h.repoState()
				h.killedAt(point, verb, id)
				h.noLocks()
				if got := h.repoState(); got != before {
					t.Fatalf("a kill at %s changed the operator's checkout:\n%s\nwas:\n%s", point, got, before)
				}
				h.workReachable(id, point != lifecycle.HaltReviewSnapshotted)
				out := h.run(verb, id)
				switch verb {
				case "apply":
					h.hasFiles("one.txt", "wip.txt")
					if got := h.git("status", "--porcelain"); got != "?? one.txt\n?? wip.txt\n" {
						t.Fatalf("after apply: status %q", got)
					}
				case "merge":
					h.mergedOnce(before, out)
				case "rm":
					if !strings.Contains(out, "kept branch bot-bottle/"+id) {
						t.Fatalf("rm again: %s", out)
					}
					if _, err := os.Stat(filepath.Join(h.home, "state", id)); err == nil {
						t.Fatal("rm again left the state")
					}
					if got := h.git("show", "bot-bottle/"+id+":one.txt"); got != "one\n" {
						t.Fatalf("the kept branch lacks the work: %q", got)
					}
				}
				h.noLocks()
			})
		}
	}

	// Past the checkout the index and worktree are the merge's and HEAD is
	// not: every other command refuses, naming how to finish, and merge
	// finishes it.
	t.Run("merge-"+lifecycle.HaltMergeCheckedOut, func(t *testing.T) {
		h := newReviewHome(t)
		id := h.startBottle()
		before := h.repoState()
		head := h.git("rev-parse", "HEAD")
		h.killedAt(lifecycle.HaltMergeCheckedOut, "merge", id)
		h.noLocks()
		if got := h.git("rev-parse", "HEAD"); got != head {
			t.Fatalf("HEAD moved before the ref update: %s", got)
		}
		if got := h.git("diff", "--cached", "--name-only"); got != "one.txt\nwip.txt\n" {
			t.Fatalf("the index is not the merge's: %q", got)
		}
		h.workReachable(id, true)
		for _, args := range [][]string{{"diff", id}, {"apply", id}, {"rm", id}, {"rm", "--force", id}} {
			out := h.fails(args...)
			if !strings.Contains(out, "was cut off before it moved") || !strings.Contains(out, "bot-bottle merge "+id) || strings.Count(strings.TrimSpace(out), "\n") != 0 {
				t.Fatalf("%v after a cut-off merge: %q", args, out)
			}
		}
		if _, err := os.Stat(filepath.Join(h.home, "state", id, "review", "clone", "one.txt")); err != nil {
			t.Fatalf("a refused rm lost the clone: %v", err)
		}
		h.mergedOnce(before, h.run("merge", id))
		// rm now sees the work merged and drops the branch with the bottle.
		h.run("rm", id)
		if _, err := os.Stat(filepath.Join(h.home, "state", id)); err == nil {
			t.Fatal("rm left the state")
		}
	})

	// A lock a killed git left (or a running one holds) is named in one
	// line and nothing changes; once it is gone the command goes through.
	t.Run("stale-locks", func(t *testing.T) {
		h := newReviewHome(t)
		id := h.startBottle()
		before := h.repoState()
		for _, lock := range []string{".git/index.lock", ".git/refs/heads/main.lock"} {
			path := filepath.Join(h.repo, lock)
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			h.t.Logf("planted %s", lock)
			out := h.fails("merge", id)
			if !strings.Contains(out, path+" exists") || strings.Count(strings.TrimSpace(out), "\n") != 0 {
				t.Fatalf("merge with %s: %q", lock, out)
			}
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			if got := h.repoState(); got != before {
				t.Fatalf("a refused merge changed the checkout:\n%s", got)
			}
		}
		h.mergedOnce(before, h.run("merge", id))
	})
}

type reviewHome struct {
	*crashHome
	repo string
	env  []string
}

func newReviewHome(t *testing.T) *reviewHome {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gitconfig")
	if err := os.WriteFile(cfg, []byte("[user]\n\tname = Operator\n\temail = op@example.test\n[safe]\n\tdirectory = *\n[init]\n\tdefaultBranch = main\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tproot := filepath.Join(dir, "tproot")
	t.Cleanup(func() { killPlugins(tproot) })
	h := &reviewHome{
		crashHome: &crashHome{t: t, home: filepath.Join(dir, "home")},
		repo:      filepath.Join(dir, "repo"),
		env:       []string{"BB_TESTPLUGIN_ROOT=" + tproot, "GIT_CONFIG_GLOBAL=" + cfg, "GIT_CONFIG_NOSYSTEM=1", "HOME=" + dir},
	}
	for _, kv := range h.env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	if err := os.MkdirAll(h.repo, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.repo, "a.txt"), []byte("base\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.git("init", "-q")
	h.git("add", "a.txt")
	h.git("commit", "-q", "-m", "base")
	if err := filepath.WalkDir(h.repo, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, reviewOwner, reviewOwner)
	}); err != nil {
		t.Fatal(err)
	}
	return h
}

// startBottle starts a review bottle that commits one.txt and leaves
// wip.txt uncommitted.
func (h *reviewHome) startBottle() string {
	h.t.Helper()
	h.run("start", "shell", "--backend", "test", "--cwd", h.repo, "--review", "--",
		"sh", "-c", "echo one > one.txt && git add one.txt && git commit -q -m one && echo wip > wip.txt")
	return h.onlyBottle()
}

func (h *reviewHome) git(args ...string) string {
	h.t.Helper()
	cmd := exec.Command("git", append([]string{"-C", h.repo}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		h.t.Fatalf("git %v: %v %s", args, err, out)
	}
	return string(out)
}

// fails runs bot-bottle, requires it to fail, and returns its stderr.
func (h *reviewHome) fails(args ...string) string {
	h.t.Helper()
	cmd := h.cmd(nil, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil {
		h.t.Fatalf("bot-bottle %v succeeded", args)
	}
	return stderr.String()
}

// repoState is the operator's checkout: HEAD, what HEAD names, the index's
// entries and every worktree file.
func (h *reviewHome) repoState() string {
	h.t.Helper()
	var b strings.Builder
	head, _ := os.ReadFile(filepath.Join(h.repo, ".git", "HEAD"))
	fmt.Fprintf(&b, "HEAD %s -> %s", strings.TrimSpace(string(head)), h.git("rev-parse", "HEAD"))
	b.WriteString(h.git("ls-files", "--stage"))
	_ = filepath.WalkDir(h.repo, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() {
			data, _ := os.ReadFile(p)
			fmt.Fprintf(&b, "%x %s\n", sha256.Sum256(data), p)
		}
		return nil
	})
	return b.String()
}

// noLocks: no git lock file is left in the operator's repository.
func (h *reviewHome) noLocks() {
	h.t.Helper()
	_ = filepath.WalkDir(filepath.Join(h.repo, ".git"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".lock") {
			h.t.Fatalf("lock file left: %s", p)
		}
		return nil
	})
}

func (h *reviewHome) hasFiles(names ...string) {
	h.t.Helper()
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(h.repo, n)); err != nil {
			h.t.Fatalf("%s is not in the operator's worktree: %v", n, err)
		}
	}
}

// workReachable: the bottle's clone still holds its work, and once
// fetched so does its branch.
func (h *reviewHome) workReachable(id string, fetched bool) {
	h.t.Helper()
	for _, f := range []string{"one.txt", "wip.txt"} {
		if _, err := os.Stat(filepath.Join(h.home, "state", id, "review", "clone", f)); err != nil {
			h.t.Fatalf("the clone lost %s: %v", f, err)
		}
	}
	if fetched {
		if got := h.git("show", "bot-bottle/"+id+":one.txt"); got != "one\n" {
			h.t.Fatalf("branch bot-bottle/%s lacks the work: %q", id, got)
		}
	}
}

// mergedOnce: HEAD is one merge commit on the HEAD of before, with the
// work checked out, the index clean; merging again merges nothing.
func (h *reviewHome) mergedOnce(before, out string) {
	h.t.Helper()
	if !strings.Contains(out, "merged bot-bottle/") {
		h.t.Fatalf("merge: %s", out)
	}
	first := strings.SplitN(strings.TrimPrefix(before, "HEAD ref: refs/heads/main -> "), "\n", 2)[0]
	if got := h.git("rev-parse", "HEAD^1"); strings.TrimSpace(got) != first {
		h.t.Fatalf("the merge is not on the HEAD it started from: %s, want %s", got, first)
	}
	if got := h.git("log", "-1", "--format=%s %an"); !strings.HasPrefix(got, "Merge bot-bottle/") || !strings.Contains(got, "Operator") {
		h.t.Fatalf("HEAD is %q", got)
	}
	if got := h.git("status", "--porcelain"); got != "" {
		h.t.Fatalf("after the merge: status %q", got)
	}
	h.hasFiles("one.txt", "wip.txt")
	id := strings.TrimPrefix(strings.TrimSpace(strings.SplitN(h.git("log", "-1", "--format=%s"), "\n", 2)[0]), "Merge bot-bottle/")
	again := h.run("merge", id)
	if !strings.Contains(again, "already merged") {
		h.t.Fatalf("merge again: %s", again)
	}
}
