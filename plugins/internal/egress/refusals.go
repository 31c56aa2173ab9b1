package egress

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/bot-bottle/bot-bottle/sdk/egressrule"
)

// The proxy keeps each bottle's recent refusals in memory (the shape of the
// answer is egressrule.Refusals), keyed by the identity the proxy serves the
// connection for; a bottle sees its own refusals and nothing else: no rule,
// no other bottle's attempts.

// RefusalsPath is where a bottle reads them (egressrule.RefusalsPath).
const RefusalsPath = egressrule.RefusalsPath

// MaxRefusals bounds the refusals kept per bottle. A repeated refusal (same
// host, port and reason) is one entry with a count, so a retry loop does
// not push the others out.
const MaxRefusals = 32

// Refusal and Refusals are the answer's wire types.
type (
	Refusal  = egressrule.Refusal
	Refusals = egressrule.Refusals
)

// refusalLog is the per-bottle lists. Safe for concurrent use.
type refusalLog struct {
	mu  sync.Mutex
	now func() time.Time
	by  map[string][]Refusal
}

func newRefusalLog() *refusalLog {
	return &refusalLog{now: time.Now, by: map[string][]Refusal{}}
}

// add notes a refusal for identity.
func (l *refusalLog) add(identity string, r Refusal) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now().UTC().Format(time.RFC3339)
	r.Time, r.FirstTime, r.Count = now, now, 1
	list := l.by[identity]
	for i, old := range list {
		if old.Host == r.Host && old.Port == r.Port && old.Reason == r.Reason && old.Method == r.Method && old.Path == r.Path {
			r.FirstTime, r.Count = old.FirstTime, old.Count+1
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) >= MaxRefusals {
		list = append(list[:0], list[len(list)-MaxRefusals+1:]...)
	}
	l.by[identity] = append(list, r)
}

// list returns a copy of identity's refusals, oldest first.
func (l *refusalLog) list(identity string) []Refusal {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Refusal{}, l.by[identity]...)
}

// allowedNow drops identity's refusals for want of a rule that rs now has
// (an approval applied live): the list says what is still refused.
func (l *refusalLog) allowedNow(identity string, rs *egressrule.Rules) {
	l.mu.Lock()
	defer l.mu.Unlock()
	list := l.by[identity][:0]
	for _, r := range l.by[identity] {
		if _, ok := rs.Match(r.Host, r.Port); ok && r.Reason == reasonNotAllowed {
			continue
		}
		if r.Reason == egressrule.ReasonNoRequest && rs.Request(r.Host, r.Port, r.Method, r.Path).Allowed {
			continue
		}
		list = append(list, r)
	}
	l.by[identity] = list
}

// forget drops identity's list (its bottle is gone).
func (l *refusalLog) forget(identity string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.by, identity)
}

// noteRefusal is the hook where the proxy records a refused attempt.
func (p *Proxy) noteRefusal(identity string, t target, method string, d decision) {
	r := Refusal{Host: t.host(), Port: int(t.port), Method: method, Path: d.path, Status: d.status, Reason: d.reason, Message: d.message}
	if d.rule == "" && d.reason == reasonNotAllowed {
		r.Ask = egressrule.AskCommand(t.String()) + " --reason WHY"
	}
	if d.ask != "" {
		r.Ask = d.ask
	}
	p.refusals.add(identity, r)
}

// RecentRefusals returns identity's recent refusals, oldest first.
func (p *Proxy) RecentRefusals(identity string) []Refusal { return p.refusals.list(identity) }

// serveRefusals answers a GET of RefusalsPath sent to the proxy itself
// with identity's refusals. It reports false for any other request.
func (p *Proxy) serveRefusals(w http.ResponseWriter, r *http.Request, identity string) bool {
	if r.URL.IsAbs() || r.URL.Path != RefusalsPath || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		return false
	}
	b, err := json.Marshal(Refusals{Identity: identity, Refusals: p.refusals.list(identity)})
	if err != nil {
		p.reply(w, http.StatusInternalServerError, "egress proxy: cannot encode the refusals", false)
		return true
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(append(b, '\n'))
	}
	return true
}

// reasonNotAllowed is decide's reason for a host no rule names.
const reasonNotAllowed = "not in the allowlist"
