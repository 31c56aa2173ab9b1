package lifecycle

import (
	"context"
	"errors"
	"fmt"

	"github.com/bot-bottle/bot-bottle/internal/audit"
	"github.com/bot-bottle/bot-bottle/internal/state"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// Attach reattaches to a running bottle (one started with --detach, or
// one whose attached terminal detached). When the agent exits, this process
// tears it down and applies the end of its session.
func (e *Env) Attach(ctx context.Context, id string) (int, error) {
	if _, err := e.readMeta(id); err != nil {
		return 0, err
	}
	unlock, err := e.Store.Lock(id)
	if err != nil {
		return 0, err
	}
	defer unlock()
	b, err := e.load(id)
	if err != nil {
		return 0, err
	}
	if b.rec.Handle == nil {
		return 0, fmt.Errorf("bottle %s is not running (resume it with: %s)", id, ResumeCommand(id))
	}
	p, err := e.startPlugin(ctx, b.rec.Meta.Backend)
	if err != nil {
		return 0, err
	}
	defer p.Close()
	if err := e.Store.ClearDetached(id); err != nil {
		return 0, err
	}
	return e.attachSession(ctx, b, p, *b.rec.Handle)
}

// Commit snapshots a running bottle with its recorded backend, records the
// snapshot as the bottle's and marks the bottle kept, so the snapshot
// survives its sessions.
func (e *Env) Commit(ctx context.Context, id string) (string, error) {
	b, err := e.load(id)
	if err != nil {
		return "", err
	}
	if _, err := Transition(b.phase, b.rec.Kept, EvCommit); err != nil {
		return "", fmt.Errorf("bottle %s is not running; only a running bottle can be committed", id)
	}
	meta := b.rec.Meta
	p, err := e.startPlugin(ctx, meta.Backend)
	if err != nil {
		return "", err
	}
	defer p.Close()
	if !p.Info.Has(sdk.CapCommit) {
		return "", fmt.Errorf("backend %q cannot commit bottles (its plugin does not offer the commit capability)", meta.Backend)
	}
	snap, err := e.Store.SnapshotDir(id)
	if err != nil {
		return "", err
	}
	res, err := p.Backend.Commit(ctx, *b.rec.Handle, snap)
	if err != nil {
		if sdk.IsNotSupported(err) {
			return "", fmt.Errorf("backend %q cannot commit bottles: %v", meta.Backend, err)
		}
		return "", p.Wrap(err)
	}
	if err := e.Store.AddSnapshot(id, res.Image); err != nil {
		return "", err
	}
	// A snapshot of a running bottle is an image source known to come up,
	// with the user of the image the bottle runs.
	snapshot := state.Built{CommittedImage: res.Image, ImageUser: b.rec.Handle.ImageUser}
	if err := e.Store.WriteBuilt(id, snapshot); err != nil {
		e.warn("%v", err)
	}
	if _, err := e.apply(b, EvCommit, nil); err != nil {
		return "", err
	}
	e.record(b.agent, audit.Event{Identity: id, Kind: audit.KindCommit, Fields: map[string]any{"image": res.Image, "backend": meta.Backend}})
	for _, n := range res.Notes {
		e.say("%s", n)
	}
	return res.Image, nil
}

// Stop tears a bottle down from any terminal. With preserve the bottle is
// kept for resume; a kept bottle stays kept either way. When a bot-bottle
// process is attached to it, that process applies the end of the session;
// otherwise this one does.
func (e *Env) Stop(ctx context.Context, id string, preserve bool) error {
	b, err := e.load(id)
	if err != nil {
		return err
	}
	// What waits in a bottle's own queue goes with it: brought in first.
	e.syncQueue(ctx, id)
	ev := EvStop
	if preserve {
		ev = EvStopPreserve
		// First, so that an attached session ending meanwhile keeps it.
		if err := e.Store.MarkPreserved(id); err != nil {
			return err
		}
		b.rec.Kept = true
	}
	unlock, err := e.Store.Lock(id)
	if errors.Is(err, state.ErrLocked) {
		// An attached (or launching) process holds it: stop its bottle, and
		// that process applies the end of its session and prints the hint.
		if err := e.stopBackend(ctx, b.rec.Meta, "stop"); err != nil {
			return err
		}
		e.record(b.agent, audit.Event{Identity: id, Kind: audit.KindStop, Fields: map[string]any{"preserve": preserve}})
		return nil
	}
	if err != nil {
		return err
	}
	defer unlock()
	// Reloaded under the lock: a session may have closed meanwhile.
	if b, err = e.load(id); err != nil {
		return err
	}
	p, err := e.startPlugin(ctx, b.rec.Meta.Backend)
	if err != nil {
		return err
	}
	defer p.Close()
	if _, err := Transition(b.phase, b.rec.Kept, ev); err != nil {
		return fmt.Errorf("stop %s: %w", id, err)
	}
	e.record(b.agent, audit.Event{Identity: id, Kind: audit.KindStop, Fields: map[string]any{"preserve": preserve}})
	e.closeSession(b, ev, p, true)
	return nil
}

// Remove deletes a bottle whole: its backend resources, its snapshots and
// its state, kept or not. The audit log stays. A review bottle's
// unmerged branch is kept and said so (RemoveWith tells it to the caller).
func (e *Env) Remove(ctx context.Context, id string) error {
	res, err := e.RemoveWith(ctx, id, RemoveOptions{})
	if res.KeptBranch != nil {
		e.say("%s", res.KeptBranch)
	}
	return err
}

// RemoveOptions are rm's choices.
type RemoveOptions struct {
	// Force also deletes a review bottle's branch with unmerged commits,
	// and removes the bottle when its work cannot be saved.
	Force bool
}

// RemoveResult says what rm removed and what it kept.
type RemoveResult struct {
	Identity string `json:"identity"`
	// KeptBranch is a review bottle's branch that stays in the operator's
	// repository: it has commits nothing else has.
	KeptBranch *KeptBranch `json:"kept_branch,omitempty"`
}

// RemoveWith is Remove with options and a typed result. A review bottle's
// work is fetched as its branch first; without Force a failure to do so
// refuses the rm and changes nothing.
func (e *Env) RemoveWith(ctx context.Context, id string, o RemoveOptions) (RemoveResult, error) {
	res := RemoveResult{Identity: id}
	if _, err := e.readMeta(id); err != nil {
		return res, err
	}
	unlock, err := e.Store.Lock(id)
	if err != nil {
		return res, err
	}
	defer unlock()
	b, err := e.load(id)
	if err != nil {
		return res, err
	}
	p, err := e.startPlugin(ctx, b.rec.Meta.Backend)
	if err != nil {
		return res, err
	}
	defer p.Close()
	if b.rec.Meta.Review != nil {
		kept, err := e.saveWork(ctx, b.rec.Meta, o.Force)
		if err != nil {
			return res, err
		}
		res.KeptBranch = kept
		e.halt(HaltRemoveSaved)
	}
	if _, err := e.apply(b, EvRemove, p); err != nil {
		return res, fmt.Errorf("remove %s: %w", id, err)
	}
	fields := map[string]any{"snapshots": nonNil(b.rec.Snapshots)}
	if res.KeptBranch != nil {
		fields["kept_branch"] = res.KeptBranch.Branch
	}
	e.record(b.agent, audit.Event{Identity: id, Kind: audit.KindRemove, Fields: fields})
	return res, nil
}

// RevertResult says what Revert went back to.
type RevertResult struct {
	Identity string
	// Dropped is the per-bottle Dockerfile that was dropped ("" for none).
	Dropped string
	// Source is what the next resume boots: a snapshot reference, "per-bottle
	// Dockerfile", or "the agent's image".
	Source string
}

// Revert drops the changes made to a stopped bottle's image source since
// the last launch (or commit) that came up — typically an approved
// capability whose build fails — so that resume boots what worked before.
func (e *Env) Revert(ctx context.Context, id string) (RevertResult, error) {
	if _, err := e.readMeta(id); err != nil {
		return RevertResult{}, err
	}
	unlock, err := e.Store.Lock(id)
	if err != nil {
		return RevertResult{}, err
	}
	defer unlock()
	b, err := e.load(id)
	if err != nil {
		return RevertResult{}, err
	}
	if _, err := e.apply(b, EvRevert, nil); err != nil {
		return RevertResult{}, err
	}
	built, err := e.Store.ReadBuilt(id)
	if err != nil {
		return RevertResult{}, err
	}
	if built == nil {
		return RevertResult{}, fmt.Errorf("revert %s: it never came up, so there is nothing to go back to (remove it with: bot-bottle rm %s)", id, id)
	}
	if string(b.rec.Dockerfile) == built.Dockerfile && b.rec.CommittedImage == built.CommittedImage {
		return RevertResult{}, fmt.Errorf("revert %s: nothing changed since it last came up", id)
	}
	res := RevertResult{Identity: id, Dropped: string(b.rec.Dockerfile)}
	if built.Dockerfile == "" {
		err = e.Store.RemoveDockerfile(id)
	} else {
		err = e.Store.WriteDockerfile(id, []byte(built.Dockerfile))
	}
	if err != nil {
		return RevertResult{}, err
	}
	if built.CommittedImage == "" {
		err = e.Store.ClearCommittedImage(id)
	} else {
		err = e.Store.WriteCommittedImage(id, built.CommittedImage)
	}
	if err != nil {
		return RevertResult{}, err
	}
	switch {
	case built.CommittedImage != "":
		res.Source = built.CommittedImage
	case built.Dockerfile != "":
		res.Source = "per-bottle Dockerfile"
	default:
		res.Source = "the agent's image"
	}
	e.record(b.agent, audit.Event{Identity: id, Kind: audit.KindRevert, Fields: map[string]any{
		"dockerfile_diff": audit.DockerfileDiff(res.Dropped, built.Dockerfile), "boots": res.Source}})
	return res, nil
}

// stopBackend removes every backend resource of a bottle, by its handle
// when it has one, on the backend its metadata records.
func (e *Env) stopBackend(ctx context.Context, meta state.Metadata, verb string) error {
	id := meta.Identity
	h, err := e.Store.ReadHandle(id)
	if err != nil {
		return err
	}
	p, err := e.startPlugin(ctx, meta.Backend)
	if err != nil {
		return err
	}
	defer p.Close()
	sctx, cancel := context.WithTimeout(ctx, stopTimeout)
	defer cancel()
	if _, err := p.Backend.Stop(sctx, sdk.StopRequest{Handle: h, Identity: id}); err != nil {
		return p.Wrap(fmt.Errorf("%s %s: %w", verb, id, err))
	}
	return nil
}
