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
// tears it down and applies the cleanup policy.
func (e *Env) Attach(ctx context.Context, id string) (int, error) {
	meta, err := e.readMeta(id)
	if err != nil {
		return 0, err
	}
	unlock, err := e.Store.Lock(id)
	if err != nil {
		return 0, err
	}
	defer unlock()
	h, err := e.Store.ReadHandle(id)
	if err != nil {
		return 0, err
	}
	if h == nil {
		return 0, fmt.Errorf("bottle %s is not running (resume it with: bot-bottle resume %s)", id, id)
	}
	p, err := e.startPlugin(ctx, meta.Backend)
	if err != nil {
		return 0, err
	}
	defer p.Close()
	if err := e.Store.ClearDetached(id); err != nil {
		return 0, err
	}
	st, err := e.attach(ctx, p, *h)
	if err == nil && st.Detached {
		_ = e.Store.MarkDetached(id)
		e.say("detached from %s; it keeps running. Reattach with: bot-bottle attach %s", id, id)
		return 0, nil
	}
	e.teardown(p, id, h)
	if err != nil {
		e.finish(id, e.outcomeOf(ctx, err))
		return 0, p.Wrap(err)
	}
	e.finish(id, outcomeEnded)
	return st.Code, nil
}

// Commit snapshots a running bottle with its recorded backend, records the
// snapshot and marks the bottle preserved so the snapshot survives cleanup.
func (e *Env) Commit(ctx context.Context, id string) (string, error) {
	meta, err := e.readMeta(id)
	if err != nil {
		return "", err
	}
	h, err := e.Store.ReadHandle(id)
	if err != nil {
		return "", err
	}
	if h == nil {
		return "", fmt.Errorf("bottle %s is not running; only a running bottle can be committed", id)
	}
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
	res, err := p.Backend.Commit(ctx, *h, snap)
	if err != nil {
		if sdk.IsNotSupported(err) {
			return "", fmt.Errorf("backend %q cannot commit bottles: %v", meta.Backend, err)
		}
		return "", p.Wrap(err)
	}
	if err := e.Store.WriteCommittedImage(id, res.Image); err != nil {
		return "", err
	}
	if err := e.Store.MarkPreserved(id); err != nil {
		return "", err
	}
	e.record(e.agentOf(id), audit.Event{Identity: id, Kind: audit.KindCommit, Fields: map[string]any{"image": res.Image, "backend": meta.Backend}})
	for _, n := range res.Notes {
		e.say("%s", n)
	}
	return res.Image, nil
}

// Stop tears a bottle down from any terminal. With preserve, its state is
// kept for `resume`. When no bot-bottle process is attached to it, this
// process also applies the cleanup policy.
func (e *Env) Stop(ctx context.Context, id string, preserve bool) error {
	meta, err := e.readMeta(id)
	if err != nil {
		return err
	}
	if preserve {
		if err := e.Store.MarkPreserved(id); err != nil {
			return err
		}
	}
	if err := e.stopBackend(ctx, meta, "stop"); err != nil {
		return err
	}
	e.record(e.agentOf(id), audit.Event{Identity: id, Kind: audit.KindStop, Fields: map[string]any{"preserve": preserve}})
	unlock, err := e.Store.Lock(id)
	if errors.Is(err, state.ErrLocked) {
		// The attached process applies the cleanup policy when its
		// session ends; it prints the resume hint.
		return nil
	}
	if err != nil {
		return err
	}
	defer unlock()
	e.finish(id, outcomeEnded)
	return nil
}

// Remove deletes a bottle whole: its backend resources and its state,
// preserved or not. The audit log stays.
func (e *Env) Remove(ctx context.Context, id string) error {
	meta, err := e.readMeta(id)
	if err != nil {
		return err
	}
	unlock, err := e.Store.Lock(id)
	if err != nil {
		return err
	}
	defer unlock()
	if err := e.stopBackend(ctx, meta, "remove"); err != nil {
		return err
	}
	if err := e.Store.Remove(id); err != nil {
		return err
	}
	e.removeQueue(id)
	return nil
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
