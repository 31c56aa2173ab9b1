package lifecycle_test

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/lifecycle"
	"github.com/bot-bottle/bot-bottle/internal/pluginhost"
	"github.com/bot-bottle/bot-bottle/internal/queue"
	"github.com/bot-bottle/bot-bottle/internal/testbackend"
)

// countedStarts counts the plugins started through it.
type countedStarts struct {
	lifecycle.Backends
	n atomic.Int32
}

func (c *countedStarts) Start(ctx context.Context, name string) (*pluginhost.Plugin, error) {
	c.n.Add(1)
	return c.Backends.Start(ctx, name)
}

// fakeClock is an Env's Now that moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// A held egress approval whose running allowlist cannot be widened is not
// tried again by every read of the same Env (the dashboard reads every
// second): one plugin start and one warning for many quick readers, another
// try only once a delay has passed, the delay doubling, and the release once
// the backend takes the list.
func TestAFailingHeldApprovalIsRetriedAfterABackoff(t *testing.T) {
	le := &liveEgress{}
	r := liveRig(t, t.TempDir(), testbackend.Options{}, le)
	id := r.detached()
	hostQueue := filepath.Join(r.env.Home, "queue", id)
	const token, host = "a1a1a1a1a1a1a1a11", "r.example.test"
	// What a decider killed before widening leaves: held, its lock free.
	reqID := heldByDeadDecider(t, r.env.Home, id, hostQueue, token, queue.Submission{Kind: queue.KindEgress, Host: host, Reason: "r"})
	starts := &countedStarts{Backends: r.env.Backends}
	r.env.Backends = starts
	clock := &fakeClock{now: time.Now()}
	r.env.Now = clock.Now
	le.fail.Store(true)
	ctx := context.Background()
	read := func() {
		t.Helper()
		if _, err := r.env.Requests(ctx); err != nil {
			t.Fatal(err)
		}
	}
	tries := func(want int32, when string) {
		t.Helper()
		if n := starts.n.Load(); n != want {
			t.Fatalf("%s: %d plugin starts, want %d\n%s", when, n, want, r.msgs)
		}
		if n := int32(strings.Count(r.msgs.String(), "finish the approval "+reqID)); n != want {
			t.Fatalf("%s: %d warnings, want %d\n%s", when, n, want, r.msgs)
		}
	}

	for range 5 {
		read()
	}
	tries(1, "five quick readers")
	clock.add(2 * time.Second)
	read()
	read()
	tries(2, "two readers after the first delay")
	// The delay doubled: 4 s.
	clock.add(3 * time.Second)
	read()
	tries(2, "a reader 3 s after the second failure")
	clock.add(time.Second)
	read()
	tries(3, "a reader 4 s after the second failure")
	if rc := receipt(t, hostQueue, token); rc.Status != queue.StatusPending {
		t.Fatalf("the agent reads %s while the allowlist cannot be widened", rc.Status)
	}

	le.fail.Store(false)
	clock.add(8 * time.Second)
	read()
	if rc := receipt(t, hostQueue, token); rc.Status != queue.StatusApproved {
		t.Fatalf("once the backend takes the list, the agent reads %s\n%s", rc.Status, r.msgs)
	}
	if got, _ := queue.Open(r.env.Home).Get(reqID); got.Held {
		t.Fatalf("still held: %+v", got)
	}
	if got := le.last(); !slices.Contains(got, host) {
		t.Fatalf("the running allowlist is %v", got)
	}
	n := starts.n.Load()
	read()
	if starts.n.Load() != n {
		t.Fatalf("a reader after the release started a plugin")
	}
}

// The attached session's own request watch finishes an approval of its
// bottle that a killed decider left, with no other reader: the agent hears
// an egress approval with the allowlist widened, and a capability approval
// ends the session for the rebuild, the bottle kept with the change.
func TestAttachedSessionFinishesAKilledApproval(t *testing.T) {
	for _, kind := range []queue.Kind{queue.KindEgress, queue.KindCapability} {
		t.Run(string(kind), func(t *testing.T) {
			le := &liveEgress{}
			r := liveRig(t, t.TempDir(), testbackend.Options{}, le)
			id, end, done := attached(t, r)
			hostQueue := filepath.Join(r.env.Home, "queue", id)
			const token, host, run = "b2b2b2b2b2b2b2b21", "s.example.test", "touch /watched"
			sub, point := queue.Submission{Kind: kind, Host: host, Reason: "w"}, lifecycle.HaltEgressDecided
			if kind == queue.KindCapability {
				sub, point = queue.Submission{Kind: kind, Run: run, Reason: "w"}, lifecycle.HaltCapabilityDecided
			}
			file(t, hostQueue, token, sub)
			q := queue.Open(r.env.Home)
			var reqID string
			for deadline := time.Now().Add(10 * time.Second); reqID == ""; time.Sleep(50 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the session's watch did not pick up the request")
				}
				if reqs, _ := q.List(); len(reqs) == 1 {
					reqID = reqs[0].ID
				}
			}
			approveKilledAt(t, r.env.Home, reqID, point)

			if kind == queue.KindCapability {
				select {
				case <-done:
				case <-time.After(15 * time.Second):
					t.Fatal("the attached session did not end for the rebuild")
				}
				rec, err := r.env.Store.Load(id)
				if err != nil || !rec.Kept || rec.Handle != nil {
					t.Fatalf("the bottle after its session ended: %+v, %v\n%s", rec, err, r.msgs)
				}
				if n := strings.Count(string(rec.Dockerfile), "RUN "+run+"\n"); n != 1 {
					t.Fatalf("the Dockerfile has the RUN %d times:\n%s", n, rec.Dockerfile)
				}
				if rc := receipt(t, hostQueue, token); rc.Status != queue.StatusApproved {
					t.Fatalf("the agent reads %s", rc.Status)
				}
				return
			}
			deadline := time.Now().Add(10 * time.Second)
			for receipt(t, hostQueue, token).Status != queue.StatusApproved {
				if time.Now().After(deadline) {
					t.Fatal("the session's watch did not finish the approval")
				}
				time.Sleep(50 * time.Millisecond)
			}
			if got := le.last(); !slices.Contains(got, host) {
				t.Fatalf("the agent heard approved, but the running allowlist is %v", got)
			}
			select {
			case code := <-done:
				t.Fatalf("the session ended (%d) for an egress approval", code)
			default:
			}
			// Before the test's cleanup takes its plugin away.
			end()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("the session did not end")
			}
		})
	}
}
