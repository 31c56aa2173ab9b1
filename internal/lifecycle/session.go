package lifecycle

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/audit"
	"github.com/bot-bottle/bot-bottle/internal/pluginhost"
	"github.com/bot-bottle/bot-bottle/internal/pluginlock"
	"github.com/bot-bottle/bot-bottle/internal/render"
	"github.com/bot-bottle/bot-bottle/internal/term"
	"github.com/bot-bottle/bot-bottle/sdk"
)

func isTerminal(f *os.File) bool { return term.IsTerminal(f) }

// session drives one session: prepare, launch, attach, tear down, and then keep
// or clean up the state — in that order, on every exit path.
func (e *Env) session(ctx context.Context, s session) (int, error) {
	id := s.meta.Identity
	p := s.plugin
	if err := e.Store.ClearPreserved(id); err != nil {
		return 0, err
	}
	if err := e.Store.ClearDetached(id); err != nil {
		return 0, err
	}
	spec, err := e.buildSpec(s)
	if err != nil {
		e.finish(id, outcomeFailed)
		return 0, err
	}
	pctx, cancel := context.WithTimeout(ctx, prepareTimeout)
	plan, err := p.Backend.Prepare(pctx, spec)
	cancel()
	if err != nil {
		e.finish(id, e.outcomeOf(ctx, err))
		return 0, p.Wrap(err)
	}
	e.preflight(s, p, plan)

	prog := newProgress(e.Err)
	handle, err := p.Backend.Launch(ctx, spec, plan, prog.show)
	prog.done()
	if err != nil {
		e.teardown(p, id, nil)
		e.finish(id, e.outcomeOf(ctx, err))
		return 0, p.Wrap(err)
	}
	if err := e.Store.WriteHandle(id, handle); err != nil {
		e.teardown(p, id, &handle)
		e.finish(id, outcomeFailed)
		return 0, err
	}
	kind := audit.KindStart
	if s.resume {
		kind = audit.KindResume
		e.restoreTranscript(ctx, p, s, handle)
	}
	e.record(s.agent, audit.Event{Identity: id, Kind: kind, Fields: map[string]any{
		"backend": p.Name, "agent": s.meta.AgentName, "cwd": s.meta.Cwd, "copy_cwd": s.meta.CopyCwd,
		"command": s.command, "egress": s.meta.Egress, "detach": s.detach}})
	if s.detach {
		if err := e.Store.MarkDetached(id); err != nil {
			e.say("warning: %v", err)
		}
		e.say("%s is running detached; attach with: bot-bottle attach %s   stop with: bot-bottle stop %s", id, id, id)
		return 0, nil
	}
	stopWatch := e.watchRequests(ctx, id)
	st, err := e.attach(ctx, p, handle)
	stopWatch()
	if err == nil && st.Detached {
		_ = e.Store.MarkDetached(id)
		e.say("detached from %s; it keeps running. Reattach with: bot-bottle attach %s", id, id)
		return 0, nil
	}
	e.teardown(p, id, &handle)
	if err != nil {
		e.finish(id, e.outcomeOf(ctx, err))
		return 0, p.Wrap(err)
	}
	e.record(s.agent, audit.Event{Identity: id, Kind: audit.KindStop, Fields: map[string]any{"exit_code": st.Code}})
	e.finish(id, outcomeEnded)
	return st.Code, nil
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
		e.say("warning: transcript of %s: %v", s.meta.Identity, err)
		return
	}
	if tar == nil {
		return
	}
	if !p.Info.Has(sdk.CapCopy) {
		e.say("warning: the %s backend cannot copy files in; the transcript was not restored", p.Name)
		return
	}
	if err := p.Backend.CopyIn(ctx, h, transcriptParent(tp), tar); err != nil {
		e.say("warning: restore transcript: %v", p.Wrap(err))
		return
	}
	e.say("restored the transcript at %s", tp)
}

// watchRequests picks up the bottle's requests while it is attached, so the
// operator sees them at once and the audit log has them in order.
func (e *Env) watchRequests(ctx context.Context, id string) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(requestPoll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			reqs, refused, err := e.queue().Ingest(id)
			if err != nil {
				continue
			}
			e.auditIngested(reqs, refused)
			for _, r := range reqs {
				rid := render.Text(r.ID)
				fmt.Fprintf(e.Err, "\r\nbot-bottle: %s asks for %s: %s, saying %s\r\nbot-bottle:   approve: bot-bottle approve %s   deny: bot-bottle deny %s --reason \"…\"\r\n",
					id, render.Text(string(r.Kind)), render.Text(r.Summary()), render.Quoted(r.Reason), rid, rid)
			}
		}
	}()
	return func() { cancel(); <-done }
}

const requestPoll = time.Second

type outcome int

const (
	outcomeEnded       outcome = iota // the agent exited or was stopped
	outcomeFailed                     // our own error before the bottle ran
	outcomeInterrupted                // Ctrl-C / SIGTERM of bot-bottle
	outcomePluginGone                 // the plugin crashed or hung: keep state, resumable
)

func (e *Env) outcomeOf(ctx context.Context, err error) outcome {
	switch {
	case ctx.Err() != nil:
		return outcomeInterrupted
	case pluginGone(err):
		return outcomePluginGone
	}
	return outcomeFailed
}

// finish applies the preserve/cleanup policy after the launch has fully
// closed: a preserved bottle keeps its state and gets the resume hint; a
// bottle whose plugin died keeps its state too (it is resumable); anything
// else is removed.
func (e *Env) finish(id string, o outcome) {
	// Whatever happens next, the launch is closed: no handle, not detached.
	_ = e.Store.RemoveHandle(id)
	_ = e.Store.ClearDetached(id)
	preserved, err := e.Store.IsPreserved(id)
	if err != nil {
		e.say("warning: %v", err)
		preserved = true // never delete what we cannot read
	}
	switch {
	case preserved:
		e.record(nil, audit.Event{Identity: id, Kind: audit.KindPreserve, Fields: map[string]any{"state": "kept"}})
		e.say("%s is preserved; resume it with: bot-bottle resume %s", id, id)
	case o == outcomePluginGone:
		e.say("the plugin failed; %s's state is kept. Resume it with: bot-bottle resume %s", id, id)
	default:
		if err := e.Store.Remove(id); err != nil {
			e.say("warning: clean up state of %s: %v", id, err)
		}
		e.record(nil, audit.Event{Identity: id, Kind: audit.KindCleanup, Fields: map[string]any{"state": "removed"}})
		e.removeQueue(id)
	}
}

// teardown removes every backend resource of the bottle. It uses its own
// deadline (the caller's context may be the one that was cancelled) and a
// fresh plugin process when the first one died.
func (e *Env) teardown(p *pluginhost.Plugin, id string, h *sdk.Handle) {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if p.Exited() {
		fresh, err := e.Host.Start(ctx, p.Name)
		if err != nil {
			e.say("warning: cannot restart the %s plugin to tear down %s: %v (run: bot-bottle prune)", p.Name, id, err)
			return
		}
		defer fresh.Close()
		p = fresh
	}
	if _, err := p.Backend.Stop(ctx, sdk.StopRequest{Handle: h, Identity: id}); err != nil {
		e.say("warning: tear down %s: %v (run: bot-bottle prune)", id, p.Wrap(err))
	}
}

// preflight prints what the launch will do.
func (e *Env) preflight(s session, p *pluginhost.Plugin, plan sdk.Plan) {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  backend\t%s %s\n", p.Name, p.Info.Version)
	fmt.Fprintf(tw, "  identity\t%s\n", s.meta.Identity)
	fmt.Fprintf(tw, "  agent\t%s\n", s.meta.AgentName)
	fmt.Fprintf(tw, "  command\t%s\n", strings.Join(s.command, " "))
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
		e.say("warning: plugin %q is a development override from %s (%s): not checked against %s",
			p.Name, pluginhost.EnvDevPlugins, p.Path, pluginlock.FileName)
	}
	for _, w := range plan.Warnings {
		e.say("warning: %s", w)
	}
}

// attach connects the user's terminal (or pipes) to the bottle.
func (e *Env) attach(ctx context.Context, p *pluginhost.Plugin, h sdk.Handle) (sdk.ExitStatus, error) {
	actx, detach := context.WithCancel(ctx)
	defer detach()
	// Set from the stdin goroutine when the user types the detach keys.
	var userDetached atomic.Bool
	tty := isTerminal(e.In)
	streams := sdk.AttachStreams{Stdout: e.Out, Stderr: e.Err}
	req := sdk.AttachRequest{Handle: h, TTY: tty, Stdin: e.In != nil}
	if tty {
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

// progress shows launch progress: one rewritten line on a terminal (tty
// set), plain lines otherwise.
type progress struct {
	w     io.Writer
	tty   *os.File
	shown bool
	last  string
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok && isTerminal(f) {
		p.tty = f
	}
	return p
}

func (p *progress) show(ev sdk.Progress) {
	msg := strings.TrimSpace(ev.Message)
	if msg == "" {
		return
	}
	line := msg
	if ev.Stage != "" {
		line = ev.Stage + ": " + msg
	}
	if ev.Total > 0 {
		line += fmt.Sprintf(" (%d/%d)", ev.Current, ev.Total)
	}
	if p.tty == nil {
		if line != p.last {
			fmt.Fprintf(p.w, "bot-bottle: %s\n", line)
			p.last = line
		}
		return
	}
	width := int(term.Size(p.tty).Cols)
	if width <= 0 {
		width = 80
	}
	if r := []rune(line); len(r) > width-1 {
		line = string(r[:width-1])
	}
	fmt.Fprintf(p.w, "\r\x1b[K%s", line)
	p.shown = true
}

func (p *progress) done() {
	if p.tty != nil && p.shown {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
}
