package egress

import (
	"fmt"
	"net/http"
	"sync"

	"golang.org/x/time/rate"
)

// Bounds on what one bottle can make its proxy do. A refused attempt costs
// the bottle nothing, so without a bound one keep-alive connection fills
// the operator's disk with refusals, and a wildcard rule turns the proxy's
// resolver into a channel out (data in the names it looks up).
const (
	// WildcardLookupRate and WildcardLookupBurst bound lookups of names
	// allowed only by a wildcard rule, per second.
	WildcardLookupRate  = 5
	WildcardLookupBurst = 50
	// RefusedAuditRate and RefusedAuditBurst bound the refusals written to
	// the audit per second; the rest are counted.
	RefusedAuditRate  = 10
	RefusedAuditBurst = 100
	// RefusedAuditBytes bounds the refusals one proxy run writes at all;
	// after that they are only counted. Allowed connections are always
	// written (one that cannot be is refused).
	RefusedAuditBytes = 1 << 20
	// MaxLogForRefusals is the size of a bottle's whole event log (which
	// outlives each run of the proxy, and the bottle) past which refusals
	// are only counted.
	MaxLogForRefusals = 32 << 20
)

// limits is one proxy's share of those bounds.
type limits struct {
	wild  *rate.Limiter
	audit *rate.Limiter

	mu           sync.Mutex
	refusedBytes int64
	logBytes     int64 // the event log's size, as far as this proxy knows
	dropped      int64 // refusals not written since the last report
	capped       bool  // RefusedAuditBytes reached, and said so
}

func newLimits(logSize int64) *limits {
	return &limits{
		logBytes: logSize,
		wild:     rate.NewLimiter(WildcardLookupRate, WildcardLookupBurst),
		audit:    rate.NewLimiter(RefusedAuditRate, RefusedAuditBurst),
	}
}

// limitWildcard lets a lookup under a wildcard rule go ahead, or returns
// the refusal when the bottle is over the rate. Every lookup, allowed or
// not, is in the audit with its rule.
func (p *Proxy) limitWildcard(t target, d decision) (decision, bool) {
	if len(d.rule) < 2 || d.rule[:2] != "*." || p.limits.wild.Allow() {
		return d, true
	}
	d.status = http.StatusTooManyRequests
	d.reason = fmt.Sprintf("wildcard lookups over the limit (%d/s)", WildcardLookupRate)
	d.message = fmt.Sprintf("egress to %s refused: names under the wildcard %s are looked up at most %d times a second; try again shortly", t, d.rule, WildcardLookupRate)
	return d, false
}

// refuseOwnHost turns an allowed decision whose addresses include the
// proxy's own host into a refusal: no rule makes the proxy talk to itself.
func (p *Proxy) refuseOwnHost(t target, d decision) decision {
	for _, ap := range d.addrs {
		if why, own := p.forbidden(ap.Addr()); own {
			return decision{
				status:  http.StatusForbidden,
				rule:    d.rule,
				reason:  fmt.Sprintf("%s is %s", ap.Addr(), why),
				message: fmt.Sprintf("egress to %s refused: %s is %s, which no rule can allow", t, ap, why),
			}
		}
	}
	return d
}

// admitRefused reports whether a refusal may be written, counting it when
// not. The first time the byte bound is reached it says so in the audit.
func (l *limits) admitRefused(identity string, events *EventLog) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.refusedBytes >= RefusedAuditBytes || l.logBytes >= MaxLogForRefusals {
		l.dropped++
		if !l.capped {
			l.capped = true
			_ = events.Write(Event{Identity: identity, Reason: fmt.Sprintf(
				"audit of refused attempts stopped (%d bytes of them in this run of the proxy, or a log of %d bytes); the rest are only counted", RefusedAuditBytes, MaxLogForRefusals)})
		}
		return false
	}
	if !l.audit.Allow() {
		l.dropped++
		return false
	}
	return true
}

// write writes ev, after a report of the refusals dropped since the last
// one.
func (l *limits) write(identity string, events *EventLog, ev Event) error {
	l.mu.Lock()
	n := l.dropped
	l.dropped = 0
	// Close enough to the encoded size, and cheaper than encoding twice.
	size := int64(160 + len(ev.Host) + len(ev.Reason) + len(ev.Rule) + len(ev.Method) + len(ev.Identity) +
		len(ev.Path) + len(ev.Kind) + len(ev.Credential))
	l.logBytes += size
	if !ev.Allowed {
		l.refusedBytes += size
	}
	l.mu.Unlock()
	if n > 0 {
		_ = events.Write(droppedEvent(identity, n))
	}
	return events.Write(ev)
}

// flush reports the refusals dropped since the last report, at the end.
func (l *limits) flush(identity string, events *EventLog) {
	l.mu.Lock()
	n := l.dropped
	l.dropped = 0
	l.mu.Unlock()
	if n > 0 {
		_ = events.Write(droppedEvent(identity, n))
	}
}

// DroppedReason starts the Reason of an event that counts refusals the
// audit bound kept out of the log.
const DroppedReason = "refused attempts not recorded (over the audit bound): "

func droppedEvent(identity string, n int64) Event {
	return Event{Identity: identity, Reason: fmt.Sprintf("%s%d", DroppedReason, n)}
}
