package review

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// BranchPrefix names every bottle's branch: bot-bottle/<identity>, in the
// clone and, once fetched, in the operator's repository.
const BranchPrefix = "bot-bottle/"

// Project is the operator's repository a --review bottle starts from.
type Project struct {
	Top      string // top level of the operator's worktree
	Base     string // the commit the bottle's branch starts at
	UID, GID int    // the repository's owner: the clone is theirs
}

// Find resolves dir to its repository and from (a revision; "" for HEAD) to
// a commit. A directory in no repository, a bare repository and, without
// from, a checkout with uncommitted changes to tracked files are refused:
// the bottle starts from a commit, and changes it would not see must not
// look as if it did.
func Find(ctx context.Context, dir, from string) (Project, error) {
	op := gitCmd{dir: dir, safeDirs: []string{"*"}}
	op.args = []string{"rev-parse", "--is-inside-work-tree", "--show-toplevel"}
	out, err := op.run(ctx)
	if err != nil {
		return Project{}, fmt.Errorf("--review: %s is not in a git repository (git init it and commit first)", dir)
	}
	lines := strings.Split(trim(out), "\n")
	if len(lines) != 2 || lines[0] != "true" {
		return Project{}, fmt.Errorf("--review: %s is not in a git worktree", dir)
	}
	p := Project{Top: lines[1]}
	fi, err := os.Stat(p.Top)
	if err != nil {
		return Project{}, fmt.Errorf("--review: %w", err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		p.UID, p.GID = int(st.Uid), int(st.Gid)
	}
	rev := from
	if rev == "" {
		rev = "HEAD"
	}
	if strings.HasPrefix(rev, "-") {
		return Project{}, fmt.Errorf("--from %s: not a revision", from)
	}
	o := p.operator("rev-parse", "--verify", "--quiet", "--end-of-options", rev+"^{commit}")
	out, err = o.run(ctx)
	if err != nil {
		if from == "" {
			return Project{}, fmt.Errorf("--review: %s has no commit yet (commit first)", p.Top)
		}
		return Project{}, fmt.Errorf("--from %s: no such commit in %s", from, p.Top)
	}
	p.Base = trim(out)
	if from == "" {
		out, err = p.operator("status", "--porcelain", "--untracked-files=no").run(ctx)
		if err != nil {
			return Project{}, fmt.Errorf("--review: %w", err)
		}
		if len(bytes.TrimSpace(out)) > 0 {
			return Project{}, fmt.Errorf("--review: %s has uncommitted changes, which the bottle would not get: commit or stash them, or start from a commit with --from REF", p.Top)
		}
	}
	return p, nil
}

// operator is the operator's git in their repository.
func (p Project) operator(args ...string) gitCmd {
	return gitCmd{dir: p.Top, args: args, safeDirs: []string{p.Top, filepath.Join(p.Top, ".git")}}
}

// Author is who the agent's commits say made them.
type Author struct{ Name, Email string }

// DefaultAuthor says which bottle made a commit.
func DefaultAuthor(identity string) Author {
	return Author{Name: "bot-bottle " + identity, Email: identity + "@bot-bottle.invalid"}
}

// ParseAuthor reads "Name <email>".
func ParseAuthor(s string) (Author, error) {
	name, rest, ok := strings.Cut(s, "<")
	email, tail, ok2 := strings.Cut(rest, ">")
	name = strings.TrimSpace(name)
	if !ok || !ok2 || strings.TrimSpace(tail) != "" || name == "" || email == "" ||
		strings.ContainsAny(s, "\n\r\x00") || strings.ContainsAny(email, "<> ") {
		return Author{}, fmt.Errorf("--author %q: want \"Name <email>\"", s)
	}
	return Author{Name: name, Email: email}, nil
}

// Bottle is one bottle's review: its directory in the bottle's state (the
// clone the agent works in and core.git, the core's own repository beside
// it), and the operator's repository it came from.
type Bottle struct {
	Dir      string // the bottle's review directory (in its state)
	Identity string
	Repo     string // the operator's repository (top level)
	Base     string // the commit the branch started from
	// Halt is called at each kill point below with its name: the
	// lifecycle's crash-test hook (lifecycle.EnvTestHalt), nil elsewhere.
	Halt func(point string)
}

// The review flows' kill points, in the order a merge passes them: the
// crash tests stop the core at each and check that the operator's
// repository is as before or as after, or that the next command finishes
// what was cut off.
const (
	HaltSnapshotted     = "review-snapshotted"       // the clone's work is a commit in core.git
	HaltFetched         = "review-fetched"           // and the operator's repository has it as the bottle's branch
	HaltMergeCommitted  = "review-merge-committed"   // merge: the merge commit is made and journalled, nothing checked out
	HaltMergeCheckedOut = "review-merge-checked-out" // merge: the index and worktree are the merge's, HEAD not yet
)

func (b Bottle) halt(point string) {
	if b.Halt != nil {
		b.Halt(point)
	}
}

// Branch is the bottle's branch name.
func (b Bottle) Branch() string { return BranchPrefix + b.Identity }

func (b Bottle) branchRef() string { return "refs/heads/" + b.Branch() }

// CloneDir is the clone the agent works in: the bottle's project.
func (b Bottle) CloneDir() string { return filepath.Join(b.Dir, "clone") }

func (b Bottle) coreDir() string { return filepath.Join(b.Dir, "core.git") }

// core is the core's git on core.git.
func (b Bottle) core(args ...string) gitCmd {
	return gitCmd{core: true, args: append([]string{"--git-dir=" + b.coreDir()}, args...)}
}

func (b Bottle) operator(args ...string) gitCmd {
	return Project{Top: b.Repo}.operator(args...)
}

// Create makes the bottle's clone of p at p.Base on its branch, owned by
// p's owner, and core.git. The clone is a copy of the objects, neither
// hardlinked (the agent could rewrite a shared inode) nor borrowing the
// operator's objects by alternates (the bottle sees only its mount).
// Submodules are not cloned: their gitlinks stay as they are.
func Create(ctx context.Context, b Bottle, p Project, a Author) error {
	clone := b.CloneDir()
	if err := os.MkdirAll(b.Dir, 0o700); err != nil {
		return err
	}
	fresh := gitCmd{core: true, safeDirs: []string{p.Top, filepath.Join(p.Top, ".git")}, args: []string{
		"clone", "--quiet", "--no-local", "--no-hardlinks", "--no-checkout", "--template=", "--no-tags",
		// A local transport drops -c settings for upload-pack: it is told
		// itself that the operator's repository is safe to read.
		"--upload-pack=git -c safe.directory=" + shellQuote(p.Top) + " -c safe.directory=" + shellQuote(filepath.Join(p.Top, ".git")) + " upload-pack",
		"--end-of-options", p.Top, clone}}
	if _, err := fresh.run(ctx); err != nil {
		return fmt.Errorf("clone %s: %w", p.Top, err)
	}
	// The clone is the core's until it is handed over: its own config only.
	in := func(args ...string) gitCmd {
		return gitCmd{core: true, safeDirs: []string{clone}, args: append([]string{"--git-dir=" + filepath.Join(clone, ".git"), "--work-tree=" + clone}, args...)}
	}
	steps := [][]string{
		{"update-ref", b.branchRef(), p.Base},
		{"symbolic-ref", "HEAD", b.branchRef()},
		{"remote", "remove", "origin"},
		{"config", "user.name", a.Name},
		{"config", "user.email", a.Email},
		{"reset", "--quiet", "--hard", "HEAD"},
	}
	for _, s := range steps {
		if _, err := in(s...).run(ctx); err != nil {
			return fmt.Errorf("prepare the clone of %s: %w", p.Top, err)
		}
	}
	// Other local branches the clone made are the operator's, not the bottle's.
	out, err := in("for-each-ref", "--format=%(refname)", "refs/heads/").run(ctx)
	if err != nil {
		return fmt.Errorf("prepare the clone of %s: %w", p.Top, err)
	}
	for _, ref := range strings.Fields(string(out)) {
		if ref != b.branchRef() {
			if _, err := in("update-ref", "-d", ref).run(ctx); err != nil {
				return fmt.Errorf("prepare the clone of %s: %w", p.Top, err)
			}
		}
	}
	if _, err := (gitCmd{core: true, args: []string{"init", "--quiet", "--bare", "--template=", b.coreDir()}}).run(ctx); err != nil {
		return fmt.Errorf("create %s: %w", b.coreDir(), err)
	}
	// The clone's objects are read through alternates; its commit-graph,
	// multi-pack index and bitmaps beside them are the agent's claims
	// about those objects, not data git checks, so core.git trusts none.
	// (Its config, not -c: upload-pack run for a fetch reads only this.)
	for _, kv := range [][2]string{{"core.commitGraph", "false"}, {"core.multiPackIndex", "false"},
		{"pack.useBitmaps", "false"}, {"fetch.writeCommitGraph", "false"}, {"gc.auto", "0"}} {
		if _, err := b.core("config", kv[0], kv[1]).run(ctx); err != nil {
			return fmt.Errorf("configure %s: %w", b.coreDir(), err)
		}
	}
	alt := filepath.Join(b.coreDir(), "objects", "info")
	if err := os.MkdirAll(alt, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(alt, "alternates"), []byte(filepath.Join(clone, ".git", "objects")+"\n"), 0o600); err != nil {
		return err
	}
	if os.Geteuid() == 0 || os.Geteuid() != p.UID {
		if err := chownTree(clone, p.UID, p.GID); err != nil {
			return fmt.Errorf("give the clone to uid %d: %w", p.UID, err)
		}
	}
	return nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func chownTree(dir string, uid, gid int) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, gid)
	})
}

// Snapshot is what the bottle's clone holds, as commits in core.git.
type Snapshot struct {
	Head        string // the clone's HEAD commit (what the agent committed)
	Tip         string // Head, or a commit on it of the uncommitted work
	Uncommitted bool   // the worktree differs from Head
}

// ErrHostile is a clone whose .git the core refuses to read.
var ErrHostile = errors.New("the bottle's clone is not a repository the core will read")

// Snapshot records the clone's HEAD and its worktree (tracked changes and
// untracked files that its .gitignore does not exclude) as a commit in
// core.git, and points core.git's refs/bot-bottle/tip at it.
func (b Bottle) Snapshot(ctx context.Context) (Snapshot, error) {
	head, err := readHead(b.CloneDir())
	if err != nil {
		return Snapshot{}, fmt.Errorf("review %s: %w", b.Identity, err)
	}
	if t, err := b.core("cat-file", "-t", head).run(ctx); err != nil || trim(t) != "commit" {
		return Snapshot{}, fmt.Errorf("review %s: its HEAD %s is not a commit", b.Identity, head)
	}
	work, err := b.commitWorktree(ctx, head)
	if err != nil {
		return Snapshot{}, fmt.Errorf("review %s: %w", b.Identity, err)
	}
	s := Snapshot{Head: head, Tip: head}
	out, err := b.core("rev-parse", head+"^{tree}", work+"^{tree}").run(ctx)
	if err != nil {
		return Snapshot{}, fmt.Errorf("review %s: %w", b.Identity, err)
	}
	if trees := strings.Fields(string(out)); len(trees) != 2 || trees[0] != trees[1] {
		s.Tip, s.Uncommitted = work, true
	}
	if _, err := b.core("update-ref", "refs/bot-bottle/tip", s.Tip).run(ctx); err != nil {
		return Snapshot{}, fmt.Errorf("review %s: %w", b.Identity, err)
	}
	b.halt(HaltSnapshotted)
	return s, nil
}

// Fetch snapshots the clone and brings the snapshot into the operator's
// repository as the bottle's branch (replacing what an earlier fetch put
// there). Nothing of the clone's config is read: upload-pack runs in
// core.git.
func (b Bottle) Fetch(ctx context.Context) (Snapshot, error) {
	if err := b.PendingMerge(ctx); err != nil {
		return Snapshot{}, err
	}
	s, err := b.Snapshot(ctx)
	if err != nil {
		return s, err
	}
	f := b.operator("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules",
		"--end-of-options", b.coreDir(), "+refs/bot-bottle/tip:"+b.branchRef())
	f.safeDirs = append(f.safeDirs, b.coreDir())
	if _, err := f.run(ctx); err != nil {
		return s, fmt.Errorf("fetch %s into %s: %w", b.Branch(), b.Repo, err)
	}
	b.halt(HaltFetched)
	return s, nil
}

// Commits counts the bottle's commits on its fetched branch: those not in
// its base (the snapshot of uncommitted work included).
func (b Bottle) commits(ctx context.Context) (int, error) {
	out, err := b.operator("rev-list", "--count", b.branchRef(), "^"+b.Base).run(ctx)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(trim(out))
}

// Unmerged counts the commits of the fetched branch that neither the base
// nor the operator's HEAD has: what deleting the branch would lose. A
// branch that was never fetched has none.
func (b Bottle) Unmerged(ctx context.Context) (int, error) {
	if !b.hasBranch(ctx) {
		return 0, nil
	}
	out, err := b.operator("rev-list", "--count", b.branchRef(), "^"+b.Base, "^HEAD").run(ctx)
	if err != nil {
		return 0, fmt.Errorf("branch %s in %s: %w", b.Branch(), b.Repo, err)
	}
	return strconv.Atoi(trim(out))
}

func (b Bottle) hasBranch(ctx context.Context) bool {
	_, err := b.operator("rev-parse", "--verify", "--quiet", b.branchRef()).run(ctx)
	return err == nil
}

// DropBranch deletes the bottle's fetched branch from the operator's
// repository (nothing when there is none), unless it is checked out.
func (b Bottle) DropBranch(ctx context.Context) error {
	if !b.hasBranch(ctx) {
		return nil
	}
	if out, err := b.operator("symbolic-ref", "--quiet", "HEAD").run(ctx); err == nil && trim(out) == b.branchRef() {
		return fmt.Errorf("branch %s is checked out in %s; switch away from it first", b.Branch(), b.Repo)
	}
	if _, err := b.operator("update-ref", "-d", b.branchRef()).run(ctx); err != nil {
		return fmt.Errorf("delete branch %s in %s: %w", b.Branch(), b.Repo, err)
	}
	return nil
}
