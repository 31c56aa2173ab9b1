package lifecycle

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/audit"
	"github.com/bot-bottle/bot-bottle/internal/pluginhost"
	"github.com/bot-bottle/bot-bottle/internal/pluginlock"
	"github.com/bot-bottle/bot-bottle/internal/review"
	"github.com/bot-bottle/bot-bottle/internal/state"
	"github.com/bot-bottle/bot-bottle/internal/term"
	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/render"
)

func isTerminal(f *os.File) bool { return term.IsTerminal(f) }

// session drives one session: prepare, launch, attach, tear down, and then
// apply the state machine's outcome — on every exit path. s.b is in
// PhaseNew (start) or PhaseResuming (resume).
func (e *Env) session(ctx context.Context, s session) (int, error) {
	id := s.meta.Identity
	p := s.plugin
	if err := e.Store.ClearDetached(id); err != nil {
		return 0, err
	}
	spec, err := e.buildSpec(s)
	if err != nil {
		return 0, e.launchFailed(ctx, s, err, nil)
	}
	credLines, err := e.addCredentials(ctx, s, &spec)
	if err != nil {
		return 0, e.launchFailed(ctx, s, err, nil)
	}

	pctx, cancel := context.WithTimeout(ctx, prepareTimeout)
	plan, err := p.Backend.Prepare(pctx, spec)
	cancel()
	if err != nil {
		return 0, e.launchFailed(ctx, s, e.Plugins.Block(s.meta.Backend).Locate(p.Wrap(err)), p)
	}
	plan.Preflight = append(plan.Preflight, credLines...)
	e.preflight(s, p, plan)
	e.halt(HaltPrepared)

	prog := newProgress(e.Err)
	var building sync.Once
	handle, err := p.Backend.Launch(ctx, spec, plan, func(ev sdk.Progress) {
		building.Do(func() { e.halt(HaltBuilding) })
		prog.show(ev)
	})
	prog.done(err != nil)
	if err != nil {
		return 0, e.launchFailed(ctx, s, p.Wrap(err), p)
	}
	if err := e.Store.WriteHandle(id, handle); err != nil {
		s.b.rec.Handle = &handle
		return 0, e.launchFailed(ctx, s, err, p)
	}
	s.b.rec.Handle = &handle
	if _, err := e.apply(s.b, EvLaunched, p); err != nil {
		return 0, err
	}
	if s.meta.Review != nil && !s.b.rec.Kept {
		// Its clone holds the agent's work, which only review or rm ends:
		// kept from the launch that came up, as a commit keeps a bottle.
		if err := e.Store.MarkPreserved(id); err != nil {
			e.warn("%v", err)
		} else {
			s.b.rec.Kept = true
		}
	}
	if sync := p.Info.Has(sdk.CapQueueSync); s.meta.TTY != spec.TTY || s.meta.QueueSync != sync {
		// Recorded once the launch came up: a failed resume changes nothing.
		m, err := e.Store.UpdateMetadata(ctx, id, func(m *state.Metadata) error { m.TTY, m.QueueSync = spec.TTY, sync; return nil })
		if err != nil {
			e.warn("%v", err)
		} else {
			s.meta, s.b.rec.Meta = m, m
		}
	}
	e.halt(HaltLaunched)
	// This image source came up: it is what revert goes back to.
	built := state.Built{CommittedImage: spec.CommittedImage, ImageUser: handle.ImageUser}
	if spec.BottleDockerfile != "" {
		built.Dockerfile = string(s.b.rec.Dockerfile)
	}
	if err := e.Store.WriteBuilt(id, built); err != nil {
		e.warn("%v", err)
	}
	kind := audit.KindStart
	if s.resume {
		kind = audit.KindResume
		e.restoreTranscript(ctx, p, s, handle)
	}
	e.record(s.agent, audit.Event{Identity: id, Kind: kind, Fields: map[string]any{
		"backend": p.Name, "agent": s.meta.AgentName, "cwd": s.meta.Cwd, "copy_cwd": s.meta.CopyCwd,
		"command": s.command, "egress": nonNil(s.meta.Egress), "detach": s.detach,
		"credentials": credentialNames(spec)}})
	if s.detach {
		if err := e.Store.MarkDetached(id); err != nil {
			e.warn("%v", err)
		}
		e.notify(Notice{Kind: NoticeDetached, Identity: id,
			Text: fmt.Sprintf("%s is running detached; attach with: bot-bottle attach %s   stop with: bot-bottle stop %s", id, id, id)})
		return 0, nil
	}
	return e.attachSession(ctx, s.b, p, handle)
}

// attachSession attaches the operator to a running bottle and, when the
// session ends, applies its end.
func (e *Env) attachSession(ctx context.Context, b *bottle, p *pluginhost.Plugin, h sdk.Handle) (int, error) {
	id := b.id()
	actx, stopNow := context.WithCancel(ctx)
	defer stopNow()
	stopWatch := e.watchRequests(actx, id, p, h)
	asked := e.watchStopRequest(actx, id, stopNow)
	e.halt(HaltAttached)
	st, err := e.attach(actx, p, h, b.rec.Meta.TTY)
	stopWatch()
	if asked.Load() {
		// An approval asked this session to end: its teardown is the one.
		e.closeSession(b, EvCapApproved, p, true)
		return 1, nil
	}
	if err == nil && st.Detached {
		if _, aerr := e.apply(b, EvDetached, p); aerr != nil {
			return 0, aerr
		}
		_ = e.Store.MarkDetached(id)
		e.notify(Notice{Kind: NoticeDetached, Identity: id})
		return 0, nil
	}
	if err != nil {
		ev := EvExited
		switch {
		case ctx.Err() != nil:
			ev = EvInterrupted
		case pluginGone(err):
			ev = EvPluginGone
		}
		e.closeSession(b, ev, p, true)
		return 0, p.Wrap(err)
	}
	e.record(b.agent, audit.Event{Identity: id, Kind: audit.KindStop, Fields: map[string]any{"exit_code": st.Code}})
	e.say("%s exited with code %d", id, st.Code)
	e.closeSession(b, EvExited, p, true)
	return st.Code, nil
}

// watchStopRequest ends the attached session (through stop) when another
// process asks it to with Store.RequestStop; the returned flag says it did.
func (e *Env) watchStopRequest(ctx context.Context, id string, stop func()) *atomic.Bool {
	var asked atomic.Bool
	poll(ctx, stopRequestPoll, func() bool {
		if yes, _ := e.Store.StopRequested(id); yes {
			asked.Store(true)
			stop()
			return false
		}
		return true
	})
	return &asked
}

// poll calls fn every d, in a goroutine of its own, until ctx ends or fn
// returns false. The returned func ends it and waits for it.
func poll(ctx context.Context, d time.Duration, fn func() bool) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if !fn() {
				return
			}
		}
	}()
	return func() { cancel(); <-done }
}

const stopRequestPoll = 200 * time.Millisecond

// launchFailed closes a session whose bottle never came up. A new bottle
// goes with everything it made; a resumed one is kept byte for byte as it
// was, with the failure in its audit and the way to retry or revert.
func (e *Env) launchFailed(ctx context.Context, s session, cause error, p *pluginhost.Plugin) error {
	ev := EvLaunchFailed
	switch {
	case ctx.Err() != nil:
		ev = EvInterrupted
	case pluginGone(cause):
		ev = EvPluginGone
	}
	id := s.meta.Identity
	if s.resume {
		e.record(s.agent, audit.Event{Identity: id, Kind: audit.KindResumeFailed, Fields: map[string]any{
			"error": cause.Error(), "backend": s.meta.Backend}})
	}
	e.closeSession(s.b, ev, p, false)
	if s.resume && s.b.phase == PhaseStopped {
		e.notify(Notice{Kind: NoticeResumeFailed, Identity: id})
	}
	return cause
}

// restoreTranscript puts the transcript snapshot back where the agent keeps
// it, before the agent starts.
func (e *Env) restoreTranscript(ctx context.Context, p *pluginhost.Plugin, s session, h sdk.Handle) {
	tp := s.agent.TranscriptPath
	if tp == "" {
		return
	}
	tar, err := e.Store.ReadTranscript(s.meta.Identity)
	if err != nil {
		e.warn("transcript of %s: %v", s.meta.Identity, err)
		return
	}
	if tar == nil {
		return
	}
	if !p.Info.Has(sdk.CapCopy) {
		e.warn("the %s backend cannot copy files in; the transcript was not restored", p.Name)
		return
	}
	if err := p.Backend.CopyIn(ctx, h, transcriptParent(tp), tar); err != nil {
		e.warn("restore transcript: %v", p.Wrap(err))
		return
	}
	e.say("restored the transcript at %s", tp)
}

// watchRequests picks up the bottle's requests while it is attached, so the
// operator sees them at once and the audit log has them in order, and
// finishes the approvals of the bottle a dead decider left held, so that its
// agent does not wait for another reader (finishHeld, with its backoff). It
// runs beside the attach: a slow finishing delays the next poll, never the
// session's I/O. A bottle whose queue is apart from the host's
// (sdk.CapQueueSync) is synced through p at each poll, and again when a
// poll wrote receipts.
func (e *Env) watchRequests(ctx context.Context, id string, p *pluginhost.Plugin, h sdk.Handle) (stop func()) {
	syncs := p != nil && p.Info.Has(sdk.CapQueueSync)
	failing := false
	sync := func() {
		dir, err := e.queueDir(id)
		if err == nil {
			sctx, cancel := context.WithTimeout(ctx, queueSyncTimeout)
			err = p.Wrap(p.Backend.SyncQueue(sctx, h, dir))
			cancel()
		}
		// Said once per outage, not at every poll.
		if err != nil && !failing && ctx.Err() == nil {
			e.warn("sync the queue of %s: %v", id, err)
		}
		failing = err != nil
	}
	return poll(ctx, requestPoll, func() bool {
		if syncs {
			sync()
		}
		// Last, after this poll's requests are shown.
		defer e.finishHeldOfIfDue(ctx, id)
		reqs, refused, err := e.queue().Ingest(id)
		if err != nil {
			return true
		}
		e.auditIngested(reqs, refused)
		if syncs && len(reqs)+len(refused) > 0 {
			sync()
		}
		for _, r := range reqs {
			rid := render.Text(r.ID)
			fmt.Fprintf(e.Err, "\r\nbot-bottle: %s asks for %s: %s, saying %s\r\nbot-bottle:   approve: bot-bottle approve %s   deny: bot-bottle deny %s --reason \"…\"\r\n",
				id, render.Text(string(r.Kind)), render.Text(r.Summary()), render.Quoted(r.Reason), rid, rid)
		}
		return true
	})
}

const requestPoll = time.Second

// preflight prints what the launch will do.
func (e *Env) preflight(s session, p *pluginhost.Plugin, plan sdk.Plan) {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  backend\t%s %s\n", p.Name, p.Info.Version)
	fmt.Fprintf(tw, "  identity\t%s\n", s.meta.Identity)
	fmt.Fprintf(tw, "  agent\t%s\n", s.meta.AgentName)
	fmt.Fprintf(tw, "  command\t%s\n", strings.Join(s.command, " "))
	if r := s.meta.Review; r != nil {
		fmt.Fprintf(tw, "  review\tclone of %s on branch %s%s from %.12s (kept until rm; bot-bottle diff|apply|merge %s)\n",
			r.Repo, review.BranchPrefix, s.meta.Identity, r.Base, s.meta.Identity)
	}
	for _, l := range plan.Preflight {
		if l.Key == "backend" || l.Key == "identity" {
			continue
		}
		fmt.Fprintf(tw, "  %s\t%s\n", l.Key, l.Value)
	}
	tw.Flush()
	verb := "starting"
	if s.resume {
		verb = "resuming"
	}
	fmt.Fprintf(e.Err, "bot-bottle: %s %s\n%s", verb, s.meta.Identity, b.String())
	if p.Source == pluginhost.SourceDev {
		e.warn("plugin %q is a development override from %s (%s): not checked against %s",
			p.Name, pluginhost.EnvDevPlugins, p.Path, pluginlock.FileName)
	}
	for _, w := range plan.Warnings {
		e.warn("%s", w)
	}
	for _, w := range egressWarnings(s.meta.Egress) {
		e.warn("%s", w)
	}
}

// attach connects the user's terminal (or pipes) to the bottle.
// The terminal is put in raw mode only when both sides are terminals: a
// bottle launched without one gets the operator's input a line at a time,
// and Ctrl-P Ctrl-Q (then Enter) still detaches.
func (e *Env) attach(ctx context.Context, p *pluginhost.Plugin, h sdk.Handle, bottleTTY bool) (sdk.ExitStatus, error) {
	actx, detach := context.WithCancel(ctx)
	defer detach()
	// Set from the stdin goroutine when the user types the detach keys.
	var userDetached atomic.Bool
	userTerm := isTerminal(e.In)
	tty := userTerm && bottleTTY
	streams := sdk.AttachStreams{Stdout: e.Out, Stderr: e.Err}
	req := sdk.AttachRequest{Handle: h, TTY: bottleTTY, Stdin: e.In != nil}
	if userTerm && !bottleTTY {
		e.say("%s has no terminal (it was launched without one): what you type is sent a line at a time; Ctrl-P Ctrl-Q then Enter detaches", h.Identity)
		streams.Stdin = &term.DetachReader{R: e.In, OnDetach: func() {
			userDetached.Store(true)
			detach()
		}}
	} else if tty {
		restore, err := term.Raw(e.In)
		if err != nil {
			return sdk.ExitStatus{}, fmt.Errorf("terminal raw mode: %w", err)
		}
		defer restore()
		req.Size = term.Size(e.In)
		streams.Resize = term.WatchResize(actx, e.In)
		streams.Stdin = &term.DetachReader{R: e.In, OnDetach: func() {
			userDetached.Store(true)
			detach()
		}}
	} else if e.In != nil {
		streams.Stdin = e.In
	}
	st, err := p.Backend.Attach(actx, req, streams)
	if userDetached.Load() {
		return sdk.ExitStatus{Detached: true}, nil
	}
	if err != nil {
		return st, err
	}
	if st.Detached && ctx.Err() != nil {
		return st, ctx.Err()
	}
	return st, nil
}
