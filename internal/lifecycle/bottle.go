package lifecycle

import (
	"context"
	"fmt"

	"github.com/bot-bottle/bot-bottle/internal/audit"
	"github.com/bot-bottle/bot-bottle/internal/config"
	"github.com/bot-bottle/bot-bottle/internal/pluginhost"
	"github.com/bot-bottle/bot-bottle/internal/state"
	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/render"
)

// bottle is one bottle during a flow: its record, loaded once, and the
// phase the flow holds it in. Only apply changes either.
type bottle struct {
	rec   *state.Record
	phase Phase
	agent *config.Agent // for the audit's secret filter; may be nil
}

func (b *bottle) id() string { return b.rec.Meta.Identity }

// phaseOnDisk is the phase a record shows to a flow that holds its lock: a
// recorded handle means a launch is open.
func phaseOnDisk(r *state.Record) Phase {
	if r.Handle != nil {
		return PhaseRunning
	}
	return PhaseStopped
}

// load reads a bottle's record for a flow.
func (e *Env) load(id string) (*bottle, error) {
	if err := state.ValidateIdentity(id); err != nil {
		return nil, err
	}
	rec, err := e.Store.Load(id)
	if err != nil {
		return nil, err
	}
	b := &bottle{rec: rec, phase: phaseOnDisk(rec)}
	b.agent, _ = e.loadAgent(rec.Meta.AgentName)
	return b, nil
}

// apply moves b through ev and makes the outcome true: the backend's
// resources torn down (by p, when the outcome asks for it and p is given;
// with the bottle's snapshots when it is removed), the kept mark written,
// a closed launch forgotten, and a removed bottle's state and queue
// deleted. It is the only code that deletes a bottle's state.
func (e *Env) apply(b *bottle, ev Event, p *pluginhost.Plugin) (Outcome, error) {
	// Another process may have kept the bottle since it was loaded (commit,
	// stop --preserve, an approval while attached); what cannot be read
	// counts as kept, so that nothing is deleted on a guess. A capability
	// approval decided but not yet carried out keeps it too: its carrying
	// out (by its decider, or a reader after a crash) marks it kept, and
	// needs it there.
	if kept, err := e.Store.IsPreserved(b.id()); err != nil || kept || e.rebuildHeld(b.id()) {
		b.rec.Kept = true
	}
	o, err := Transition(b.phase, b.rec.Kept, ev)
	if err != nil {
		return o, fmt.Errorf("%s %s: %w", ev, b.id(), err)
	}
	id := b.id()
	if o.Teardown && p != nil {
		if err := e.teardown(p, id, b.rec.Handle, o.Removes()); err != nil {
			if o.Removes() {
				// What the backend still has must stay findable: keep the
				// state, so list shows it and rm or prune can retry.
				return o, err
			}
			e.warn("tear down %s: %v (run: bot-bottle prune)", id, err)
		}
	}
	if o.Kept && !b.rec.Kept {
		if err := e.Store.MarkPreserved(id); err != nil {
			return o, err
		}
		b.rec.Kept = true
	}
	if o.Phase == PhaseStopped || o.Phase == PhaseRemoved {
		_ = e.Store.RemoveHandle(id)
		_ = e.Store.ClearDetached(id)
		_ = e.Store.ClearStopRequest(id)
		b.rec.Handle, b.rec.Detached = nil, false
		if o.Phase == PhaseStopped {
			// No approval waits for this stop any more (queue's Stopping).
			if err := e.queue().Stopped(id); err != nil {
				e.warn("%v", err)
			}
		}
	}
	if o.Removes() {
		if err := e.Store.Remove(id); err != nil {
			return o, err
		}
		e.removeQueue(id)
	}
	b.phase = o.Phase
	return o, nil
}

// closeSession applies the end of a session (ev is how it ended), audits
// what became of the bottle and tells the operator. A launch that never came
// up (cameUp false) leaves a kept bottle as it was and says nothing of it:
// launchFailed says how to retry instead.
func (e *Env) closeSession(b *bottle, ev Event, p *pluginhost.Plugin, cameUp bool) {
	o, err := e.apply(b, ev, p)
	if err != nil {
		e.warn("%v", err)
		return
	}
	id := b.id()
	switch {
	case o.Removes():
		e.record(nil, audit.Event{Identity: id, Kind: audit.KindCleanup, Fields: map[string]any{"state": "removed"}})
	case o.Kept && cameUp:
		e.record(nil, audit.Event{Identity: id, Kind: audit.KindPreserve, Fields: map[string]any{"state": "kept"}})
		e.notify(Notice{Kind: NoticeKept, Identity: id})
	case ev == EvPluginGone:
		e.notify(Notice{Kind: NoticeStateKept, Identity: id, Text: "the plugin failed"})
	}
}

// teardown removes every backend resource of the bottle (its snapshots
// too, with removeSnapshots). It uses its own deadline (the caller's context
// may be the one that was cancelled) and a fresh plugin process when the
// first one died.
func (e *Env) teardown(p *pluginhost.Plugin, id string, h *sdk.Handle, removeSnapshots bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if p.Exited() {
		fresh, err := e.backends().Start(ctx, p.Name)
		if err != nil {
			return fmt.Errorf("cannot restart the %s plugin: %w", p.Name, err)
		}
		defer fresh.Close()
		p = fresh
	}
	if _, err := p.Backend.Stop(ctx, sdk.StopRequest{Handle: h, Identity: id, RemoveSnapshots: removeSnapshots}); err != nil {
		return p.Wrap(err)
	}
	return nil
}

// NoticeKind says what a Notice is about, so that the CLI and the dashboard
// can render it their own way.
type NoticeKind string

const (
	NoticeInfo    NoticeKind = "info"
	NoticeWarning NoticeKind = "warning"
	// NoticeKept: the bottle's session ended and it is kept for resume.
	NoticeKept NoticeKind = "kept"
	// NoticeStateKept: something failed; the state is kept, resumable.
	NoticeStateKept NoticeKind = "state-kept"
	// NoticeResumeFailed: a resume did not come up; the bottle is kept as
	// it was, and can be retried or reverted.
	NoticeResumeFailed NoticeKind = "resume-failed"
	// NoticeDetached: the bottle runs on with no terminal attached.
	NoticeDetached NoticeKind = "detached"
)

// Notice is something a flow tells the operator while it runs.
type Notice struct {
	Kind     NoticeKind
	Identity string
	Text     string
}

// ResumeCommand is the command that brings a kept bottle back.
func ResumeCommand(id string) string { return "bot-bottle resume " + id }

// String renders the notice as one line of text for a terminal.
func (n Notice) String() string {
	switch n.Kind {
	case NoticeWarning:
		return "warning: " + n.Text
	case NoticeKept:
		return fmt.Sprintf("%s is preserved; resume it with: %s", n.Identity, ResumeCommand(n.Identity))
	case NoticeStateKept:
		return fmt.Sprintf("%s; %s's state is kept. Resume it with: %s", n.Text, n.Identity, ResumeCommand(n.Identity))
	case NoticeResumeFailed:
		return fmt.Sprintf("%s did not come back; it is kept as it was. Retry: %s   drop the last change and retry: bot-bottle revert %s && %s",
			n.Identity, ResumeCommand(n.Identity), n.Identity, ResumeCommand(n.Identity))
	case NoticeDetached:
		if n.Text != "" {
			return n.Text
		}
		return fmt.Sprintf("detached from %s; it keeps running. Reattach with: bot-bottle attach %s", n.Identity, n.Identity)
	}
	return n.Text
}

// notify hands a notice to the Env's Notify, or prints it.
func (e *Env) notify(n Notice) {
	if e.Notify != nil {
		e.Notify(n)
		return
	}
	// A notice may carry a bottle's or a plugin's words: one escaped line.
	fmt.Fprintf(e.Err, "bot-bottle: %s\n", render.Bounded(n.String(), render.MessageMax))
}

func (e *Env) say(format string, args ...any) {
	e.notify(Notice{Kind: NoticeInfo, Text: fmt.Sprintf(format, args...)})
}

func (e *Env) warn(format string, args ...any) {
	e.notify(Notice{Kind: NoticeWarning, Text: fmt.Sprintf(format, args...)})
}
