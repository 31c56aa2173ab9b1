package lifecycle_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/bot-bottle/bot-bottle/internal/audit"
	"github.com/bot-bottle/bot-bottle/internal/lifecycle"
	"github.com/bot-bottle/bot-bottle/internal/pluginhost"
	"github.com/bot-bottle/bot-bottle/internal/queue"
	"github.com/bot-bottle/bot-bottle/internal/testbackend"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// syncBackend is the test backend with a queue of its own per bottle
// (sdk.CapQueueSync), whose SyncQueue can be made to fail as an unreachable
// cluster does, and which counts its calls.
type syncBackend struct {
	sdk.Backend
	fail  atomic.Bool
	calls atomic.Int32
}

func (b *syncBackend) SyncQueue(ctx context.Context, h sdk.Handle, dir string) error {
	b.calls.Add(1)
	if b.fail.Load() {
		return errors.New("cluster unreachable")
	}
	return b.Backend.(sdk.QueueSyncer).SyncQueue(ctx, h, dir)
}

func syncRig(t *testing.T) (*rig, *syncBackend) {
	r := newRig(t)
	sb := &syncBackend{Backend: testbackend.New(filepath.Join(r.env.Home, "tproot"), testbackend.Options{QueueSync: true})}
	r.backend = sb
	r.env.Backends = inProcess{t, sb}
	return r, sb
}

// file writes a request into the bottle's own inbox as its helper does.
func file(t *testing.T, dir, token string, s queue.Submission) {
	t.Helper()
	data, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "inbox", token+".json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func receipt(t *testing.T, dir, token string) queue.Request {
	t.Helper()
	var r queue.Request
	data, err := os.ReadFile(filepath.Join(dir, "outbox", token+".json"))
	if err != nil {
		t.Fatalf("no receipt in the bottle: %v", err)
	}
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// The core brings a bottle's requests in through SyncQueue before it reads
// the queue, and sends a decision back right after writing it.
func TestQueueSyncBringsRequestsAndSendsDecisions(t *testing.T) {
	r, sb := syncRig(t)
	id := r.detached()
	meta, err := r.env.Store.ReadMetadata(id)
	if err != nil || !meta.QueueSync {
		t.Fatalf("metadata of a bottle on a queue-sync backend: %+v, %v", meta, err)
	}
	own := filepath.Join(r.env.Home, "tproot", "remote", id)
	const token = "aaaaaaaaaaaaaaaa1"
	file(t, own, token, queue.Submission{Kind: queue.KindEgress, Host: "docs.example.test", Reason: "docs"})

	ctx := context.Background()
	reqs, err := r.env.Requests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(reqs) != 1 || reqs[0].ClientToken != token || reqs[0].Status != queue.StatusPending {
		t.Fatalf("requests after a sync: %+v\n%s", reqs, r.msgs)
	}
	if got := receipt(t, own, token); got.Status != queue.StatusPending || got.ID != reqs[0].ID {
		t.Fatalf("the bottle's receipt before the decision: %+v", got)
	}
	before := sb.calls.Load()
	if _, err := r.env.Deny(ctx, reqs[0].ID, "not today", "user:test"); err != nil {
		t.Fatal(err)
	}
	if sb.calls.Load()-before < 2 {
		t.Errorf("deny synced %d times; want before reading the queue and after deciding", sb.calls.Load()-before)
	}
	if got := receipt(t, own, token); got.Status != queue.StatusDenied || got.DecisionReason != "not today" {
		t.Fatalf("the bottle's receipt after the denial: %+v", got)
	}
}

// A sync that fails is a notice: what the host already has is still listed
// and decided, and the next sync catches up.
func TestQueueSyncFailureIsANotice(t *testing.T) {
	r, sb := syncRig(t)
	id := r.detached()
	own := filepath.Join(r.env.Home, "tproot", "remote", id)
	ctx := context.Background()
	file(t, own, "bbbbbbbbbbbbbbbb1", queue.Submission{Kind: queue.KindEgress, Host: "a.example.test", Reason: "a"})
	if reqs, err := r.env.Requests(ctx); err != nil || len(reqs) != 1 {
		t.Fatalf("first sync: %v, %v", reqs, err)
	}

	sb.fail.Store(true)
	file(t, own, "bbbbbbbbbbbbbbbb2", queue.Submission{Kind: queue.KindEgress, Host: "b.example.test", Reason: "b"})
	reqs, err := r.env.Requests(ctx)
	if err != nil || len(reqs) != 1 {
		t.Fatalf("requests while the sync fails: %v, %v", reqs, err)
	}
	if want := "sync the queue of " + id; !strings.Contains(r.msgs.String(), want) || !strings.Contains(r.msgs.String(), "cluster unreachable") {
		t.Fatalf("no notice %q with the cause in:\n%s", want, r.msgs)
	}
	if _, err := r.env.Deny(ctx, reqs[0].ID, "no", "user:test"); err != nil {
		t.Fatalf("a decision while the sync fails: %v", err)
	}

	sb.fail.Store(false)
	reqs, err = r.env.Requests(ctx)
	if err != nil || len(reqs) != 2 {
		t.Fatalf("requests once the sync works again: %v, %v", reqs, err)
	}
	if got := receipt(t, own, "bbbbbbbbbbbbbbbb1"); got.Status != queue.StatusDenied {
		t.Errorf("the decision made while the sync failed reached the bottle as %s", got.Status)
	}
}

// A home whose bottles do not sync starts no plugin to read its queue.
func TestNoQueueSyncStartsNoPlugin(t *testing.T) {
	r := newRig(t)
	id := r.detached()
	starts := &countingBackends{Backends: r.env.Backends}
	r.env.Backends = starts
	if _, err := r.env.Requests(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := starts.n.Load(); n != 0 {
		t.Errorf("reading the queue of %s started %d plugins; want none", id, n)
	}
}

type countingBackends struct {
	lifecycle.Backends
	n atomic.Int32
}

func (c *countingBackends) Start(ctx context.Context, name string) (*pluginhost.Plugin, error) {
	c.n.Add(1)
	return c.Backends.Start(ctx, name)
}

// While the operator is attached, the session syncs the bottle's queue: the
// agent's request reaches the host and its receipt comes back to the agent.
func TestAttachedSessionSyncsTheQueue(t *testing.T) {
	r, _ := syncRig(t)
	const script = `printf '{"kind":"egress","host":"docs.example.test","reason":"docs"}' > "$BOT_BOTTLE_QUEUE/inbox/cccccccccccccccc1.json"
for i in $(seq 100); do [ -s "$BOT_BOTTLE_QUEUE/outbox/cccccccccccccccc1.json" ] && exit 0; sleep 0.1; done
exit 3`
	_, code := r.start("sh", "-c", script)
	if code != 0 {
		t.Fatalf("the agent saw no receipt in its own outbox (exit %d)\n%s", code, r.msgs)
	}
	m := regexp.MustCompile(`starting (tsh-[a-z0-9]{5})`).FindStringSubmatch(r.msgs.String())
	if m == nil {
		t.Fatalf("no identity in:\n%s", r.msgs)
	}
	id := m[1]
	// The disposable bottle is gone with its queue; its audit log says.
	evs, err := r.env.Audit(id)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ev := range evs {
		if ev.Kind == audit.KindRequest && ev.Fields["host"] == "docs.example.test" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d audited requests for docs.example.test, want 1: %+v", n, evs)
	}
}

// A stop brings in what waits in the bottle's own queue before the bottle
// (and that queue) goes; the preserved bottle's resume finds it on the host.
func TestStopBringsTheQueueIn(t *testing.T) {
	r, _ := syncRig(t)
	id := r.detached()
	own := filepath.Join(r.env.Home, "tproot", "remote", id)
	file(t, own, "dddddddddddddddd1", queue.Submission{Kind: queue.KindEgress, Host: "d.example.test", Reason: "d"})
	ctx := context.Background()
	if err := r.env.Stop(ctx, id, true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(own); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the bottle's own queue outlived its stop: %v", err)
	}
	reqs, err := r.env.Requests(ctx)
	if err != nil || len(reqs) != 1 || reqs[0].Host != "d.example.test" {
		t.Fatalf("requests after the stop: %+v, %v\n%s", reqs, err, r.msgs)
	}
}
