package lifecycle

import (
	"context"
	"os"
	"os/user"

	"github.com/bot-bottle/bot-bottle/internal/audit"
	"github.com/bot-bottle/bot-bottle/internal/config"
	"github.com/bot-bottle/bot-bottle/internal/queue"
)

func (e *Env) queue() *queue.Queue { return queue.Open(e.Home) }

// queueDir returns the host side of the bottle's request queue, created.
func (e *Env) queueDir(id string) (string, error) { return e.queue().Dir(id) }

// removeQueue drops the queue of a bottle that is being cleaned up.
func (e *Env) removeQueue(id string) {
	if err := e.queue().Remove(id); err != nil {
		e.warn("remove queue of %s: %v", id, err)
	}
}

// isDetached reports whether the bottle runs detached on purpose.
func (e *Env) isDetached(id string) bool {
	d, err := e.Store.IsDetached(id)
	return d || err != nil
}

// identityTaken keeps a new identity from reusing one whose audit log
// survived an earlier cleanup.
func (e *Env) identityTaken(id string) bool {
	p, err := audit.Open(e.Home).Path(id)
	if err != nil {
		return true
	}
	_, err = os.Lstat(p)
	return err == nil
}

// auditLog is the audit log that refuses to record the values of the
// agent's passed-through variables, as this host has them.
func (e *Env) auditLog(agent *config.Agent) *audit.Log {
	l := audit.Open(e.Home)
	if agent == nil {
		return l
	}
	var secrets []string
	for _, name := range agent.Env {
		if v := os.Getenv(name); v != "" {
			secrets = append(secrets, v)
		}
	}
	secrets = append(secrets, credentialSecrets(context.Background(), agent)...)
	return l.WithSecrets(secrets...)
}

// record appends one audit event; a failure is worth a warning, never the
// loss of the bottle.
func (e *Env) record(agent *config.Agent, ev audit.Event) {
	if ev.Time.IsZero() {
		ev.Time = e.now().UTC()
	}
	if ev.Actor == "" {
		ev.Actor = Operator()
	}
	if err := e.auditLog(agent).Append(ev); err != nil {
		e.warn("audit %s: %v", ev.Identity, err)
	}
}

// Operator names the human at this terminal, as decisions record it.
func Operator() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return "user:" + u.Username
	}
	if n := os.Getenv("USER"); n != "" {
		return "user:" + n
	}
	return "user:unknown"
}
