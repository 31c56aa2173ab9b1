package lifecycle

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/config"
	"github.com/bot-bottle/bot-bottle/internal/review"
	"github.com/bot-bottle/bot-bottle/internal/state"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// Row is one bottle as `list` and the dashboard show it.
type Row struct {
	Identity       string `json:"identity"`
	Agent          string `json:"agent"`
	Backend        string `json:"backend"`
	Status         string `json:"status"`
	StartedAt      string `json:"started_at,omitempty"`
	Cwd            string `json:"cwd,omitempty"`
	CopyCwd        bool   `json:"copy_cwd,omitempty"`
	Preserved      bool   `json:"preserved"`
	CommittedImage string `json:"committed_image,omitempty"`
	// Snapshots are every snapshot the bottle's commits made: its own, and
	// removed with it by rm.
	Snapshots []string `json:"snapshots"`
	Egress    []string `json:"egress"`
	// InState is false for resources a backend has that no state knows of.
	InState bool `json:"in_state"`
	// Orphaned: the backend still has the bottle but no bot-bottle process
	// holds it and it was not detached on purpose (its holder was killed);
	// prune removes what it left and keeps its state.
	Orphaned bool `json:"orphaned,omitempty"`
	// Review is a --review bottle's branch and what it holds: counted by
	// AddReviews; commits and files are -1 until then, or when its clone
	// cannot be read.
	Review *review.Summary `json:"review,omitempty"`
}

// AddReviews fills the review summary of every review bottle's row: it
// reads each clone (a snapshot in the core's own repository), so list asks
// for it and the dashboard's refresh does not.
func (e *Env) AddReviews(ctx context.Context, rows []Row) {
	for i := range rows {
		if !rows[i].InState {
			continue
		}
		if m, err := e.Store.ReadMetadata(rows[i].Identity); err == nil {
			rows[i].Review = e.reviewSummary(ctx, m)
		}
	}
}

// BackendReport is what one backend answered, or why it did not.
type BackendReport struct {
	Name    string
	Bottles []sdk.Bottle
	Err     error
}

// backendsToAsk are the backends worth asking: every configured or found
// plugin, the default, and every backend some bottle's metadata names.
func (e *Env) backendsToAsk(metas []state.Metadata) []string {
	set := map[string]bool{"docker": true}
	if e.Plugins != nil {
		for n := range e.Plugins.Plugins {
			set[n] = true
		}
		if e.Plugins.DefaultBackend != "" {
			set[e.Plugins.DefaultBackend] = true
		}
	}
	found, _ := e.backends().Discover()
	for _, f := range found {
		set[f.Name] = true
	}
	for _, m := range metas {
		set[m.Backend] = true
	}
	out := make([]string, 0, len(set))
	for n := range set {
		if state.ValidateName("backend name", n) == nil {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// Survey asks every backend for its bottles in parallel, each under its own
// deadline, so a slow or broken backend only marks its own rows.
func (e *Env) Survey(ctx context.Context, names []string, timeout time.Duration) []BackendReport {
	out := make([]BackendReport, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = e.askBackend(ctx, n, timeout)
		}()
	}
	wg.Wait()
	return out
}

func (e *Env) askBackend(ctx context.Context, name string, timeout time.Duration) BackendReport {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type result struct {
		bs  []sdk.Bottle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		p, err := e.backends().Start(ctx, name)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer p.Close()
		bs, err := p.Backend.List(ctx)
		ch <- result{bs, p.Wrap(err)}
	}()
	select {
	case r := <-ch:
		return BackendReport{Name: name, Bottles: r.bs, Err: r.err}
	case <-ctx.Done():
		return BackendReport{Name: name, Err: fmt.Errorf("%s plugin: unreachable (no answer within %s)", name, timeout)}
	}
}

// List merges the state store with what each backend reports.
func (e *Env) List(ctx context.Context) ([]Row, []error, error) {
	return e.ListWithin(ctx, listTimeout)
}

// ListWithin is List with each backend given at most timeout to answer.
func (e *Env) ListWithin(ctx context.Context, timeout time.Duration) ([]Row, []error, error) {
	metas, err := e.Store.List()
	if err != nil {
		return nil, nil, err
	}
	names := e.backendsToAsk(metas)
	reports := e.Survey(ctx, names, timeout)
	byBackend := map[string]BackendReport{}
	var warnings []error
	used := map[string]bool{config.ResolveBackend("", e.getenv("BOT_BOTTLE_BACKEND"), e.Plugins): true}
	for _, m := range metas {
		used[m.Backend] = true
	}
	for _, r := range reports {
		byBackend[r.Name] = r
		// A backend that fails is worth a warning only when a bottle or
		// the default needs it (its rows say "unreachable" anyway); an
		// installed plugin nobody uses, missing its runtime, is not news.
		if r.Err != nil && used[r.Name] {
			warnings = append(warnings, r.Err)
		}
	}
	var rows []Row
	known := map[string]bool{}
	for _, m := range metas {
		known[m.Identity] = true
		row := Row{Identity: m.Identity, Agent: m.AgentName, Backend: m.Backend, StartedAt: m.StartedAt,
			Cwd: m.Cwd, CopyCwd: m.CopyCwd, Egress: nonNil(m.Egress), InState: true, Status: "stopped"}
		if m.Review != nil {
			row.Review = &review.Summary{Branch: review.BranchPrefix + m.Identity, Commits: -1, Files: -1}
		}
		if rec, err := e.Store.Load(m.Identity); err == nil {
			row.Preserved, row.CommittedImage, row.Snapshots = rec.Kept, rec.CommittedImage, rec.Snapshots
		} else {
			row.Preserved = true // never shown as disposable on a guess
		}
		r := byBackend[m.Backend]
		if r.Err != nil {
			row.Status = "unreachable"
		}
		for _, b := range r.Bottles {
			if b.Identity == m.Identity && b.Status != sdk.StatusSnapshot {
				row.Status = b.Status
				row.Orphaned = !e.Store.Held(m.Identity) && !e.isDetached(m.Identity)
			}
		}
		rows = append(rows, row)
	}
	for _, r := range reports {
		for _, b := range r.Bottles {
			if !known[b.Identity] {
				// What the backend keeps on purpose is no crash's orphan.
				status := "orphan (" + b.Status + ")"
				if b.Status == sdk.StatusIdle {
					status = sdk.StatusIdle
				}
				rows = append(rows, Row{Identity: b.Identity, Agent: b.Agent, Backend: r.Name,
					Status: status, StartedAt: b.StartedAt, Egress: []string{}})
			}
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Identity < rows[j].Identity })
	return rows, warnings, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Prune removes backend resources that a crash left behind: those of
// bottles with no state at all, and those of bottles that no bot-bottle
// process holds and that were not started detached. State is kept, so a
// crashed bottle can still be resumed.
func (e *Env) Prune(ctx context.Context) ([]string, []error, error) {
	return e.prune(ctx, false)
}

// PruneDryRun says what Prune would remove, removing nothing: each line
// is a bottle and the resources its backend lists for it.
func (e *Env) PruneDryRun(ctx context.Context) ([]string, []error, error) {
	return e.prune(ctx, true)
}

func (e *Env) prune(ctx context.Context, dryRun bool) ([]string, []error, error) {
	metas, err := e.Store.List()
	if err != nil {
		return nil, nil, err
	}
	inState := map[string]bool{}
	for _, m := range metas {
		inState[m.Identity] = true
	}
	removed, errs := e.prunePass(ctx, metas, inState, dryRun, false)
	// A second look, once the first removed something, takes only what is
	// idle now: the last stop of a backend's bottles may keep something for
	// the next start (the docker plugin's egress proxy), which prune would
	// have removed had it been idle at the first look.
	if !dryRun && len(removed) > 0 {
		more, moreErrs := e.prunePass(ctx, metas, inState, false, true)
		removed, errs = append(removed, more...), append(errs, moreErrs...)
	}
	return removed, errs, nil
}

// prunePass is one look at the backends: what it removes (or, dryRun,
// would), taking only what is idle when idleOnly.
func (e *Env) prunePass(ctx context.Context, metas []state.Metadata, inState map[string]bool, dryRun, idleOnly bool) ([]string, []error) {
	var removed []string
	var errs []error
	for _, r := range e.Survey(ctx, e.backendsToAsk(metas), listTimeout) {
		if r.Err != nil {
			continue
		}
		for _, b := range r.Bottles {
			if state.ValidateIdentity(b.Identity) != nil || (idleOnly && b.Status != sdk.StatusIdle) {
				continue
			}
			if inState[b.Identity] {
				if b.Status == sdk.StatusSnapshot {
					continue // a kept bottle's snapshots: its own until rm
				}
				unlock, err := e.Store.Lock(b.Identity)
				if err != nil {
					continue // an attached process owns it
				}
				detached := e.isDetached(b.Identity)
				if detached && b.Status == sdk.StatusRunning {
					unlock()
					continue
				}
				if dryRun {
					unlock()
					removed = append(removed, wouldRemove(b, false))
					continue
				}
				gone, err := e.stopOne(ctx, r.Name, b, false)
				if err == nil {
					e.closeOrphan(b.Identity)
				}
				unlock()
				removed, errs = append(removed, gone...), appendErr(errs, err)
				continue
			}
			// No state: nothing can resume it, so its snapshots go too.
			if dryRun {
				removed = append(removed, wouldRemove(b, true))
				continue
			}
			gone, err := e.stopOne(ctx, r.Name, b, true)
			removed, errs = append(removed, gone...), appendErr(errs, err)
		}
	}
	return removed, errs
}

func wouldRemove(b sdk.Bottle, snapshots bool) string {
	what := append([]string(nil), b.Resources...)
	if snapshots {
		for _, s := range b.Snapshots {
			what = append(what, "snapshot "+s)
		}
	}
	if len(what) == 0 {
		what = []string{"its " + b.Status + " bottle"}
	}
	return b.Identity + ": " + strings.Join(what, ", ")
}

// closeOrphan forgets the open launch of a bottle whose backend resources
// prune removed; its state stays, so it can be resumed.
func (e *Env) closeOrphan(id string) {
	b, err := e.load(id)
	if err != nil || b.phase != PhaseRunning {
		return
	}
	if _, err := e.apply(b, EvOrphaned, nil); err != nil {
		e.warn("%v", err)
	}
}

func appendErr(errs []error, err error) []error {
	if err != nil {
		return append(errs, err)
	}
	return errs
}

func (e *Env) stopOne(ctx context.Context, backend string, b sdk.Bottle, removeSnapshots bool) ([]string, error) {
	p, err := e.backends().Start(ctx, backend)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	sctx, cancel := context.WithTimeout(ctx, stopTimeout)
	defer cancel()
	gone, err := p.Backend.Stop(sctx, sdk.StopRequest{Handle: b.Handle, Identity: b.Identity, RemoveSnapshots: removeSnapshots})
	return gone, p.Wrap(err)
}
