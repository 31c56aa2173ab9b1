package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/bot-bottle/bot-bottle/internal/queue"
	"github.com/bot-bottle/bot-bottle/internal/state"
	"github.com/bot-bottle/bot-bottle/sdk/egressrule"
)

// DenyAll denies every pending request of one bottle with one reason: the
// way out when a bottle floods the operator. It returns what it denied; a
// request another operator decided meanwhile is skipped.
func (e *Env) DenyAll(ctx context.Context, identity, reason, decidedBy string) ([]Decision, error) {
	if err := state.ValidateIdentity(identity); err != nil {
		return nil, err
	}
	if strings.TrimSpace(reason) == "" {
		return nil, errors.New("deny needs --reason: the agent is told why")
	}
	reqs, err := e.Requests(ctx)
	if err != nil {
		return nil, err
	}
	var out []Decision
	for _, r := range reqs {
		if r.Identity != identity || r.Status != queue.StatusPending {
			continue
		}
		if err := ctx.Err(); err != nil {
			return out, err
		}
		d, err := e.Deny(ctx, r.ID, reason, decidedBy)
		if errors.Is(err, queue.ErrAlreadyDecided) {
			continue
		}
		if err != nil {
			return out, err
		}
		out = append(out, d)
	}
	return out, nil
}

// RequestNotes are what the operator should know about a list of
// requests: a bottle at its pending cap (and how to clear it), and the
// warning of each pending egress request that is accepted with one.
func RequestNotes(reqs []queue.Request) []string {
	var notes []string
	counts := queue.PendingCount(reqs)
	seen := map[string]bool{}
	for _, r := range reqs {
		if r.Status != queue.StatusPending {
			continue
		}
		if n := counts[r.Identity]; n >= queue.MaxPending && !seen[r.Identity] {
			seen[r.Identity] = true
			notes = append(notes, fmt.Sprintf("%s has %d pending requests, the most a bottle may have; it is refused more until you decide (all at once: bot-bottle deny --all-from %s --reason TEXT)", r.Identity, n, r.Identity))
		}
		if w := EgressWarning(r); w != "" {
			notes = append(notes, r.ID+": "+w)
		}
	}
	return notes
}

// EgressWarning is the warning an egress request is accepted with, or "".
func EgressWarning(r queue.Request) string {
	if r.Kind != queue.KindEgress {
		return ""
	}
	w, _ := egressrule.CheckRequested(r.Host)
	return w
}

// egressWarnings are the warnings for a bottle's allowlist at launch.
func egressWarnings(rules []string) []string {
	var out []string
	for _, s := range rules {
		if w, _ := egressrule.CheckRequested(s); w != "" {
			out = append(out, w)
		}
	}
	return out
}
