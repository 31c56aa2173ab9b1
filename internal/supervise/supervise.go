package supervise

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/lifecycle"
	"github.com/bot-bottle/bot-bottle/internal/queue"
	"github.com/bot-bottle/bot-bottle/sdk/render"
)

// Supervisor applies a policy to the pending requests of one bot-bottle home.
type Supervisor struct {
	Env    *lifecycle.Env
	Policy *Policy
	// Out gets one line per decision, and per request left to a human.
	Out io.Writer

	// told remembers the requests already reported as left pending, so a
	// long run does not repeat itself every poll.
	told map[string]bool
}

// Outcome counts what one pass did.
type Outcome struct {
	Approved, Denied int
	// Pending are left for a human: no rule matched, or an "ask" rule did.
	Pending int
	// Lost are requests another decider got to first.
	Lost int
	// Failed are decisions that could not be carried out; each is reported
	// on Out and in Errors.
	Failed int
	Errors []error
}

// Once decides every pending request the policy has a rule for and leaves
// the rest pending.
func (s *Supervisor) Once(ctx context.Context) (Outcome, error) {
	var o Outcome
	reqs, err := s.Env.Requests(ctx)
	if err != nil && len(reqs) == 0 {
		return o, fmt.Errorf("read requests: %w", err)
	}
	if err != nil {
		s.printf("warning: %v", err)
	}
	for _, r := range reqs {
		if ctx.Err() != nil {
			return o, nil
		}
		if r.Status != queue.StatusPending {
			continue
		}
		s.decide(ctx, r, &o)
	}
	return o, nil
}

func (s *Supervisor) decide(ctx context.Context, r queue.Request, o *Outcome) {
	rule, ok := s.Policy.Match(Subject{Request: r, Agent: s.agentOf(r.Identity)})
	if !ok || rule.Action == Ask {
		o.Pending++
		if !s.told[r.ID] {
			why := "no rule matches"
			if ok {
				why = fmt.Sprintf("rule %q says ask", rule.Name)
			}
			s.printf("pending %s (%s %s: %s): %s; left for a human", r.ID, r.Identity, r.Kind, r.Summary(), why)
			s.tell(r.ID)
		}
		return
	}
	by := s.Policy.DecidedBy(rule)
	var d lifecycle.Decision
	var err error
	if rule.Action == Approve {
		d, err = s.Env.Approve(ctx, r.ID, by)
	} else {
		d, err = s.Env.Deny(ctx, r.ID, rule.Reason, by)
	}
	switch {
	case errors.Is(err, queue.ErrAlreadyDecided):
		// Another supervisor or a human decided it first; that decision
		// stands and is theirs.
		o.Lost++
		s.printf("skipped %s: decided elsewhere", r.ID)
		return
	case err != nil && d.Request.ID == "":
		o.Failed++
		o.Errors = append(o.Errors, err)
		s.printf("error: %s by rule %q: %v", r.ID, rule.Name, err)
		return
	}
	if rule.Action == Approve {
		o.Approved++
		s.printf("approved %s (%s %s: %s) by rule %q", r.ID, r.Identity, r.Kind, r.Summary(), rule.Name)
	} else {
		o.Denied++
		s.printf("denied %s (%s %s: %s) by rule %q: %s", r.ID, r.Identity, r.Kind, r.Summary(), rule.Name, rule.Reason)
	}
	for _, n := range d.Notes {
		s.printf("note: %s", n)
	}
	if d.Preserved {
		s.printf("%s stops for the rebuild; bring it back with: %s", r.Identity, lifecycle.ResumeCommand(r.Identity))
	}
	if err != nil {
		// Decided, but carrying it out failed part way (e.g. the stop).
		o.Errors = append(o.Errors, err)
		s.printf("warning: %s: %v", r.ID, err)
	}
}

// Run decides pending requests every interval until ctx ends.
func (s *Supervisor) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := s.Once(ctx); err != nil {
			s.printf("warning: %v", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (s *Supervisor) agentOf(identity string) string {
	m, err := s.Env.Store.ReadMetadata(identity)
	if err != nil {
		return ""
	}
	return m.AgentName
}

func (s *Supervisor) tell(id string) {
	if s.told == nil {
		s.told = map[string]bool{}
	}
	s.told[id] = true
}

func (s *Supervisor) printf(format string, args ...any) {
	if s.Out != nil {
		// Summaries and reasons come from bottles: one escaped line each.
		fmt.Fprintf(s.Out, "bot-bottle supervise: %s\n", render.Bounded(fmt.Sprintf(format, args...), render.MessageMax))
	}
}
