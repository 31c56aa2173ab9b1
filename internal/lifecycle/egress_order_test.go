package lifecycle_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/lifecycle"
	"github.com/bot-bottle/bot-bottle/internal/queue"
	"github.com/bot-bottle/bot-bottle/internal/testbackend"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// liveEgress is the test backend with a running allowlist (CapLiveEgress):
// it keeps every list UpdateEgress pushed and, with gate set, holds each
// UpdateEgress until gate is closed, after saying on entered that it began;
// while fail is set, UpdateEgress fails.
type liveEgress struct {
	sdk.Backend
	entered chan struct{}
	gate    chan struct{}
	onStop  func(id string)
	fail    atomic.Bool
	mu      sync.Mutex
	pushed  [][]string
}

func (b *liveEgress) Stop(ctx context.Context, req sdk.StopRequest) ([]string, error) {
	if b.onStop != nil {
		b.onStop(req.Identity)
	}
	return b.Backend.Stop(ctx, req)
}

func (b *liveEgress) Info(ctx context.Context) (sdk.Info, error) {
	i, err := b.Backend.Info(ctx)
	i.Capabilities = append(i.Capabilities, sdk.CapLiveEgress)
	return i, err
}

func (b *liveEgress) UpdateEgress(ctx context.Context, _ sdk.Handle, egress []string) error {
	if b.gate != nil {
		b.entered <- struct{}{}
		select {
		case <-b.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if b.fail.Load() {
		return errors.New("the proxy is down")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pushed = append(b.pushed, slices.Clone(egress))
	return nil
}

// SyncQueue is the wrapped backend's: embedding sdk.Backend promotes only
// its required methods.
func (b *liveEgress) SyncQueue(ctx context.Context, h sdk.Handle, dir string) error {
	s, ok := b.Backend.(sdk.QueueSyncer)
	if !ok {
		return sdk.ErrNotSupported
	}
	return s.SyncQueue(ctx, h, dir)
}

func (b *liveEgress) last() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.pushed) == 0 {
		return nil
	}
	return b.pushed[len(b.pushed)-1]
}

func (b *liveEgress) pushes() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pushed)
}

func liveRig(t *testing.T, home string, o testbackend.Options, le *liveEgress) *rig {
	r := rigAt(t, home)
	le.Backend = testbackend.New(filepath.Join(home, "tproot"), o)
	r.backend = le
	r.env.Backends = inProcess{t, le}
	return r
}

// secondEnv is another core process on the rig's home: its own Env over
// the same backend.
func (r *rig) secondEnv() (*lifecycle.Env, *bytes.Buffer) {
	msgs := &bytes.Buffer{}
	e := &lifecycle.Env{Home: r.env.Home, Store: r.env.Store, Plugins: r.env.Plugins, Backends: r.env.Backends,
		Out: &bytes.Buffer{}, Err: msgs, Getenv: func(string) string { return "" }}
	return e, msgs
}

func byToken(t *testing.T, reqs []queue.Request, token string) queue.Request {
	t.Helper()
	for _, q := range reqs {
		if q.ClientToken == token {
			return q
		}
	}
	t.Fatalf("no request of token %s in %+v", token, reqs)
	return queue.Request{}
}

// The agent hears "approved" of an egress request only once the running
// allowlist has the host: while the approver's UpdateEgress is under way,
// another process that decides another request of the same bottle and syncs
// its queue delivers nothing but "pending" for it, neither into the
// bottle's own queue (CapQueueSync, as on Kubernetes) nor into the host's
// outbox (what a Docker bottle has mounted).
func TestEgressApprovalIsHeardOnlyOnceInForce(t *testing.T) {
	le := &liveEgress{entered: make(chan struct{}, 1), gate: make(chan struct{})}
	r := liveRig(t, t.TempDir(), testbackend.Options{QueueSync: true}, le)
	id := r.detached()
	own := filepath.Join(r.env.Home, "tproot", "remote", id)
	hostQueue := filepath.Join(r.env.Home, "queue", id)
	const tokA, tokB = "eeeeeeeeeeeeeeee1", "eeeeeeeeeeeeeeee2"
	file(t, own, tokA, queue.Submission{Kind: queue.KindEgress, Host: "a.example.test", Reason: "a"})
	file(t, own, tokB, queue.Submission{Kind: queue.KindEgress, Host: "b.example.test", Reason: "b"})
	ctx := context.Background()
	reqs, err := r.env.Requests(ctx)
	if err != nil || len(reqs) != 2 {
		t.Fatalf("requests: %+v, %v\n%s", reqs, err, r.msgs)
	}
	a, b := byToken(t, reqs, tokA), byToken(t, reqs, tokB)

	done := make(chan error, 1)
	go func() {
		_, err := r.env.Approve(ctx, a.ID, "user:one")
		done <- err
	}()
	select {
	case <-le.entered:
	case err := <-done:
		t.Fatalf("approve returned before pushing the allowlist: %v\n%s", err, r.msgs)
	case <-time.After(30 * time.Second):
		t.Fatal("approve never pushed the allowlist")
	}
	notYet := func(when string) {
		t.Helper()
		for _, dir := range []string{own, hostQueue} {
			if got := receipt(t, dir, tokA); got.Status != queue.StatusPending {
				t.Errorf("%s, the receipt in %s says %s before the allowlist has the host", when, dir, got.Status)
			}
		}
	}
	notYet("right after the decision")

	other, msgs := r.secondEnv()
	if _, err := other.Deny(ctx, b.ID, "not that one", "user:two"); err != nil {
		t.Fatalf("the other process's denial: %v\n%s", err, msgs)
	}
	if _, err := other.Requests(ctx); err != nil {
		t.Fatal(err)
	}
	if got := receipt(t, own, tokB); got.Status != queue.StatusDenied {
		t.Fatalf("the other process did not deliver its own decision: %+v\n%s", got, msgs)
	}
	notYet("after another process decided and synced")

	close(le.gate)
	if err := <-done; err != nil {
		t.Fatalf("approve: %v\n%s", err, r.msgs)
	}
	if got := le.last(); !slices.Contains(got, "a.example.test") {
		t.Fatalf("the running allowlist is %v", got)
	}
	for _, dir := range []string{own, hostQueue} {
		if got := receipt(t, dir, tokA); got.Status != queue.StatusApproved {
			t.Errorf("after the approval was carried out, the receipt in %s says %s", dir, got.Status)
		}
	}
}

// A capability approval stops the bottle; it waits for an egress approval
// of the bottle under way, so that the egress answer reaches the agent
// before its bottle goes.
func TestCapabilityApprovalWaitsForTheEgressApprovalUnderWay(t *testing.T) {
	le := &liveEgress{entered: make(chan struct{}, 1), gate: make(chan struct{})}
	r := liveRig(t, t.TempDir(), testbackend.Options{QueueSync: true}, le)
	id := r.detached()
	own := filepath.Join(r.env.Home, "tproot", "remote", id)
	const tokE, tokC = "abababababababab1", "abababababababab2"
	var atStop atomic.Value
	stopped := make(chan struct{}, 1)
	le.onStop = func(string) {
		if data, err := os.ReadFile(filepath.Join(own, "outbox", tokE+".json")); err == nil {
			atStop.Store(string(data))
		}
		select {
		case stopped <- struct{}{}:
		default:
		}
	}
	file(t, own, tokE, queue.Submission{Kind: queue.KindEgress, Host: "e.example.test", Reason: "e"})
	file(t, own, tokC, queue.Submission{Kind: queue.KindCapability, Run: "true", Reason: "c"})
	ctx := context.Background()
	reqs, err := r.env.Requests(ctx)
	if err != nil || len(reqs) != 2 {
		t.Fatalf("requests: %+v, %v\n%s", reqs, err, r.msgs)
	}
	egressDone := make(chan error, 1)
	go func() {
		_, err := r.env.Approve(ctx, byToken(t, reqs, tokE).ID, "user:one")
		egressDone <- err
	}()
	select {
	case <-le.entered:
	case err := <-egressDone:
		t.Fatalf("approve returned before pushing the allowlist: %v\n%s", err, r.msgs)
	case <-time.After(30 * time.Second):
		t.Fatal("approve never pushed the allowlist")
	}
	other, msgs := r.secondEnv()
	capDone := make(chan error, 1)
	go func() {
		_, err := other.Approve(ctx, byToken(t, reqs, tokC).ID, "user:two")
		capDone <- err
	}()
	// Longer than the second the approval gives the agent before the stop.
	select {
	case err := <-capDone:
		t.Fatalf("the capability approval did not wait for the egress one: %v\n%s", err, msgs)
	case <-stopped:
		t.Fatalf("the capability approval stopped the bottle during the egress one")
	case <-time.After(2 * time.Second):
	}
	close(le.gate)
	if err := <-egressDone; err != nil {
		t.Fatalf("egress approval: %v\n%s", err, r.msgs)
	}
	if err := <-capDone; err != nil {
		t.Fatalf("capability approval: %v\n%s", err, msgs)
	}
	seen, _ := atStop.Load().(string)
	if !strings.Contains(seen, `"status":"approved"`) {
		t.Fatalf("when the bottle stopped, its egress receipt read %q", seen)
	}
}

// A decider killed between the steps of an egress approval leaves it
// decided (nobody else may decide it) and pending to the agent; the next
// reader carries it out (metadata, the running allowlist, the audit record
// once) and only then tells the agent.
func TestEgressApprovalKilledBetweenStepsIsFinishedByTheNextReader(t *testing.T) {
	for _, point := range []string{lifecycle.HaltEgressDecided, lifecycle.HaltEgressCarriedOut} {
		t.Run(point, func(t *testing.T) {
			le := &liveEgress{}
			r := liveRig(t, t.TempDir(), testbackend.Options{}, le)
			id := r.detached()
			hostQueue := filepath.Join(r.env.Home, "queue", id)
			const token = "ffffffffffffffff1"
			reqID := r.collectOne(t, hostQueue, token, queue.Submission{Kind: queue.KindEgress, Host: "k.example.test", Reason: "k"})
			ctx := context.Background()

			approveKilledAt(t, r.env.Home, reqID, point)

			got, err := queue.Open(r.env.Home).Get(reqID)
			if err != nil || got.Status != queue.StatusApproved || !got.Held {
				t.Fatalf("the request after the kill: %+v, %v", got, err)
			}
			if rc := receipt(t, hostQueue, token); rc.Status != queue.StatusPending {
				t.Fatalf("after the kill at %s the agent reads %s", point, rc.Status)
			}
			// The kill came where it was meant to: before or after the widening.
			meta, err := r.env.Store.ReadMetadata(id)
			if widened := slices.Contains(meta.Egress, "k.example.test"); err != nil || widened != (point == lifecycle.HaltEgressCarriedOut) {
				t.Fatalf("metadata's allowlist after the kill at %s: %v, %v", point, meta.Egress, err)
			}

			if _, err := r.env.Requests(ctx); err != nil {
				t.Fatal(err)
			}
			if rc := receipt(t, hostQueue, token); rc.Status != queue.StatusApproved {
				t.Fatalf("the next reader left the agent reading %s\n%s", rc.Status, r.msgs)
			}
			if got, _ := queue.Open(r.env.Home).Get(reqID); got.Held {
				t.Errorf("still held after the next reader: %+v", got)
			}
			meta, err = r.env.Store.ReadMetadata(id)
			if err != nil || !slices.Contains(meta.Egress, "k.example.test") {
				t.Errorf("metadata's allowlist: %v, %v", meta.Egress, err)
			}
			if got := le.last(); !slices.Contains(got, "k.example.test") {
				t.Errorf("the running allowlist the next reader pushed: %v", got)
			}
			if n := decisions(t, r, id, reqID, "user:child"); n != 1 {
				t.Errorf("%d audited decisions of %s, want 1", n, reqID)
			}
			// A second reader finds nothing left to do.
			pushes := le.pushes()
			if _, err := r.env.Requests(ctx); err != nil {
				t.Fatal(err)
			}
			if le.pushes() != pushes {
				t.Errorf("a later reader pushed the allowlist again")
			}
		})
	}
}

// collectOne files one request in a bottle's queue dir and has the flows
// collect it, returning its ID.
func (r *rig) collectOne(t *testing.T, dir, token string, s queue.Submission) string {
	t.Helper()
	file(t, dir, token, s)
	reqs, err := r.env.Requests(context.Background())
	if err != nil || len(reqs) != 1 {
		t.Fatalf("requests: %+v, %v\n%s", reqs, err, r.msgs)
	}
	return reqs[0].ID
}

// heldByDeadDecider files one request and leaves it as a decider killed
// right after deciding it would: approved, held, its apply lock free. It
// collects the request through the queue alone, so that no flow's reader
// finishes it first.
func heldByDeadDecider(t *testing.T, home, id, dir, token string, s queue.Submission) string {
	t.Helper()
	file(t, dir, token, s)
	q := queue.Open(home)
	if _, _, err := q.Ingest(id); err != nil {
		t.Fatal(err)
	}
	reqs, err := q.List()
	if err != nil || len(reqs) != 1 {
		t.Fatalf("requests: %+v, %v", reqs, err)
	}
	if _, err := q.DecideHeld(reqs[0].ID, "user:decider"); err != nil {
		t.Fatal(err)
	}
	return reqs[0].ID
}

// approveKilledAt approves reqID in a child process of this test binary
// (TestEgressApprovalChild) that kills itself at the halt point.
func approveKilledAt(t *testing.T, home, reqID, point string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestEgressApprovalChild$", "-test.v")
	cmd.Env = append(os.Environ(), childHome+"="+home, childRequest+"="+reqID, lifecycle.EnvTestHalt+"="+point)
	out, err := cmd.CombinedOutput()
	var xe *exec.ExitError
	if !errors.As(err, &xe) || xe.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the approving child was not killed at %s: %v\n%s", point, err, out)
	}
}

const (
	childHome    = "BB_TEST_EGRESS_CHILD_HOME"
	childRequest = "BB_TEST_EGRESS_CHILD_REQUEST"
)

// TestEgressApprovalChild is the approving process of the test above and of
// TestCapabilityApprovalKilledBetweenStepsIsFinishedByTheNextReader, which
// run it with the halt point that kills it.
func TestEgressApprovalChild(t *testing.T) {
	home := os.Getenv(childHome)
	if home == "" {
		t.Skip("run by TestEgressApprovalKilledBetweenStepsIsFinishedByTheNextReader")
	}
	r := liveRig(t, home, testbackend.Options{}, &liveEgress{})
	r.env.Getenv = os.Getenv
	_, err := r.env.Approve(context.Background(), os.Getenv(childRequest), "user:child")
	t.Fatalf("approve was not killed: %v\n%s", err, r.msgs)
}
