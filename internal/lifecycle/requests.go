package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/audit"
	"github.com/bot-bottle/bot-bottle/internal/config"
	"github.com/bot-bottle/bot-bottle/internal/pluginhost"
	"github.com/bot-bottle/bot-bottle/internal/queue"
	"github.com/bot-bottle/bot-bottle/internal/state"
	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/egressrule"
)

// Requests picks up new requests from every bottle's inbox (auditing each,
// and each refusal) and returns all requests, pending and decided. Bottles
// whose queue is apart from the host's (sdk.CapQueueSync) are synced first.
func (e *Env) Requests(ctx context.Context) ([]queue.Request, error) {
	e.ingestAll(ctx)
	return e.queue().List()
}

func (e *Env) ingestAll(ctx context.Context) {
	e.syncQueues(ctx)
	reqs, refused, err := e.queue().IngestAll()
	if err != nil {
		e.warn("read requests: %v", err)
	}
	e.auditIngested(reqs, refused)
	e.finishHeld(ctx)
}

func (e *Env) auditIngested(reqs []queue.Request, refused []error) {
	for _, r := range reqs {
		fields := map[string]any{"kind": string(r.Kind), "reason": r.Reason, "summary": r.Summary()}
		if r.Host != "" {
			fields["host"] = r.Host
		}
		if r.Kind == queue.KindCapability {
			fields["run"], fields["dockerfile"] = r.Run, r.Dockerfile
		}
		e.record(e.agentOf(r.Identity), audit.Event{Identity: r.Identity, Kind: audit.KindRequest,
			Actor: "bottle:" + r.Identity, RequestID: r.ID, Fields: fields})
	}
	for _, err := range refused {
		var re *queue.RefusedError
		if errors.As(err, &re) && re.Identity != "" {
			e.record(e.agentOf(re.Identity), audit.Event{Identity: re.Identity, Kind: audit.KindRequest,
				Actor: "bottle:" + re.Identity, Fields: map[string]any{"refused": err.Error()}})
		}
	}
}

// agentOf loads the agent definition of a bottle, or nil when it cannot.
func (e *Env) agentOf(id string) *config.Agent {
	meta, err := e.Store.ReadMetadata(id)
	if err != nil {
		return nil
	}
	a, err := e.loadAgent(meta.AgentName)
	if err != nil {
		return nil
	}
	return a
}

// Decision is what approving or denying did.
type Decision struct {
	Request queue.Request
	// Preserved is set when an approved capability request stopped the
	// bottle for a rebuild; resume it to get the new image.
	Preserved bool
	// Notes are things the operator should know (e.g. an egress approval
	// that applies only at the next resume).
	Notes []string
}

// Deny records a denial; the bottle's helper reports it to the agent.
func (e *Env) Deny(ctx context.Context, id, reason, decidedBy string) (Decision, error) {
	if strings.TrimSpace(reason) == "" {
		return Decision{}, errors.New("deny needs --reason: the agent is told why")
	}
	e.ingestAll(ctx)
	r, err := e.queue().Decide(id, false, reason, decidedBy)
	if err != nil {
		return Decision{}, fmt.Errorf("deny %s: %w", id, err)
	}
	e.syncQueue(ctx, r.Identity)
	e.record(e.agentOf(r.Identity), audit.Event{Identity: r.Identity, Kind: audit.KindDecision, Actor: decidedBy,
		RequestID: r.ID, Fields: map[string]any{"decision": "denied", "reason": reason, "summary": r.Summary()}})
	return Decision{Request: r}, nil
}

// Approve records an approval and carries it out. A capability request
// rebuilds: the per-bottle Dockerfile is written, the transcript copied
// out, the bottle marked preserved and stopped, ready for `resume`. An
// egress request widens the bottle's allowlist, live where the backend can.
func (e *Env) Approve(ctx context.Context, id, decidedBy string) (Decision, error) {
	e.ingestAll(ctx)
	r, err := e.queue().Get(id)
	if err != nil {
		return Decision{}, fmt.Errorf("approve %s: %w", id, err)
	}
	if r.Status != queue.StatusPending {
		return Decision{}, fmt.Errorf("approve %s: %w (%s by %s)", id, queue.ErrAlreadyDecided, r.Status, r.DecidedBy)
	}
	meta, err := e.readMeta(r.Identity)
	if err != nil {
		return Decision{}, fmt.Errorf("approve %s: %w", id, err)
	}
	agent, err := e.loadAgent(meta.AgentName)
	if err != nil {
		return Decision{}, fmt.Errorf("approve %s: %w", id, err)
	}
	switch r.Kind {
	case queue.KindCapability:
		return e.approveCapability(ctx, r, meta, agent, decidedBy)
	case queue.KindEgress:
		return e.approveEgress(ctx, r, meta, agent, decidedBy)
	}
	return Decision{}, fmt.Errorf("approve %s: unknown kind %q", id, r.Kind)
}

// baseDockerfile is what a capability change applies to — what the bottle
// really runs: its snapshot when it boots one (FROM the snapshot), else its
// own Dockerfile from an earlier approval, else the agent's. user is the
// user the base's image runs as, which an approved RUN switches back to:
// the USER the text's last stage sets; else, when the base is the source
// that last came up, the user its backend reported of that image (the only
// word on an image's or a snapshot's configured user); else, from an earlier
// plugin or core, the text's as before.
func (e *Env) baseDockerfile(rec *state.Record, agent *config.Agent) (base, user string, err error) {
	var src string
	switch {
	case rec.Dockerfile != nil:
		src = string(rec.Dockerfile)
	case agent.Dockerfile != "":
		data, err := os.ReadFile(agent.Dockerfile)
		if err != nil {
			return "", "", fmt.Errorf("read the agent's Dockerfile: %w", err)
		}
		src = string(data)
	default:
		src = "FROM " + agent.Image + "\n"
	}
	built, err := e.Store.ReadBuilt(rec.Meta.Identity)
	if err != nil {
		return "", "", err
	}
	reported := ""
	if built != nil && built.CommittedImage == rec.CommittedImage &&
		(rec.CommittedImage != "" || built.Dockerfile == string(rec.Dockerfile)) {
		reported = built.ImageUser
	}
	if rec.CommittedImage != "" {
		// The snapshot's FROM line says nothing of its user.
		user = reported
		if user == "" {
			user = lastUser(src)
		}
		return fmt.Sprintf("# %s boots its snapshot\nFROM %s\n", rec.Meta.Identity, rec.CommittedImage), user, nil
	}
	user = lastUser(src)
	if user == "" {
		user = reported
	}
	return src, user, nil
}

// Proposal is what approving a capability request would change.
type Proposal struct {
	// Base is what the bottle runs now; Next is what the approval writes.
	Base, Next string
	// Warnings are what the approver must know before saying yes.
	Warnings []string
}

// ProposedDockerfile is what approving capability request r would change:
// the bottle's current Dockerfile and the one the approval writes. The
// dashboard shows their diff; Approve applies exactly this.
func (e *Env) ProposedDockerfile(r queue.Request) (base, next string, err error) {
	p, err := e.Propose(r)
	return p.Base, p.Next, err
}

// Propose is ProposedDockerfile with the warnings for the approver.
func (e *Env) Propose(r queue.Request) (Proposal, error) {
	rec, err := e.Store.Load(r.Identity)
	if err != nil {
		return Proposal{}, err
	}
	agent, err := e.loadAgent(rec.Meta.AgentName)
	if err != nil {
		return Proposal{}, err
	}
	return e.proposed(r, rec, agent)
}

func (e *Env) proposed(r queue.Request, rec *state.Record, agent *config.Agent) (Proposal, error) {
	base, user, err := e.baseDockerfile(rec, agent)
	if err != nil {
		return Proposal{}, err
	}
	p := Proposal{Base: base, Next: r.Dockerfile}
	if p.Next == "" {
		p.Next = appendRun(base, r.ID, r.Run, user)
	} else if rec.CommittedImage != "" {
		p.Warnings = append(p.Warnings, fmt.Sprintf("approving replaces %s's snapshot %s: what the agent changed since it was committed is not in the new image", rec.Meta.Identity, rec.CommittedImage))
	}
	return p, nil
}

// approveCapability rebuilds the bottle the way approveEgress widens it:
// decided held, carried out (the Dockerfile Propose showed written, the
// transcript copied out, the bottle kept), released to the agent, and only
// then stopped, all under the bottle's apply lock. The agent never hears
// "approved" of a change that is not yet recorded, and a crash in between
// leaves the approval held for the next reader to finish (finishHeld),
// never one the agent heard and nothing carries out.
func (e *Env) approveCapability(ctx context.Context, r queue.Request, meta state.Metadata, agent *config.Agent, decidedBy string) (Decision, error) {
	id := meta.Identity
	// After the bottle's egress approvals under way: the stop below must not
	// come before their answers reach the agent.
	unlock, err := e.lockApply(ctx, r)
	if err != nil {
		return Decision{}, err
	}
	defer unlock()
	// Before deciding: a change that cannot be made, or a backend that
	// cannot be reached, leaves the request pending, not an approval that
	// cannot be carried out.
	if _, err := e.Propose(r); err != nil {
		return Decision{}, fmt.Errorf("approve %s: %w", r.ID, err)
	}
	p, err := e.pluginIfRunning(ctx, id)
	if err != nil {
		return Decision{}, fmt.Errorf("approve %s: cannot reach %s's backend: %w", r.ID, id, err)
	}
	if p != nil {
		defer p.Close()
	}
	r, err = e.queue().DecideHeld(r.ID, decidedBy)
	if err != nil {
		return Decision{}, fmt.Errorf("approve: %w", err)
	}
	e.halt(HaltCapabilityDecided)
	d := Decision{Request: r}
	d.Notes, err = e.carryOutCapability(ctx, r, agent, p, false)
	if err != nil {
		e.retries.failed(r.ID, id, e.now())
		return d, fmt.Errorf("%w (%s stays pending to the agent; the next `bot-bottle requests` tries again)", err, r.ID)
	}
	d.Preserved = true
	e.halt(HaltCapabilityCarriedOut)
	if d.Request, err = e.queue().Release(r.ID, true); err != nil {
		return d, err
	}
	// Before the bottle stops for the rebuild, so that its agent hears why.
	e.syncQueue(ctx, id)
	e.halt(HaltCapabilityReleased)
	notes, err := e.stopForRebuild(ctx, r, agent, p)
	d.Notes = append(d.Notes, notes...)
	return d, err
}

// pluginIfRunning starts the backend of a bottle that runs, or returns nil
// for one that does not.
func (e *Env) pluginIfRunning(ctx context.Context, id string) (*pluginhost.Plugin, error) {
	h, err := e.Store.ReadHandle(id)
	if err != nil {
		return nil, err
	}
	if h == nil {
		return nil, nil
	}
	meta, err := e.readMeta(id)
	if err != nil {
		return nil, err
	}
	return e.startPlugin(ctx, meta.Backend)
}

// carryOutCapability records a held capability approval r in the bottle's
// state: audited (with the Dockerfile diff), the bottle's Dockerfile
// written, its snapshot no longer what boots, the transcript copied out of
// the running bottle through p (nil: not running, or not reachable), and
// the bottle kept. The audit comes before the writes, so that a decider
// killed after them has audited already. Run again by a finisher (finishing
// set), it does nothing twice: the audit is skipped once there, and a
// Dockerfile that already has r's approval is not written again (appending
// the RUN to it would add it a second time).
func (e *Env) carryOutCapability(ctx context.Context, r queue.Request, agent *config.Agent, p *pluginhost.Plugin, finishing bool) (notes []string, err error) {
	id := r.Identity
	if agent == nil {
		return nil, fmt.Errorf("carry out %s: the agent of %s cannot be loaded", r.ID, id)
	}
	rec, err := e.Store.Load(id)
	if err != nil {
		return nil, err
	}
	written := finishing && approvalWritten(rec, r)
	var prop Proposal
	if !written {
		if prop, err = e.proposed(r, rec, agent); err != nil {
			return nil, err
		}
		notes = prop.Warnings
	}
	if !finishing || !e.audited(r) {
		fields := map[string]any{"decision": "approved", "summary": r.Summary()}
		if !written {
			fields["dockerfile_diff"] = audit.DockerfileDiff(prop.Base, prop.Next)
		}
		e.record(agent, audit.Event{Identity: id, Kind: audit.KindDecision, Actor: r.DecidedBy, RequestID: r.ID, Fields: fields})
	}
	if !written {
		if err := e.Store.WriteDockerfile(id, []byte(prop.Next)); err != nil {
			return notes, err
		}
	}
	e.halt(HaltCapabilityWritten)
	if rec.CommittedImage != "" {
		// The new Dockerfile is what boots now: FROM the snapshot for a RUN,
		// in its place for a whole Dockerfile. The snapshot stays the
		// bottle's (listed, and removed with it).
		if err := e.Store.ClearCommittedImage(id); err != nil {
			return notes, err
		}
	}
	if rec.Handle != nil && p != nil && agent.TranscriptPath != "" {
		if note := e.snapshotTranscript(ctx, p, *rec.Handle, agent.TranscriptPath); note != "" {
			notes = append(notes, note)
		}
	}
	if !rec.Kept || !finishing {
		if err := e.Store.MarkPreserved(id); err != nil {
			return notes, err
		}
		e.record(agent, audit.Event{Identity: id, Kind: audit.KindPreserve, Actor: r.DecidedBy, RequestID: r.ID,
			Fields: map[string]any{"why": "capability change approved"}})
	}
	return notes, nil
}

// approvalWritten reports whether the bottle's Dockerfile already is what
// approving r writes: a decider killed after writing it left it so.
func approvalWritten(rec *state.Record, r queue.Request) bool {
	if rec.Dockerfile == nil {
		return false
	}
	if r.Dockerfile != "" {
		return string(rec.Dockerfile) == r.Dockerfile
	}
	return strings.Contains(string(rec.Dockerfile), approvedMarker(r.ID))
}

// stopForRebuild stops the bottle of the carried-out capability approval r,
// so that its next resume builds the new image: after a grace in which its
// agent hears the answer, and through the attached session when a
// bot-bottle process holds the bottle (its teardown is the only one). The
// stop clears r's Stopping (apply); so does finding the bottle not running.
// p is the bottle's backend, or nil to start it here.
func (e *Env) stopForRebuild(ctx context.Context, r queue.Request, agent *config.Agent, p *pluginhost.Plugin) (notes []string, err error) {
	id := r.Identity
	resume := fmt.Sprintf("stop it with `bot-bottle stop %s`, then `%s` builds the change", id, ResumeCommand(id))
	b, err := e.load(id)
	if err != nil {
		return nil, err
	}
	b.agent = agent
	if b.rec.Handle == nil {
		// Nothing to stop: carrying out kept it. Its state is left alone, as
		// another process may be launching it (its handle not yet written).
		if err := e.queue().Stopped(id); err != nil {
			return nil, err
		}
		return []string{fmt.Sprintf("%s is not running; the change applies when you resume it", id)}, nil
	}
	if p == nil {
		if p, err = e.startPlugin(ctx, b.rec.Meta.Backend); err != nil {
			return nil, fmt.Errorf("approved, but cannot stop %s for the rebuild: %w (%s)", id, err, resume)
		}
		defer p.Close()
	}
	// Let the agent's helper read the answer before its bottle goes away.
	select {
	case <-ctx.Done():
	case <-time.After(answerGrace):
	}
	e.record(agent, audit.Event{Identity: id, Kind: audit.KindStop, Actor: r.DecidedBy, RequestID: r.ID,
		Fields: map[string]any{"why": "rebuild for approved capability request"}})
	unlock, err := e.Store.Lock(id)
	if errors.Is(err, state.ErrLocked) {
		// A bot-bottle process is attached: it ends its session, and its
		// teardown is the only one.
		if err := e.Store.RequestStop(id); err != nil {
			return nil, fmt.Errorf("approved, but cannot ask %s's session to end: %w (%s)", id, err, resume)
		}
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("approved, but cannot stop %s for the rebuild: %w (%s)", id, err, resume)
	}
	defer unlock()
	if b, err = e.load(id); err != nil {
		return nil, err
	}
	b.agent = agent
	if _, err := e.apply(b, EvCapApproved, p); err != nil {
		return nil, fmt.Errorf("approved, but stopping %s failed: %w (%s)", id, err, resume)
	}
	return nil, nil
}

// answerGrace is how long an approved bottle keeps running so that the
// helper inside (which polls every 250 ms) can report the approval.
const answerGrace = time.Second

// snapshotTranscript copies the agent's transcript out of the running
// bottle into its state. Failing to is worth saying, not worth losing the
// approval over.
func (e *Env) snapshotTranscript(ctx context.Context, p *pluginhost.Plugin, h sdk.Handle, transcriptPath string) string {
	if !p.Info.Has(sdk.CapCopy) {
		return fmt.Sprintf("the %s backend cannot copy files out; the transcript was not kept", p.Name)
	}
	tar, err := p.Backend.CopyOut(ctx, h, transcriptPath)
	if errors.Is(err, sdk.ErrNotFound) {
		return fmt.Sprintf("no transcript at %s yet; nothing to keep", transcriptPath)
	}
	if err != nil {
		return fmt.Sprintf("transcript not kept: %v", p.Wrap(err))
	}
	if err := e.Store.WriteTranscript(h.Identity, tar); err != nil {
		return fmt.Sprintf("transcript not kept: %v", err)
	}
	return ""
}

// approveEgress widens the bottle's allowlist. The agent must not hear
// "approved" before the allowlist has the host (it would try at once and be
// refused), neither from its host-mounted outbox (Docker) nor from another
// process's sync of its queue (CapQueueSync): so the approval is decided
// held, carried out, and only then released to the bottle, all under the
// bottle's apply lock. A crash in between leaves it held with the lock free,
// and the next reader finishes it (finishHeld).
func (e *Env) approveEgress(ctx context.Context, r queue.Request, meta state.Metadata, agent *config.Agent, decidedBy string) (Decision, error) {
	// Ingest refuses these; a record from before that rule is refused here.
	warning, err := egressrule.CheckRequested(r.Host)
	if err != nil {
		return Decision{}, fmt.Errorf("approve %s: %w (deny it: bot-bottle deny %s --reason ...)", r.ID, err, r.ID)
	}
	unlock, err := e.lockApply(ctx, r)
	if err != nil {
		return Decision{}, err
	}
	defer unlock()
	r, err = e.queue().DecideHeld(r.ID, decidedBy)
	if err != nil {
		return Decision{}, fmt.Errorf("approve: %w", err)
	}
	e.halt(HaltEgressDecided)
	d := Decision{Request: r}
	if warning != "" {
		d.Notes = append(d.Notes, "warning: "+warning)
	}
	notes, err := e.carryOutEgress(ctx, r, agent, true)
	d.Notes = append(d.Notes, notes...)
	if err != nil {
		// Tried again by finishHeld, this Env's after its backoff.
		e.retries.failed(r.ID, meta.Identity, e.now())
		return d, fmt.Errorf("%w (%s stays pending to the agent; the next `bot-bottle requests` tries again)", err, r.ID)
	}
	e.halt(HaltEgressCarriedOut)
	if d.Request, err = e.queue().Release(r.ID, false); err != nil {
		return d, err
	}
	unlock()
	e.syncQueue(ctx, meta.Identity)
	return d, nil
}

// applyLockWait bounds how long an approval waits for another approval of
// the same bottle to be carried out.
const applyLockWait = time.Minute

// lockApply waits for the approvals of r's bottle under way and takes the
// bottle's apply lock (queue.LockApply).
func (e *Env) lockApply(ctx context.Context, r queue.Request) (unlock func(), err error) {
	ctx, cancel := context.WithTimeout(ctx, applyLockWait)
	defer cancel()
	unlock, err = e.queue().LockApply(ctx, r.Identity)
	if err != nil {
		return nil, fmt.Errorf("approve %s: another approval of %s is still being carried out: %w", r.ID, r.Identity, err)
	}
	return unlock, nil
}

// carryOutEgress puts r.Host into the bottle's allowlist: its metadata,
// which a resume starts from, and the running allowlist where the backend
// can widen it live. Running it again does no harm, which is what lets a
// reader finish the approval of a decider that died. recordDecision audits
// the approval with the allowlist it made.
func (e *Env) carryOutEgress(ctx context.Context, r queue.Request, agent *config.Agent, recordDecision bool) (notes []string, err error) {
	// Another approval may widen the same bottle at the same time.
	meta, err := e.Store.UpdateMetadata(ctx, r.Identity, func(m *state.Metadata) error {
		if !contains(m.Egress, r.Host) {
			m.Egress = append(m.Egress, r.Host)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if recordDecision {
		e.record(agent, audit.Event{Identity: meta.Identity, Kind: audit.KindDecision, Actor: r.DecidedBy, RequestID: r.ID,
			Fields: map[string]any{"decision": "approved", "host": r.Host, "egress": meta.Egress}})
	}
	h, err := e.Store.ReadHandle(meta.Identity)
	if err != nil || h == nil {
		return []string{fmt.Sprintf("%s is not running; %s is allowed from its next resume", meta.Identity, r.Host)}, nil
	}
	p, err := e.startPlugin(ctx, meta.Backend)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	if !p.Info.Has(sdk.CapLiveEgress) {
		return []string{fmt.Sprintf("the %s backend cannot change egress of a running bottle; %s is allowed from the next resume of %s", meta.Backend, r.Host, meta.Identity)}, nil
	}
	if err := p.Backend.UpdateEgress(ctx, *h, meta.Egress); sdk.IsNotSupported(err) {
		return []string{fmt.Sprintf("%s cannot widen its egress while running (%v); %s is allowed from its next resume", meta.Identity, err, r.Host)}, nil
	} else if err != nil {
		return nil, p.Wrap(fmt.Errorf("approved, but updating the running allowlist failed: %w", err))
	}
	return []string{fmt.Sprintf("%s may now reach %s", meta.Identity, r.Host)}, nil
}

// finishHeld carries out and releases the approvals that their deciders
// left held: killed between deciding and releasing (the kernel dropped the
// apply lock), or failing to widen a running bottle or to record a rebuild
// (tried again by each reader until it works or the bottle stops, by one
// Env no sooner than its backoff allows). A released capability approval
// then stops its bottle, as its decider would have, also one whose decider
// died after releasing it (queue's Stopping). A bottle whose decider is
// still at it (its apply lock taken) is left to it.
func (e *Env) finishHeld(ctx context.Context) {
	// A record List cannot read is reported by the caller's own List.
	reqs, _ := e.queue().List()
	e.retries.settle("", reqs)
	for _, id := range e.retries.dueBottles(reqs, e.now()) {
		e.finishHeldOf(ctx, id)
	}
}

// finishHeldOfIfDue is finishHeld for one bottle: what its attached
// session's request watch runs.
func (e *Env) finishHeldOfIfDue(ctx context.Context, id string) {
	held, _ := e.queue().Held(id)
	e.retries.settle(id, held)
	if len(e.retries.dueBottles(held, e.now())) > 0 {
		e.finishHeldOf(ctx, id)
	}
}

func (e *Env) finishHeldOf(ctx context.Context, id string) {
	unlock, ok, err := e.queue().TryLockApply(id)
	if err != nil {
		e.warn("finish the approvals of %s: %v", id, err)
		return
	}
	if !ok {
		return
	}
	defer unlock()
	// Read again under the lock: the decider may have released them since.
	all, err := e.queue().Held(id)
	if err != nil {
		e.warn("finish the approvals of %s: %v", id, err)
	}
	e.retries.settle(id, all)
	var held []queue.Request
	for _, r := range all {
		if e.retries.due(r, e.now()) {
			held = append(held, r)
		}
	}
	// failed backs rs off after err; the last is the one err is of.
	failed := func(err error, rs ...queue.Request) {
		if ctx.Err() != nil {
			// Cut short (a session's end), not failed: the next reader goes on.
			return
		}
		for _, r := range rs {
			e.retries.failed(r.ID, id, e.now())
		}
		e.warn("finish the approval %s: %v", rs[len(rs)-1].ID, err)
	}
	agent := e.agentOf(id)
	// For a rebuild's transcript and stop; nil when the bottle does not run.
	var p *pluginhost.Plugin
	var pErr error
	for _, r := range held {
		if r.Kind == queue.KindCapability {
			if p, pErr = e.pluginIfRunning(ctx, id); p != nil {
				defer p.Close()
			}
			break
		}
	}
	var released, rebuild []queue.Request
	for _, r := range held {
		if !r.Held {
			// Released; only its bottle's stop is left.
			if r.Stopping {
				rebuild = append(rebuild, r)
			}
			continue
		}
		var notes []string
		switch r.Kind {
		case queue.KindEgress:
			notes, err = e.carryOutEgress(ctx, r, agent, !e.audited(r))
		case queue.KindCapability:
			if err = pErr; err == nil {
				notes, err = e.carryOutCapability(ctx, r, agent, p, true)
			}
		default:
			err = fmt.Errorf("a %s request is never held", r.Kind)
		}
		if err != nil {
			failed(err, r)
			continue
		}
		if _, err := e.queue().Release(r.ID, r.Kind == queue.KindCapability); err != nil {
			failed(err, r)
			continue
		}
		e.retries.succeeded(r.ID)
		released = append(released, r)
		if r.Kind == queue.KindCapability {
			rebuild = append(rebuild, r)
		}
		msg := fmt.Sprintf("finished the approval %s by %s, left unfinished", r.ID, r.DecidedBy)
		if len(notes) > 0 {
			msg += ": " + strings.Join(notes, "; ")
		}
		e.say("%s", msg)
	}
	if len(released) > 0 {
		e.syncQueue(ctx, id)
	}
	if len(rebuild) > 0 {
		// One stop for them all, as their deciders would have made.
		r := rebuild[len(rebuild)-1]
		notes, err := e.stopForRebuild(ctx, r, agent, p)
		if err != nil {
			failed(err, rebuild...)
			return
		}
		for _, q := range rebuild {
			e.retries.succeeded(q.ID)
		}
		for _, n := range notes {
			e.say("%s", n)
		}
	}
}

// A held approval whose carrying out failed is tried again by the same Env
// only after a delay that doubles at each failure: a reader that reads every
// second (the dashboard, a session's watch) would otherwise start a plugin
// and print a warning every second for as long as the backend refuses.
// The first delay is short, so that a passing failure is soon over; the
// longest keeps an outage's retries (and warnings) to one a minute.
const (
	heldRetryFirst = 2 * time.Second
	heldRetryMax   = time.Minute
)

// heldRetries is an Env's backoff of the held approvals it failed to finish,
// by request ID. Its zero value is ready; it is safe for concurrent use.
type heldRetries struct {
	mu sync.Mutex
	m  map[string]heldRetry
}

type heldRetry struct {
	identity string
	delay    time.Duration
	next     time.Time
}

// due reports whether r is left to finish (held, or its stop to come) and
// not backed off at now.
func (h *heldRetries) due(r queue.Request, now time.Time) bool {
	if !r.Unfinished() {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	b, ok := h.m[r.ID]
	return !ok || !now.Before(b.next)
}

// dueBottles are the bottles of reqs with a request due, in reqs' order.
func (h *heldRetries) dueBottles(reqs []queue.Request, now time.Time) []string {
	var ids []string
	for _, r := range reqs {
		if !slices.Contains(ids, r.Identity) && h.due(r, now) {
			ids = append(ids, r.Identity)
		}
	}
	return ids
}

// failed backs request reqID of bottle identity off from now.
func (h *heldRetries) failed(reqID, identity string, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = map[string]heldRetry{}
	}
	d := heldRetryFirst
	if r, ok := h.m[reqID]; ok {
		d = min(2*r.delay, heldRetryMax)
	}
	h.m[reqID] = heldRetry{identity: identity, delay: d, next: now.Add(d)}
}

// succeeded forgets request reqID's backoff.
func (h *heldRetries) succeeded(reqID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.m, reqID)
}

// settle forgets the backoff of the requests of bottle identity ("" for
// every bottle) that reqs no longer has held or stopping: another process
// finished them.
func (h *heldRetries) settle(identity string, reqs []queue.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.m) == 0 {
		return
	}
	still := map[string]bool{}
	for _, r := range reqs {
		if r.Unfinished() {
			still[r.ID] = true
		}
	}
	for id, r := range h.m {
		if (identity == "" || r.identity == identity) && !still[id] {
			delete(h.m, id)
		}
	}
}

// audited reports whether the decision on r is in its bottle's audit log
// (a decider killed before it wrote it left none). An unreadable log counts
// as audited: a second record is worse than none only if the first exists.
func (e *Env) audited(r queue.Request) bool {
	evs, err := audit.Open(e.Home).Read(r.Identity)
	if err != nil {
		return true
	}
	for _, ev := range evs {
		if ev.Kind == audit.KindDecision && ev.RequestID == r.ID {
			return true
		}
	}
	return false
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// transcriptParent is where CopyIn puts the archive CopyOut made of path.
func transcriptParent(p string) string { return path.Dir(strings.TrimRight(p, "/")) }

// Audit returns a bottle's audit log, oldest first. It outlives the bottle.
func (e *Env) Audit(id string) ([]audit.Event, error) {
	if err := state.ValidateIdentity(id); err != nil {
		return nil, err
	}
	return audit.Open(e.Home).Read(id)
}

// EgressEvents returns every connection attempt a backend reported for a
// bottle.
func (e *Env) EgressEvents(id string) ([]sdk.EgressEvent, error) {
	if err := state.ValidateIdentity(id); err != nil {
		return nil, err
	}
	return audit.Open(e.Home).ReadEgress(id)
}

// appendRun adds an approved RUN line to a Dockerfile. Installing software
// needs root, so when the image switched to another user the line runs as
// root and the user is switched back after it. An apt install that does
// not fetch the package lists itself gets a RUN apt-get update before it,
// on a line of its own so that the requested line stays as it was asked:
// images ship with their lists trimmed (Debian's slim ones do), where
// `apt-get install -y ripgrep` alone says "Unable to locate package".
func appendRun(base, reqID, run, user string) string {
	var b strings.Builder
	b.WriteString(strings.TrimRight(base, "\n"))
	b.WriteString("\n")
	b.WriteString(approvedMarker(reqID))
	uid, _, _ := strings.Cut(user, ":")
	root := uid != "" && uid != "root" && uid != "0"
	if root {
		b.WriteString("USER root\n")
	}
	if needsAptUpdate(run) {
		b.WriteString("RUN apt-get update\n")
	}
	fmt.Fprintf(&b, "RUN %s\n", run)
	if root {
		fmt.Fprintf(&b, "USER %s\n", user)
	}
	return b.String()
}

// approvedMarker is the comment line before the lines appendRun adds for
// request reqID: what tells that they are in a Dockerfile already.
func approvedMarker(reqID string) string {
	return fmt.Sprintf("\n# approved request %s\n", reqID)
}

// aptInstallRE is a RUN line that starts with an apt install.
var aptInstallRE = regexp.MustCompile(`^\s*(sudo\s+)?apt(-get)?\s+(-\S+\s+)*install\b`)

// aptUpdateRE is a line that fetches the package lists itself.
var aptUpdateRE = regexp.MustCompile(`\bapt(-get)?\s+(-\S+\s+)*update\b`)

// needsAptUpdate reports whether run installs with apt without fetching the
// package lists first.
func needsAptUpdate(run string) bool {
	return aptInstallRE.MatchString(run) && !aptUpdateRE.MatchString(run)
}

// lastUser is the argument of the last USER instruction of the
// Dockerfile's last stage, or "" when that stage leaves its user to its
// base image.
func lastUser(dockerfile string) string {
	user := ""
	for _, line := range strings.Split(dockerfile, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 1 && strings.EqualFold(f[0], "FROM"):
			user = ""
		case len(f) >= 2 && strings.EqualFold(f[0], "USER"):
			user = f[1]
		}
	}
	return user
}
