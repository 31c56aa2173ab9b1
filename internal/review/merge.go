package review

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/google/renameio/v2"
)

// Merge merges the bottle's branch into the operator's current branch with
// a merge commit (the operator's identity). A merge that would conflict is
// refused with the conflicting paths before anything is touched, and so is
// one that staged changes or local changes stand in the way of. No hook
// runs: the operator's commit hooks would run on the agent's tree (a
// pre-commit framework reads its config from it); they run again at the
// operator's next own commit.
//
// It is git merge in steps, so that a kill between them is recoverable:
// the merge commit is made (objects only), journalled in the bottle's
// review directory, checked out into the index and worktree (read-tree,
// all or nothing), and only then is the branch moved to it (update-ref
// from the HEAD it was made on). A merge cut off after the checkout is
// finished by the next merge; every other review command refuses until
// then (PendingMerge).
func (b Bottle) Merge(ctx context.Context) (Result, error) {
	finished, err := b.finishMerge(ctx)
	if err != nil {
		return Result{}, err
	}
	d, err := b.Diff(ctx, false)
	if err != nil {
		return Result{}, err
	}
	r := Result{Identity: b.Identity, Repo: b.Repo, Branch: b.Branch(), Files: paths(d.Files)}
	out, err := b.operator("rev-parse", "--verify", "--quiet", "HEAD^{commit}").run(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("merge %s: %s has no commit checked out", b.Identity, b.Repo)
	}
	before := trim(out)
	out, err = b.operator("rev-parse", "--verify", "--quiet", b.branchRef()+"^{commit}").run(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("merge %s: %w", b.Identity, err)
	}
	tip := trim(out)
	if _, err := b.operator("merge-base", "--is-ancestor", tip, before).run(ctx); err == nil {
		// Already merged (git merge says "Already up to date").
		r.Commit = finished
		return r, nil
	} else if exitCode(err) != 1 {
		return Result{}, fmt.Errorf("merge %s: %w", b.Identity, err)
	}
	ref := "HEAD" // detached: HEAD itself moves
	if out, err := b.operator("symbolic-ref", "--quiet", "HEAD").run(ctx); err == nil {
		ref = trim(out)
	}
	staged, err := b.operator("diff-index", "--cached", "--name-only", "-z", "--no-renames", before).run(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("merge %s: %w", b.Identity, err)
	}
	if ps := nulList(staged); len(ps) > 0 {
		return Result{}, &ConflictError{Op: "merge", Repo: b.Repo, Why: "the index has staged changes at", Paths: ps}
	}
	out, err = b.operator("merge-tree", "--write-tree", "--name-only", "--no-messages", "-z", before, tip).run(ctx)
	fields := bytes.Split(out, []byte{0})
	switch {
	case err == nil:
	case exitCode(err) == 1:
		set := map[string]bool{}
		for i, f := range fields {
			if i > 0 && len(f) > 0 {
				set[string(f)] = true
			}
		}
		return Result{}, &ConflictError{Op: "merge", Repo: b.Repo, Why: "the branch conflicts with HEAD at", Paths: sorted(set)}
	default:
		return Result{}, fmt.Errorf("merge %s: %w", b.Identity, err)
	}
	tree := string(fields[0])
	out, err = b.operator("commit-tree", tree, "-p", before, "-p", tip, "-m", "Merge "+b.Branch()).run(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("merge %s: %w", b.Identity, err)
	}
	commit := trim(out)
	// Stale stat data would make read-tree call clean files dirty; exit 1
	// is "needs update", i.e. a file really is changed.
	if _, err := b.operator("update-index", "--refresh").run(ctx); err != nil && exitCode(err) != 1 {
		return Result{}, fmt.Errorf("merge %s: %w", b.Identity, err)
	}
	// A lock on the branch would stop the ref move only after the checkout:
	// refuse before, the way git names a lock it cannot take.
	if err := b.refUnlocked(ctx, ref); err != nil {
		return Result{}, fmt.Errorf("merge %s: %w", b.Identity, err)
	}
	j := mergeJournal{Repo: b.Repo, Ref: ref, Before: before, Commit: commit, Tree: tree}
	if err := b.writeJournal(j); err != nil {
		return Result{}, fmt.Errorf("merge %s: %w", b.Identity, err)
	}
	b.halt(HaltMergeCommitted)
	if _, stderr, err := b.operator("read-tree", "-m", "-u", before, commit).output(ctx); err != nil {
		b.dropJournal()
		if ps := readTreeRefusals(stderr); len(ps) > 0 {
			return Result{}, &ConflictError{Op: "merge", Repo: b.Repo, Why: "local changes would be overwritten at", Paths: ps}
		}
		return Result{}, fmt.Errorf("merge %s: %w", b.Identity, err)
	}
	b.halt(HaltMergeCheckedOut)
	if err := b.moveRef(ctx, j); err != nil {
		return Result{}, err
	}
	r.Commit = commit
	return r, nil
}

// mergeJournal is a merge under way: written before the operator's index
// and worktree are touched, removed once their branch is moved.
type mergeJournal struct {
	Repo   string `json:"repo"`
	Ref    string `json:"ref"`    // the ref HEAD names, or HEAD when detached
	Before string `json:"before"` // the commit HEAD was
	Commit string `json:"commit"` // the merge commit
	Tree   string `json:"tree"`   // its tree: what the index is once checked out
}

func (b Bottle) journalPath() string { return filepath.Join(b.Dir, "merge.json") }

func (b Bottle) writeJournal(j mergeJournal) error {
	data, err := json.Marshal(j)
	if err != nil {
		return err
	}
	path := b.journalPath()
	return renameio.WriteFile(path, data, 0o600, renameio.WithTempDir(filepath.Dir(path)))
}

func (b Bottle) readJournal() (mergeJournal, bool, error) {
	var j mergeJournal
	data, err := os.ReadFile(b.journalPath())
	if errors.Is(err, os.ErrNotExist) {
		return j, false, nil
	}
	if err != nil {
		return j, false, err
	}
	if err := json.Unmarshal(data, &j); err != nil || j.Before == "" || j.Commit == "" || j.Tree == "" || j.Ref == "" {
		// A journal is written whole (rename); one that does not parse
		// was not ours to finish.
		return j, false, nil
	}
	return j, true, nil
}

func (b Bottle) dropJournal() { _ = os.Remove(b.journalPath()) }

// mergeState is where a journalled merge got to in the operator's
// repository.
type mergeState int

const (
	mergeUntouched  mergeState = iota // HEAD and index as before: nothing was checked out
	mergeCheckedOut                   // index is the merge's, HEAD as before: only the ref move is missing
	mergeDone                         // HEAD is the merge commit
	mergeElsewhere                    // the operator has moved on since: nothing of ours to finish
)

func (b Bottle) mergeState(ctx context.Context, j mergeJournal) (mergeState, error) {
	out, err := b.operator("rev-parse", "--verify", "--quiet", "HEAD^{commit}").run(ctx)
	if err != nil {
		return mergeElsewhere, nil
	}
	switch head := trim(out); {
	case head == j.Commit:
		return mergeDone, nil
	case head != j.Before:
		return mergeElsewhere, nil
	}
	// diff-index --cached reads the index and writes nothing (no lock).
	for _, c := range []struct {
		tree  string
		state mergeState
	}{{j.Commit, mergeCheckedOut}, {j.Before, mergeUntouched}} {
		_, err := b.operator("diff-index", "--cached", "--quiet", c.tree).run(ctx)
		if err == nil {
			return c.state, nil
		}
		if exitCode(err) != 1 {
			return 0, fmt.Errorf("merge %s: %w", b.Identity, err)
		}
	}
	return mergeElsewhere, nil
}

// finishMerge finishes a merge a kill cut off after its checkout and
// returns its commit ("" when there was none to finish); a journal of a
// merge that never touched anything, or that the operator has moved past,
// is dropped.
func (b Bottle) finishMerge(ctx context.Context) (string, error) {
	j, ok, err := b.readJournal()
	if err != nil || !ok {
		return "", err
	}
	st, err := b.mergeState(ctx, j)
	if err != nil {
		return "", err
	}
	if st != mergeCheckedOut {
		b.dropJournal()
		return "", nil
	}
	if err := b.moveRef(ctx, j); err != nil {
		return "", err
	}
	return j.Commit, nil
}

// moveRef moves the operator's branch from the commit the merge was made
// on to the merge (refused if it moved meanwhile) and ends the journal.
func (b Bottle) moveRef(ctx context.Context, j mergeJournal) error {
	args := []string{"update-ref", "-m", "merge " + b.Branch() + ": by bot-bottle"}
	if j.Ref == "HEAD" {
		args = append(args, "--no-deref")
	}
	if _, err := b.operator(append(args, j.Ref, j.Commit, j.Before)...).run(ctx); err != nil {
		return fmt.Errorf("merge %s: %w", b.Identity, err)
	}
	b.dropJournal()
	return nil
}

// PendingMerge refuses while a merge of this bottle was cut off between
// checking out and moving the branch: the operator's index is the merge's
// and HEAD is not, which only finishing (or undoing) it makes consistent.
func (b Bottle) PendingMerge(ctx context.Context) error {
	j, ok, err := b.readJournal()
	if err != nil || !ok {
		return err
	}
	st, err := b.mergeState(ctx, j)
	if err != nil {
		return err
	}
	if st != mergeCheckedOut {
		b.dropJournal()
		return nil
	}
	return fmt.Errorf("a merge of %s into %s was cut off before it moved %s: finish it with bot-bottle merge %s (or undo it with git -C %s reset --merge)",
		b.Branch(), b.Repo, strings.TrimPrefix(j.Ref, "refs/heads/"), b.Identity, b.Repo)
}

func nulList(b []byte) []string {
	var out []string
	for _, f := range bytes.Split(b, []byte{0}) {
		if len(f) > 0 {
			out = append(out, string(f))
		}
	}
	return out
}

// readTreeRefusals are the paths read-tree -m -u would not overwrite:
// "Entry 'P' not uptodate. Cannot merge.", "Untracked working tree file
// 'P' would be overwritten by merge." and the like.
var readTreeRefusal = regexp.MustCompile(`^error: (?:Entry|Untracked working tree file) '(.+)' (?:not uptodate|would be)`)

func readTreeRefusals(stderr []byte) []string {
	set := map[string]bool{}
	for _, line := range strings.Split(string(stderr), "\n") {
		if m := readTreeRefusal.FindStringSubmatch(line); m != nil {
			set[m[1]] = true
		}
	}
	if len(set) == 0 {
		return nil
	}
	return sorted(set)
}

// refUnlocked refuses when ref's lock file exists (a running git's, or one
// a killed git left).
func (b Bottle) refUnlocked(ctx context.Context, ref string) error {
	where := "--git-common-dir"
	if ref == "HEAD" {
		where = "--git-dir"
	}
	out, err := b.operator("rev-parse", "--path-format=absolute", where).run(ctx)
	if err != nil {
		return err
	}
	lock := filepath.Join(trim(out), filepath.FromSlash(ref)) + ".lock"
	if _, err := os.Lstat(lock); err == nil {
		return (&gitError{args: []string{"update-ref"}, stderr: "Unable to create '" + lock + "': File exists."})
	}
	return nil
}
