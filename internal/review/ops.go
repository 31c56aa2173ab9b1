package review

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// FileChange is one path the bottle changed against its base.
type FileChange struct {
	Path   string `json:"path"`
	Status string `json:"status"` // git's letter: A, M, D, T
	// Added and Deleted count lines; both are -1 for a binary file.
	Added   int `json:"added"`
	Deleted int `json:"deleted"`
}

// Diff is what a bottle changed against its base, committed and not, as
// its fetched branch holds it.
type Diff struct {
	Identity    string       `json:"identity"`
	Repo        string       `json:"repo"`
	Branch      string       `json:"branch"`
	Base        string       `json:"base"`
	Tip         string       `json:"tip"`
	Commits     int          `json:"commits"` // the agent's own, without the snapshot of uncommitted work
	Uncommitted bool         `json:"uncommitted"`
	Files       []FileChange `json:"files"`
	// Patch is the whole diff (binary files as a line saying so); its text
	// is the agent's: render it before it reaches a terminal.
	Patch string `json:"patch,omitempty"`
	// Stat is git's --stat of it.
	Stat string `json:"-"`
}

// diffArgs keep the operator's diff drivers and pagers out: the content is
// shown as it is.
var diffArgs = []string{"--no-ext-diff", "--no-textconv", "--no-color", "--no-renames", "--submodule=short"}

// Diff fetches the bottle's branch and returns what it changed against its
// base. withPatch asks for the patch too.
func (b Bottle) Diff(ctx context.Context, withPatch bool) (Diff, error) {
	s, err := b.Fetch(ctx)
	if err != nil {
		return Diff{}, err
	}
	d := Diff{Identity: b.Identity, Repo: b.Repo, Branch: b.Branch(), Base: b.Base, Tip: s.Tip, Uncommitted: s.Uncommitted, Files: []FileChange{}}
	if d.Commits, err = b.commits(ctx); err != nil {
		return Diff{}, fmt.Errorf("diff %s: %w", b.Identity, err)
	}
	if s.Uncommitted {
		d.Commits--
	}
	span := []string{b.Base, b.branchRef()}
	ns, err := b.operator(append(append([]string{"diff", "-z", "--name-status"}, diffArgs...), span...)...).run(ctx)
	if err != nil {
		return Diff{}, fmt.Errorf("diff %s: %w", b.Identity, err)
	}
	num, err := b.operator(append(append([]string{"diff", "-z", "--numstat"}, diffArgs...), span...)...).run(ctx)
	if err != nil {
		return Diff{}, fmt.Errorf("diff %s: %w", b.Identity, err)
	}
	counts := map[string][2]int{}
	for _, rec := range bytes.Split(num, []byte{0}) {
		f := strings.SplitN(string(rec), "\t", 3)
		if len(f) != 3 {
			continue
		}
		a, errA := strconv.Atoi(f[0])
		dl, errD := strconv.Atoi(f[1])
		if errA != nil || errD != nil {
			a, dl = -1, -1
		}
		counts[f[2]] = [2]int{a, dl}
	}
	fields := bytes.Split(ns, []byte{0})
	for i := 0; i+1 < len(fields); i += 2 {
		p := string(fields[i+1])
		c := counts[p]
		d.Files = append(d.Files, FileChange{Path: p, Status: string(fields[i])[:1], Added: c[0], Deleted: c[1]})
	}
	sort.Slice(d.Files, func(i, j int) bool { return d.Files[i].Path < d.Files[j].Path })
	st, err := b.operator(append(append([]string{"diff", "--stat"}, diffArgs...), span...)...).run(ctx)
	if err != nil {
		return Diff{}, fmt.Errorf("diff %s: %w", b.Identity, err)
	}
	d.Stat = string(st)
	if withPatch {
		out, err := b.operator(append(append([]string{"diff"}, diffArgs...), span...)...).run(ctx)
		if err != nil {
			return Diff{}, fmt.Errorf("diff %s: %w", b.Identity, err)
		}
		d.Patch = string(out)
	}
	return d, nil
}

// ConflictError is an apply or merge refused before anything changed.
type ConflictError struct {
	Op    string // "apply" or "merge"
	Repo  string
	Why   string // what stands in the way
	Paths []string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("%s refused, nothing changed in %s: %s: %s", e.Op, e.Repo, e.Why, strings.Join(e.Paths, ", "))
}

// Result says what apply or merge did.
type Result struct {
	Identity string   `json:"identity"`
	Repo     string   `json:"repo"`
	Branch   string   `json:"branch"`
	Commit   string   `json:"commit,omitempty"` // merge: the merge commit ("" when already merged)
	Files    []string `json:"files"`
}

// Apply brings the bottle's changes (committed and not) into the
// operator's working tree as uncommitted changes. It is all or nothing: a
// patch that does not apply to the working tree as it is changes nothing
// and is refused with the paths in the way.
func (b Bottle) Apply(ctx context.Context) (Result, error) {
	d, err := b.Diff(ctx, false)
	if err != nil {
		return Result{}, err
	}
	r := Result{Identity: b.Identity, Repo: b.Repo, Branch: b.Branch(), Files: paths(d.Files)}
	if len(d.Files) == 0 {
		return r, nil
	}
	patch, err := b.operator(append(append([]string{"diff", "--binary", "--full-index"}, diffArgs...), b.Base, b.branchRef())...).run(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("apply %s: %w", b.Identity, err)
	}
	check := b.operator("apply", "--check", "--whitespace=nowarn", "-")
	check.stdin = bytes.NewReader(patch)
	if _, stderr, err := check.output(ctx); err != nil {
		if exitCode(err) < 0 {
			return Result{}, fmt.Errorf("apply %s: %w", b.Identity, err)
		}
		return Result{}, &ConflictError{Op: "apply", Repo: b.Repo, Why: "the working tree differs from the bottle's base at", Paths: applyConflicts(stderr)}
	}
	do := b.operator("apply", "--whitespace=nowarn", "-")
	do.stdin = bytes.NewReader(patch)
	if _, err := do.run(ctx); err != nil {
		return Result{}, fmt.Errorf("apply %s: %w", b.Identity, err)
	}
	return r, nil
}

func paths(fs []FileChange) []string {
	out := make([]string, 0, len(fs))
	for _, f := range fs {
		out = append(out, f.Path)
	}
	return out
}

// applyConflicts lists the paths of git apply's complaints
// ("error: PATH: patch does not apply" and the like).
func applyConflicts(stderr []byte) []string {
	set := map[string]bool{}
	for _, line := range strings.Split(string(stderr), "\n") {
		rest, ok := strings.CutPrefix(line, "error: ")
		if !ok || strings.HasPrefix(rest, "patch failed: ") {
			continue
		}
		if i := strings.LastIndex(rest, ": "); i > 0 {
			set[rest[:i]] = true
		}
	}
	return sorted(set)
}

func sorted(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Strings(out)
	if len(out) == 0 {
		out = append(out, "(git named no path)")
	}
	return out
}

// Summary is what list shows of a review bottle, read in core.git only
// (nothing is fetched).
type Summary struct {
	Branch      string `json:"branch"`
	Commits     int    `json:"commits"`
	Files       int    `json:"changed_files"`
	Uncommitted bool   `json:"uncommitted"`
}

// Summarize snapshots the clone and counts its commits and changed files
// against the base.
func (b Bottle) Summarize(ctx context.Context) (Summary, error) {
	s, err := b.Snapshot(ctx)
	if err != nil {
		return Summary{Branch: b.Branch()}, err
	}
	sum := Summary{Branch: b.Branch(), Uncommitted: s.Uncommitted}
	out, err := b.core("rev-list", "--count", s.Head, "^"+b.Base).run(ctx)
	if err != nil {
		return sum, err
	}
	if sum.Commits, err = strconv.Atoi(trim(out)); err != nil {
		return sum, err
	}
	out, err = b.core(append(append([]string{"diff", "-z", "--name-only"}, diffArgs...), b.Base, s.Tip)...).run(ctx)
	if err != nil {
		return sum, err
	}
	for _, p := range bytes.Split(out, []byte{0}) {
		if len(p) > 0 {
			sum.Files++
		}
	}
	return sum, nil
}
