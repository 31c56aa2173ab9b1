package review

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// benchRepo is a review bottle over a repository of n committed files,
// one of them changed and one added in the clone.
func benchRepo(b *testing.B, n int) Bottle {
	b.Helper()
	cfg := filepath.Join(b.TempDir(), "gitconfig")
	if err := os.WriteFile(cfg, []byte("[user]\n\tname = B\n\temail = b@example.test\n[safe]\n\tdirectory = *\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Setenv("GIT_CONFIG_GLOBAL", cfg)
	repo := filepath.Join(b.TempDir(), "repo")
	for i := 0; i < n; i++ {
		p := filepath.Join(repo, fmt.Sprintf("d%02d", i%50), fmt.Sprintf("f%04d.txt", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(fmt.Sprintf("file %d\n", i)), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	for _, args := range [][]string{{"init", "-q"}, {"add", "-A"}, {"commit", "-qm", "base"}} {
		if out, err := exec.Command("git", append([]string{"-C", repo}, args...)...).CombinedOutput(); err != nil {
			b.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	ctx := context.Background()
	p, err := Find(ctx, repo, "")
	if err != nil {
		b.Fatal(err)
	}
	bt := Bottle{Dir: filepath.Join(b.TempDir(), "review"), Identity: "bench-aaaaa", Repo: p.Top, Base: p.Base}
	if err := Create(ctx, bt, p, DefaultAuthor(bt.Identity)); err != nil {
		b.Fatal(err)
	}
	os.WriteFile(filepath.Join(bt.CloneDir(), "d00", "f0000.txt"), []byte("changed\n"), 0o644)
	os.WriteFile(filepath.Join(bt.CloneDir(), "new.txt"), []byte("new\n"), 0o644)
	return bt
}

// BenchmarkSnapshot is what every diff, apply, merge, rm and list pays per
// review bottle: reading its worktree (2,000 files) into core.git.
// BenchmarkGitStatus is the anchor: git status (untracked files included)
// on the same clone, what an operator would run by hand.
func BenchmarkSnapshot(b *testing.B) {
	bt := benchRepo(b, 2000)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := bt.Snapshot(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGitStatus(b *testing.B) {
	bt := benchRepo(b, 2000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if out, err := exec.Command("git", "-C", bt.CloneDir(), "status", "--porcelain", "--untracked-files=all").CombinedOutput(); err != nil {
			b.Fatalf("%v %s", err, out)
		}
	}
}
