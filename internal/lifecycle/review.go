package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/bot-bottle/bot-bottle/internal/audit"
	"github.com/bot-bottle/bot-bottle/internal/review"
	"github.com/bot-bottle/bot-bottle/internal/state"
)

// reviewStart is what start --review learned before anything is written.
type reviewStart struct {
	project review.Project
	author  review.Author // zero: the bottle's default
}

// reviewProject checks start's review flags and finds the repository; nil
// when the bottle is not a review bottle.
func reviewProject(ctx context.Context, o StartOptions, cwd string, inState func(string) bool) (*reviewStart, error) {
	if !o.Review {
		if o.From != "" || o.Author != "" {
			return nil, errors.New("--from and --author need --review")
		}
		return nil, nil
	}
	if cwd == "" {
		return nil, errors.New("--review needs --cwd DIR (a directory in a git repository)")
	}
	if o.CopyCwd {
		return nil, errors.New("--review and --copy-cwd exclude each other: a review bottle gets its own clone, mounted")
	}
	// A bottle's clone is the agent's: even the operator's git must not
	// open it (its config and hooks are the agent's), so it is no project.
	if inState(cwd) {
		return nil, fmt.Errorf("--review: %s is in bot-bottle's state (a bottle's clone is the agent's; review it with bot-bottle diff)", cwd)
	}
	rv := &reviewStart{}
	if o.Author != "" {
		a, err := review.ParseAuthor(o.Author)
		if err != nil {
			return nil, err
		}
		rv.author = a
	}
	p, err := review.Find(ctx, cwd, o.From)
	if err != nil {
		return nil, err
	}
	rv.project = p
	return rv, nil
}

// createClone makes a new review bottle's clone in its state.
func (e *Env) createClone(ctx context.Context, meta state.Metadata, rv *reviewStart) error {
	dir, err := e.Store.ReviewDir(meta.Identity)
	if err != nil {
		return err
	}
	a := rv.author
	if a == (review.Author{}) {
		a = review.DefaultAuthor(meta.Identity)
	}
	rb := review.Bottle{Dir: dir, Identity: meta.Identity, Repo: meta.Review.Repo, Base: meta.Review.Base}
	if err := review.Create(ctx, rb, rv.project, a); err != nil {
		return fmt.Errorf("--review: %w", err)
	}
	return nil
}

// ErrNotReview is a review command on a bottle started without --review.
var ErrNotReview = errors.New("not a review bottle")

// reviewBottle is the review of a bottle from its metadata; its clone must
// be there.
func (e *Env) reviewBottle(meta state.Metadata) (review.Bottle, error) {
	if meta.Review == nil {
		return review.Bottle{}, fmt.Errorf("bottle %s: %w (start one with: bot-bottle start AGENT --cwd DIR --review)", meta.Identity, ErrNotReview)
	}
	dir, err := e.Store.ReviewDir(meta.Identity)
	if err != nil {
		return review.Bottle{}, err
	}
	rb := review.Bottle{Dir: dir, Identity: meta.Identity, Repo: meta.Review.Repo, Base: meta.Review.Base, Halt: e.halt}
	if fi, err := os.Lstat(rb.CloneDir()); err != nil || !fi.IsDir() {
		return review.Bottle{}, fmt.Errorf("bottle %s: its clone %s is gone", meta.Identity, rb.CloneDir())
	}
	return rb, nil
}

// Diff fetches a review bottle's work (committed and not) into the
// operator's repository as its branch and returns what it changed against
// its base; withPatch adds the patch.
func (e *Env) Diff(ctx context.Context, id string, withPatch bool) (review.Diff, error) {
	meta, err := e.readMeta(id)
	if err != nil {
		return review.Diff{}, err
	}
	rb, err := e.reviewBottle(meta)
	if err != nil {
		return review.Diff{}, err
	}
	return rb.Diff(ctx, withPatch)
}

// ApplyChanges brings a review bottle's changes into the operator's working
// tree, uncommitted; a conflict is a *review.ConflictError and changes
// nothing. The branch stays (rm says it is unmerged).
func (e *Env) ApplyChanges(ctx context.Context, id string) (review.Result, error) {
	return e.reviewAction(ctx, id, "apply", review.Bottle.Apply)
}

// Merge merges a review bottle's branch into the operator's current
// branch; a conflict is a *review.ConflictError and changes nothing.
func (e *Env) Merge(ctx context.Context, id string) (review.Result, error) {
	return e.reviewAction(ctx, id, "merge", review.Bottle.Merge)
}

// reviewAction runs one change to the operator's repository on the review
// bottle id and audits it when it is made.
func (e *Env) reviewAction(ctx context.Context, id, action string, do func(review.Bottle, context.Context) (review.Result, error)) (review.Result, error) {
	meta, err := e.readMeta(id)
	if err != nil {
		return review.Result{}, err
	}
	rb, err := e.reviewBottle(meta)
	if err != nil {
		return review.Result{}, err
	}
	r, err := do(rb, ctx)
	if err == nil {
		e.recordReview(action, r)
	}
	return r, err
}

func (e *Env) recordReview(action string, r review.Result) {
	e.record(nil, audit.Event{Identity: r.Identity, Kind: audit.KindReview, Fields: map[string]any{
		"action": action, "repo": r.Repo, "branch": r.Branch, "files": r.Files, "commit": r.Commit}})
}

// KeptBranch is a review bottle's branch that rm left in the operator's
// repository because it has commits nothing else has.
type KeptBranch struct {
	Repo     string `json:"repo"`
	Branch   string `json:"branch"`
	Unmerged int    `json:"unmerged_commits"`
}

// String says what was kept and how to drop it.
func (k KeptBranch) String() string {
	return fmt.Sprintf("kept branch %s in %s: %d commit(s) not merged (drop it: git -C %s branch -D %s, or rm --force next time)",
		k.Branch, k.Repo, k.Unmerged, k.Repo, k.Branch)
}

// saveWork runs before rm removes a review bottle: its work is fetched as
// its branch, which stays when it has unmerged commits and goes when it
// has none. With force the branch goes either way and a failure to save is
// only warned of. Without force a failure to save refuses the rm: nothing
// kept is lost.
func (e *Env) saveWork(ctx context.Context, meta state.Metadata, force bool) (*KeptBranch, error) {
	rb, err := e.reviewBottle(meta)
	if err != nil {
		if force {
			return nil, nil
		}
		return nil, fmt.Errorf("rm %s: %w (rm --force removes it anyway)", meta.Identity, err)
	}
	// A merge cut off mid-way is journalled in the bottle's state: removing
	// it would leave the operator's index the merge's and nothing to say
	// so, forced or not.
	if err := rb.PendingMerge(ctx); err != nil {
		return nil, fmt.Errorf("rm %s: %w", meta.Identity, err)
	}
	if force {
		if err := rb.DropBranch(ctx); err != nil {
			e.warn("%v", err)
		}
		return nil, nil
	}
	if _, err := rb.Fetch(ctx); err != nil {
		return nil, fmt.Errorf("rm %s: cannot keep its work as branch %s: %w (rm --force discards it)", meta.Identity, rb.Branch(), err)
	}
	n, err := rb.Unmerged(ctx)
	if err != nil {
		return nil, fmt.Errorf("rm %s: %w (rm --force discards it)", meta.Identity, err)
	}
	if n > 0 {
		return &KeptBranch{Repo: rb.Repo, Branch: rb.Branch(), Unmerged: n}, nil
	}
	if err := rb.DropBranch(ctx); err != nil {
		e.warn("%v", err)
	}
	return nil, nil
}

// reviewSummary is list's view of a review bottle, or nil.
func (e *Env) reviewSummary(ctx context.Context, meta state.Metadata) *review.Summary {
	if meta.Review == nil {
		return nil
	}
	rb, err := e.reviewBottle(meta)
	if err != nil {
		return &review.Summary{Branch: review.BranchPrefix + meta.Identity, Commits: -1, Files: -1}
	}
	s, err := rb.Summarize(ctx)
	if err != nil {
		return &review.Summary{Branch: rb.Branch(), Commits: -1, Files: -1}
	}
	return &s
}
