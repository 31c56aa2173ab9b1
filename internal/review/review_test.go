package review

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// owner is the uid of the operator's repositories in these tests: not
// root, and not 1000 (an image's default user).
const owner = 4321

// testGit runs the host git as a plain user would (their config is the
// test's gitconfig), failing the test on error.
func testGit(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = os.Environ()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v in %s: %v\n%s", args, dir, err, out)
	}
	return strings.TrimSpace(string(out))
}

// setup gives the test an operator: a global git config with an identity
// and the test's repositories marked safe (they belong to another uid).
func setup(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the repositories belong to another uid")
	}
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatalf("git is not installed: %v", err)
	}
	cfg := filepath.Join(t.TempDir(), "gitconfig")
	if err := os.WriteFile(cfg, []byte("[user]\n\tname = Operator\n\temail = op@example.test\n[safe]\n\tdirectory = *\n[init]\n\tdefaultBranch = main\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GIT_CONFIG_GLOBAL", cfg)
	t.Setenv("GIT_CONFIG_NOSYSTEM", "1")
}

// operatorRepo makes a repository with a.txt and sub/keep committed,
// owned by owner.
func operatorRepo(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "project")
	write(t, filepath.Join(dir, "a.txt"), "one\ntwo\nthree\n")
	write(t, filepath.Join(dir, "sub", "keep"), "keep\n")
	testGit(t, dir, "init", "-q")
	testGit(t, dir, "add", "-A")
	testGit(t, dir, "commit", "-q", "-m", "base")
	chown(t, dir)
	return dir
}

func chown(t *testing.T, dir string) {
	t.Helper()
	if err := chownTree(dir, owner, owner); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// newBottle makes a review bottle of repo, as start --review does.
func newBottle(t *testing.T, repo, id string) Bottle {
	t.Helper()
	ctx := context.Background()
	p, err := Find(ctx, filepath.Join(repo, "sub"), "")
	if err != nil {
		t.Fatal(err)
	}
	if p.UID != owner || p.GID != owner {
		t.Fatalf("owner %d:%d, want %d", p.UID, p.GID, owner)
	}
	b := Bottle{Dir: filepath.Join(t.TempDir(), "review"), Identity: id, Repo: p.Top, Base: p.Base}
	if err := Create(ctx, b, p, DefaultAuthor(id)); err != nil {
		t.Fatal(err)
	}
	return b
}

// agentGit is the agent's git inside its clone: its own config, with its
// hooks off only so that planting them does not trip the test's marker.
func agentGit(t *testing.T, b Bottle, args ...string) string {
	t.Helper()
	return testGit(t, b.CloneDir(), append([]string{"-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false"}, args...)...)
}

// treeSum hashes every file of a tree (its .git too), to prove it unchanged.
func treeSum(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == ".git/index" || strings.HasPrefix(rel, ".git/logs") || strings.HasPrefix(rel, ".git/objects") {
			// git status refreshes the index's stat data; merge-tree
			// writes the objects of the merge it tried (unreachable).
			return nil
		}
		fmt.Fprintf(h, "%s\n", rel)
		if d.Type().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write(data)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

func TestCreateCloneIsTheOwnersAndItsOwn(t *testing.T) {
	setup(t)
	repo := operatorRepo(t)
	before := treeSum(t, repo)
	b := newBottle(t, repo, "shell-abcde")
	var bad []string
	_ = filepath.WalkDir(b.CloneDir(), func(p string, d fs.DirEntry, err error) error {
		fi, _ := os.Lstat(p)
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != owner {
			bad = append(bad, p)
		}
		return nil
	})
	if len(bad) > 0 {
		t.Fatalf("not owned by %d: %v", owner, bad)
	}
	if got := agentGit(t, b, "symbolic-ref", "HEAD"); got != "refs/heads/bot-bottle/shell-abcde" {
		t.Fatalf("HEAD %s", got)
	}
	if got := agentGit(t, b, "for-each-ref", "--format=%(refname)", "refs/heads", "refs/remotes"); got != "refs/heads/bot-bottle/shell-abcde" {
		t.Fatalf("refs %q", got)
	}
	if got := agentGit(t, b, "config", "user.email"); got != "shell-abcde@bot-bottle.invalid" {
		t.Fatalf("author %q", got)
	}
	if got := agentGit(t, b, "remote"); got != "" {
		t.Fatalf("remotes %q: the clone must not name the host's path", got)
	}
	if _, err := os.Stat(filepath.Join(b.CloneDir(), ".git", "objects", "info", "alternates")); err == nil {
		t.Fatal("the clone borrows objects the bottle cannot see")
	}
	if data, _ := os.ReadFile(filepath.Join(b.CloneDir(), "a.txt")); string(data) != "one\ntwo\nthree\n" {
		t.Fatalf("checkout: %q", data)
	}
	if treeSum(t, repo) != before {
		t.Fatal("creating the clone changed the operator's repository")
	}
}

func TestFindRefuses(t *testing.T) {
	setup(t)
	ctx := context.Background()
	if _, err := Find(ctx, t.TempDir(), ""); err == nil || !strings.Contains(err.Error(), "not in a git repository") {
		t.Fatalf("plain dir: %v", err)
	}
	repo := operatorRepo(t)
	write(t, filepath.Join(repo, "a.txt"), "dirty\n")
	if _, err := Find(ctx, repo, ""); err == nil || !strings.Contains(err.Error(), "uncommitted changes") {
		t.Fatalf("dirty: %v", err)
	}
	if _, err := Find(ctx, repo, "HEAD"); err != nil {
		t.Fatalf("dirty with --from: %v", err)
	}
	if _, err := Find(ctx, repo, "no-such-ref"); err == nil || !strings.Contains(err.Error(), "no such commit") {
		t.Fatalf("bad --from: %v", err)
	}
	if _, err := Find(ctx, repo, "--upload-pack=x"); err == nil {
		t.Fatal("an option as --from")
	}
}

func TestDiffApplyMergeTwoBottles(t *testing.T) {
	setup(t)
	ctx := context.Background()
	repo := operatorRepo(t)
	one := newBottle(t, repo, "shell-aaaaa")
	two := newBottle(t, repo, "shell-bbbbb")
	three := newBottle(t, repo, "shell-ccccc")
	write(t, filepath.Join(one.CloneDir(), "one.txt"), "from one\n")
	agentGit(t, one, "add", "one.txt")
	agentGit(t, one, "commit", "-q", "-m", "one")
	write(t, filepath.Join(one.CloneDir(), "loose.txt"), "uncommitted\n")
	write(t, filepath.Join(two.CloneDir(), "two.txt"), "from two\n")
	agentGit(t, two, "add", "two.txt")
	agentGit(t, two, "commit", "-q", "-m", "two")
	write(t, filepath.Join(three.CloneDir(), "a.txt"), "one\nTHREE WAS HERE\nthree\n")
	agentGit(t, three, "commit", "-q", "-am", "three")

	before := treeSum(t, repo)
	d1, err := one.Diff(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(paths(d1.Files)); got != "[loose.txt one.txt]" || d1.Commits != 1 || !d1.Uncommitted {
		t.Fatalf("diff one: %s commits=%d uncommitted=%v", got, d1.Commits, d1.Uncommitted)
	}
	if !strings.Contains(d1.Patch, "+from one") || !strings.Contains(d1.Stat, "2 files changed") {
		t.Fatalf("patch %q stat %q", d1.Patch, d1.Stat)
	}
	d2, err := two.Diff(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(paths(d2.Files)); got != "[two.txt]" || d2.Commits != 1 || d2.Uncommitted || d2.Files[0].Added != 1 {
		t.Fatalf("diff two: %+v", d2)
	}
	// Fetching added branches, nothing else.
	testGit(t, repo, "diff", "--quiet", "HEAD")
	if got := testGit(t, repo, "status", "--porcelain"); got != "" {
		t.Fatalf("status after diff: %q", got)
	}
	_ = before

	r, err := one.Apply(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(r.Files) != "[loose.txt one.txt]" {
		t.Fatalf("apply: %+v", r)
	}
	if got := testGit(t, repo, "status", "--porcelain"); got != "?? loose.txt\n?? one.txt" {
		t.Fatalf("after apply: %q", got)
	}
	if n, _ := one.Unmerged(ctx); n != 2 {
		t.Fatalf("unmerged after apply: %d", n)
	}
	testGit(t, repo, "add", "-A")
	testGit(t, repo, "commit", "-q", "-m", "took one")

	m, err := two.Merge(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.Commit == "" || fmt.Sprint(m.Files) != "[two.txt]" {
		t.Fatalf("merge: %+v", m)
	}
	if got := testGit(t, repo, "log", "-1", "--format=%an %s"); got != "Operator Merge bot-bottle/shell-bbbbb" {
		t.Fatalf("merge commit: %q", got)
	}
	if n, _ := two.Unmerged(ctx); n != 0 {
		t.Fatalf("unmerged after merge: %d", n)
	}

	// The operator changed a.txt meanwhile: three conflicts both ways.
	write(t, filepath.Join(repo, "a.txt"), "one\noperator\nthree\n")
	testGit(t, repo, "commit", "-q", "-am", "operator")
	if _, err := three.Diff(ctx, false); err != nil {
		t.Fatal(err)
	}
	mid := treeSum(t, repo) // with three's branch fetched
	head := testGit(t, repo, "rev-parse", "HEAD")
	_, err = three.Merge(ctx)
	var ce *ConflictError
	if !errors.As(err, &ce) || fmt.Sprint(ce.Paths) != "[a.txt]" {
		t.Fatalf("merge three: %v", err)
	}
	_, err = three.Apply(ctx)
	if !errors.As(err, &ce) || fmt.Sprint(ce.Paths) != "[a.txt]" || ce.Op != "apply" {
		t.Fatalf("apply three: %v", err)
	}
	if treeSum(t, repo) != mid || testGit(t, repo, "rev-parse", "HEAD") != head {
		t.Fatal("a refused merge or apply changed the operator's repository")
	}
	if err := three.DropBranch(ctx); err != nil {
		t.Fatal(err)
	}
	if three.hasBranch(ctx) {
		t.Fatal("branch kept")
	}
}

// TestHostileAgent: the agent plants hooks, fsmonitor, hooksPath, filter,
// textconv and merge drivers, attributes and a crafted .git file in all it
// can reach; no review command, nor the operator's own git status after
// merge, runs any of it.
func TestHostileAgent(t *testing.T) {
	setup(t)
	ctx := context.Background()
	repo := operatorRepo(t)
	b := newBottle(t, repo, "shell-evil1")
	marker := filepath.Join(t.TempDir(), "ran")
	evil := fmt.Sprintf("#!/bin/sh\necho \"$0 $*\" >> %s\n", marker)
	clone := b.CloneDir()

	// What the agent commits: a filter, diff and merge driver named for
	// every path, and its change.
	write(t, filepath.Join(clone, ".gitattributes"), "* filter=evil diff=evil merge=evil\n")
	write(t, filepath.Join(clone, "b.txt"), "agent\n")
	agentGit(t, b, "add", "-A")
	agentGit(t, b, "commit", "-q", "-m", "agent")
	// What it plants after.
	hooks := filepath.Join(clone, ".git", "hooks")
	alt := filepath.Join(clone, "myhooks")
	for _, h := range []string{"post-checkout", "pre-commit", "post-merge", "pre-merge-commit", "commit-msg",
		"reference-transaction", "post-applypatch", "pre-applypatch", "post-rewrite", "pre-auto-gc", "post-index-change"} {
		for _, d := range []string{hooks, alt} {
			write(t, filepath.Join(d, h), evil)
			os.Chmod(filepath.Join(d, h), 0o755)
		}
	}
	script := filepath.Join(clone, "evil.sh")
	write(t, script, evil+"cat\n")
	os.Chmod(script, 0o755)
	cfg := fmt.Sprintf(`[core]
	fsmonitor = %[1]s
	hooksPath = %[2]s
	sshCommand = %[1]s
	pager = %[1]s
	alternateRefsCommand = %[1]s
[filter "evil"]
	clean = %[1]s
	smudge = %[1]s
	process = %[1]s
	required = true
[diff "evil"]
	textconv = %[1]s
	command = %[1]s
[merge "evil"]
	driver = %[1]s
[uploadpack]
	packObjectsHook = %[1]s
[user]
	name = agent
	email = agent@example.test
`, script, alt)
	f, err := os.OpenFile(filepath.Join(clone, ".git", "config"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(cfg)
	f.Close()
	write(t, filepath.Join(clone, ".git", "info", "attributes"), "* filter=evil diff=evil merge=evil\n")
	// A crafted .git file in a subdirectory, pointing at a repository whose
	// config runs the script.
	evilDir := filepath.Join(clone, "evilgit")
	testGit(t, clone, "init", "-q", "--bare", evilDir)
	ef, _ := os.OpenFile(filepath.Join(evilDir, "config"), os.O_APPEND|os.O_WRONLY, 0)
	ef.WriteString(cfg)
	ef.Close()
	write(t, filepath.Join(clone, "sub", ".git"), "gitdir: "+evilDir+"\n")
	write(t, filepath.Join(clone, "deep", "x", ".GIT"), "gitdir: "+evilDir+"\n")
	// Uncommitted work too, under the filter.
	write(t, filepath.Join(clone, "c.txt"), "uncommitted\n")
	chown(t, clone)

	ran := func(when string) {
		t.Helper()
		if data, err := os.ReadFile(marker); err == nil {
			t.Fatalf("%s ran the agent's code: %s", when, data)
		}
	}
	d, err := b.Diff(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	ran("diff")
	for _, f := range d.Files {
		if strings.Contains(strings.ToLower(f.Path), ".git/") || strings.HasSuffix(strings.ToLower(f.Path), ".git") {
			t.Fatalf("a .git path reached the review: %s", f.Path)
		}
	}
	if !strings.Contains(fmt.Sprint(paths(d.Files)), "c.txt") {
		t.Fatalf("uncommitted work missing: %v", paths(d.Files))
	}
	if _, err := b.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	ran("apply")
	testGit(t, repo, "status")
	ran("git status after apply")
	testGit(t, repo, "reset", "-q", "--hard")
	testGit(t, repo, "clean", "-qfdx")
	if _, err := b.Merge(ctx); err != nil {
		t.Fatal(err)
	}
	ran("merge")
	testGit(t, repo, "status")
	testGit(t, repo, "diff", "HEAD~1")
	ran("git status and diff after merge")
	// A later fetch of the same work is the same commit: still merged.
	if n, err := b.Unmerged(ctx); err != nil || n != 0 {
		t.Fatalf("unmerged after merge: %d %v", n, err)
	}
	if _, err := b.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := b.Unmerged(ctx); err != nil || n != 0 {
		t.Fatalf("unmerged after a second fetch: %d %v", n, err)
	}
	if data, _ := os.ReadFile(filepath.Join(repo, "b.txt")); string(data) != "agent\n" {
		t.Fatalf("merged b.txt: %q", data)
	}
	if _, err := os.Lstat(filepath.Join(repo, "sub", ".git")); err == nil {
		t.Fatal("the crafted .git file reached the operator's tree")
	}

	// The agent swaps its .git for a file pointing at the evil repository:
	// review refuses to read it.
	if err := os.Rename(filepath.Join(clone, ".git"), filepath.Join(clone, "old.git")); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(clone, ".git"), "gitdir: "+evilDir+"\n")
	if _, err := b.Diff(ctx, false); !errors.Is(err, ErrHostile) {
		t.Fatalf("crafted .git: %v", err)
	}
	os.Remove(filepath.Join(clone, ".git"))
	os.Rename(filepath.Join(clone, "old.git"), filepath.Join(clone, ".git"))
	// Borrowed objects are refused too.
	write(t, filepath.Join(clone, ".git", "objects", "info", "alternates"), filepath.Join(repo, ".git", "objects")+"\n")
	if _, err := b.Diff(ctx, false); !errors.Is(err, ErrHostile) {
		t.Fatalf("alternates: %v", err)
	}
	os.Remove(filepath.Join(clone, ".git", "objects", "info", "alternates"))
	// HEAD naming a path out of refs/heads.
	write(t, filepath.Join(clone, ".git", "HEAD"), "ref: refs/heads/../../../../etc/passwd\n")
	if _, err := b.Diff(ctx, false); !errors.Is(err, ErrHostile) {
		t.Fatalf("HEAD escape: %v", err)
	}
	ran("the refusals")
}

func TestQuote(t *testing.T) {
	if got := quote("a \"b\"\\\n\x01é"); got != `"a \"b\"\\\n\001é"` {
		t.Fatalf("%s", got)
	}
}

// Merge refuses, with the paths and nothing changed, what stands in the
// way of its checkout: a dirty tracked file the merge changes, an
// untracked file it would overwrite, staged changes. No journal is left.
func TestMergeRefusesWhatIsInTheWay(t *testing.T) {
	setup(t)
	ctx := context.Background()
	repo := operatorRepo(t)
	b := newBottle(t, repo, "shell-ccccc")
	write(t, filepath.Join(b.CloneDir(), "a.txt"), "bottle\n")
	write(t, filepath.Join(b.CloneDir(), "new.txt"), "new\n")
	agentGit(t, b, "add", "-A")
	agentGit(t, b, "commit", "-q", "-m", "work")
	// The branch is fetched first: that is all a refused merge adds.
	if _, err := b.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, why string
		make      func()
		undo      func()
	}{
		{"dirty", "local changes would be overwritten at: a.txt",
			func() { write(t, filepath.Join(repo, "a.txt"), "dirty\n") },
			func() { testGit(t, repo, "checkout", "-q", "a.txt") }},
		{"untracked", "local changes would be overwritten at: new.txt",
			func() { write(t, filepath.Join(repo, "new.txt"), "mine\n") },
			func() { os.Remove(filepath.Join(repo, "new.txt")) }},
		{"staged", "the index has staged changes at: sub/keep",
			func() { write(t, filepath.Join(repo, "sub", "keep"), "staged\n"); testGit(t, repo, "add", "sub/keep") },
			func() { testGit(t, repo, "reset", "-q", "--hard") }},
	} {
		c.make()
		sum := treeSum(t, repo)
		head := testGit(t, repo, "rev-parse", "HEAD")
		_, err := b.Merge(ctx)
		var ce *ConflictError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), c.why) {
			t.Fatalf("%s: merge: %v", c.name, err)
		}
		if treeSum(t, repo) != sum || testGit(t, repo, "rev-parse", "HEAD") != head {
			t.Fatalf("%s: a refused merge changed the repository", c.name)
		}
		if _, err := os.Stat(b.journalPath()); err == nil {
			t.Fatalf("%s: a refused merge left its journal", c.name)
		}
		c.undo()
	}
	if _, err := b.Merge(ctx); err != nil {
		t.Fatal(err)
	}
	if got := testGit(t, repo, "status", "--porcelain"); got != "" {
		t.Fatalf("after merge: %q", got)
	}
}
