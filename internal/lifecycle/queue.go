package lifecycle

import (
	"context"
	"errors"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/audit"
	"github.com/bot-bottle/bot-bottle/internal/config"
	"github.com/bot-bottle/bot-bottle/internal/queue"
	"github.com/bot-bottle/bot-bottle/sdk"
)

func (e *Env) queue() *queue.Queue { return queue.Open(e.Home) }

// queueDir returns the host side of the bottle's request queue, created.
func (e *Env) queueDir(id string) (string, error) { return e.queue().Dir(id) }

// queueSyncTimeout bounds one sync of all bottles' queues: a cluster that
// does not answer delays `requests` by this much, never blocks it.
const queueSyncTimeout = 20 * time.Second

// syncQueues brings in the requests of every running bottle whose backend
// keeps its queue apart from the host (sdk.CapQueueSync) and sends its
// decisions back. A failure is a notice: the host's queue is still right,
// only not complete, and the next sync catches up.
func (e *Env) syncQueues(ctx context.Context) {
	metas, err := e.Store.List()
	if err != nil {
		e.warn("sync queues: %v", err)
		return
	}
	byBackend := map[string][]string{}
	var backends []string
	for _, m := range metas {
		if !m.QueueSync {
			continue
		}
		if _, ok := byBackend[m.Backend]; !ok {
			backends = append(backends, m.Backend)
		}
		byBackend[m.Backend] = append(byBackend[m.Backend], m.Identity)
	}
	if len(backends) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, queueSyncTimeout)
	defer cancel()
	for _, name := range backends {
		e.syncWith(ctx, name, byBackend[name])
	}
}

// syncQueue syncs one bottle's queue, after a decision was written so that
// its agent sees it without waiting for the next reader.
func (e *Env) syncQueue(ctx context.Context, id string) {
	m, err := e.Store.ReadMetadata(id)
	if err != nil || !m.QueueSync {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, queueSyncTimeout)
	defer cancel()
	e.syncWith(ctx, m.Backend, []string{id})
}

func (e *Env) syncWith(ctx context.Context, backend string, ids []string) {
	p, err := e.startPlugin(ctx, backend)
	if err != nil {
		e.warn("sync the queues of %s: %v", strings.Join(ids, ", "), err)
		return
	}
	defer p.Close()
	if !p.Info.Has(sdk.CapQueueSync) {
		return
	}
	for _, id := range ids {
		h, err := e.Store.ReadHandle(id)
		if err != nil || h == nil {
			continue // not running: nothing in it to collect
		}
		dir, err := e.queueDir(id)
		if err != nil {
			e.warn("sync the queue of %s: %v", id, err)
			continue
		}
		if err := p.Backend.SyncQueue(ctx, *h, dir); err != nil {
			if !errors.Is(err, sdk.ErrNotFound) {
				e.warn("sync the queue of %s: %v", id, p.Wrap(err))
			}
			continue
		}
		// Ingesting writes receipts (the helper waits for one to know that
		// the host has its request): they go back in the same sync.
		reqs, refused, err := e.queue().Ingest(id)
		if err != nil {
			e.warn("read requests of %s: %v", id, err)
		}
		e.auditIngested(reqs, refused)
		if len(reqs)+len(refused) == 0 {
			continue
		}
		if err := p.Backend.SyncQueue(ctx, *h, dir); err != nil {
			e.warn("sync the queue of %s: %v", id, p.Wrap(err))
		}
	}
}

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
// agent's passed-through variables, as the flow's environment has them.
func (e *Env) auditLog(agent *config.Agent) *audit.Log {
	l := audit.Open(e.Home)
	if agent == nil {
		return l
	}
	var secrets []string
	for _, name := range agent.Env {
		if v := e.getenv(name); v != "" {
			secrets = append(secrets, v)
		}
	}
	secrets = append(secrets, e.credentialSecrets(context.Background(), agent)...)
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

// rebuildHeld reports whether a capability approval of the bottle is held
// (queue.DecideHeld: decided, and not yet carried out), or released with
// its stop to come. Records that cannot be read count as one.
func (e *Env) rebuildHeld(id string) bool {
	held, err := e.queue().Held(id)
	if err != nil {
		return true
	}
	for _, r := range held {
		if r.Kind == queue.KindCapability {
			return true
		}
	}
	return false
}
