// Package dashboard is the operator's live screen: the bottles of every
// backend and the requests waiting for a human, with approve, deny, attach,
// commit, stop and revoke (a credential) at a key. It is a bubbletea
// program over a Source; the Source that `bot-bottle dashboard` uses calls
// the same lifecycle flows as the CLI commands, so a decision here is
// exactly a decision there.
package dashboard

import (
	"context"
	"fmt"
	"os/exec"
	"sync"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/lifecycle"
	"github.com/bot-bottle/bot-bottle/internal/queue"
	"github.com/bot-bottle/bot-bottle/internal/reqview"
	"github.com/bot-bottle/bot-bottle/internal/review"
)

// Source is what the dashboard reads and does. Every call may block; the
// model runs them off the UI loop, each under a deadline.
type Source interface {
	// Bottles lists bottles of every backend; a backend that does not
	// answer in time marks its rows "unreachable" and adds a warning.
	Bottles(ctx context.Context) ([]lifecycle.Row, []error, error)
	// Requests returns the pending requests, picking up new ones.
	Requests(ctx context.Context) ([]Request, error)
	Approve(ctx context.Context, id string) (lifecycle.Decision, error)
	Deny(ctx context.Context, id, reason string) (lifecycle.Decision, error)
	Commit(ctx context.Context, id string) (string, error)
	Stop(ctx context.Context, id string, preserve bool) error
	// AttachCommand is the process that takes the terminal to attach to a
	// bottle; the dashboard steps aside while it runs.
	AttachCommand(id string) *exec.Cmd
}

// ReviewSource is what a Source offers for --review bottles: their diff,
// and apply, merge and discard (rm: an unmerged branch stays). The
// dashboard offers those keys only when its Source has it.
type ReviewSource interface {
	Diff(ctx context.Context, id string) (review.Diff, error)
	ApplyChanges(ctx context.Context, id string) (review.Result, error)
	Merge(ctx context.Context, id string) (review.Result, error)
	Discard(ctx context.Context, id string) (lifecycle.RemoveResult, error)
}

// CredentialSource is what a Source offers to revoke a running bottle's
// credential live (the flow of `bot-bottle revoke`); the dashboard offers
// the key only when its Source has it.
type CredentialSource interface {
	RevokeCredential(ctx context.Context, id, name string) error
}

// Request is a pending request with what the operator needs to judge it.
type Request = reqview.Request

// LifecycleSource is the Source over a lifecycle environment: the flows of
// `bot-bottle approve`, `deny`, `commit`, `stop` and `attach`.
type LifecycleSource struct {
	Env *lifecycle.Env
	// DecidedBy names the operator in decisions (lifecycle.Operator()).
	DecidedBy string
	// Exe and ExeArgs start `bot-bottle ... attach <id>`: the bot-bottle
	// binary and the global flags it needs (e.g. --home).
	Exe     string
	ExeArgs []string

	mu    sync.Mutex
	diffs map[string]diffResult // by request id: a pending request's text never changes
}

type diffResult = reqview.Change

// RevokeCredential implements CredentialSource: lifecycle's revoke, which
// the core's audit records.
func (s *LifecycleSource) RevokeCredential(ctx context.Context, id, name string) error {
	return s.Env.RevokeCredential(ctx, id, name)
}

// Bottles implements Source.
func (s *LifecycleSource) Bottles(ctx context.Context) ([]lifecycle.Row, []error, error) {
	if dl, ok := ctx.Deadline(); ok {
		return s.Env.ListWithin(ctx, time.Until(dl))
	}
	return s.Env.List(ctx)
}

// Requests implements Source.
func (s *LifecycleSource) Requests(ctx context.Context) ([]Request, error) {
	type result struct {
		rs  []queue.Request
		err error
	}
	ch := make(chan result, 1)
	go func() {
		rs, err := s.Env.Requests(ctx)
		ch <- result{rs, err}
	}()
	var res result
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("read requests: %w", ctx.Err())
	case res = <-ch:
	}
	var out []Request
	for _, r := range res.rs {
		if r.Status != queue.StatusPending {
			continue
		}
		req := Request{Request: r}
		if m, err := s.Env.Store.ReadMetadata(r.Identity); err == nil {
			req.Agent = m.AgentName
		}
		if r.Kind == queue.KindCapability {
			d := s.diff(r)
			req.Diff, req.DiffErr, req.Raises, req.Warnings = d.Diff, d.DiffErr, d.Raises, d.Warnings
		}
		out = append(out, req)
	}
	return out, res.err
}

func (s *LifecycleSource) diff(r queue.Request) diffResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d, ok := s.diffs[r.ID]; ok {
		return d
	}
	d := reqview.Diff(s.Env, r)
	if s.diffs == nil {
		s.diffs = map[string]diffResult{}
	}
	s.diffs[r.ID] = d
	return d
}

// Approve implements Source.
func (s *LifecycleSource) Approve(ctx context.Context, id string) (lifecycle.Decision, error) {
	return s.Env.Approve(ctx, id, s.decidedBy())
}

// Deny implements Source.
func (s *LifecycleSource) Deny(ctx context.Context, id, reason string) (lifecycle.Decision, error) {
	return s.Env.Deny(ctx, id, reason, s.decidedBy())
}

func (s *LifecycleSource) decidedBy() string {
	if s.DecidedBy != "" {
		return s.DecidedBy
	}
	return lifecycle.Operator()
}

// Commit implements Source.
func (s *LifecycleSource) Commit(ctx context.Context, id string) (string, error) {
	return s.Env.Commit(ctx, id)
}

// Stop implements Source.
func (s *LifecycleSource) Stop(ctx context.Context, id string, preserve bool) error {
	return s.Env.Stop(ctx, id, preserve)
}

// Diff implements ReviewSource: the flow of `bot-bottle diff`.
func (s *LifecycleSource) Diff(ctx context.Context, id string) (review.Diff, error) {
	return s.Env.Diff(ctx, id, true)
}

// ApplyChanges implements ReviewSource: `bot-bottle apply`.
func (s *LifecycleSource) ApplyChanges(ctx context.Context, id string) (review.Result, error) {
	return s.Env.ApplyChanges(ctx, id)
}

// Merge implements ReviewSource: `bot-bottle merge`.
func (s *LifecycleSource) Merge(ctx context.Context, id string) (review.Result, error) {
	return s.Env.Merge(ctx, id)
}

// Discard implements ReviewSource: `bot-bottle rm` (without --force).
func (s *LifecycleSource) Discard(ctx context.Context, id string) (lifecycle.RemoveResult, error) {
	return s.Env.RemoveWith(ctx, id, lifecycle.RemoveOptions{})
}

// AttachCommand implements Source.
func (s *LifecycleSource) AttachCommand(id string) *exec.Cmd {
	args := append(append([]string(nil), s.ExeArgs...), "attach", id)
	return exec.Command(s.Exe, args...)
}
