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
	file(t, hostQueue, token, queue.Submission{Kind: queue.KindEgress, Host: host, Reason: "r"})
	q := queue.Open(r.env.Home)
	if _, _, err := q.Ingest(id); err != nil {
		t.Fatal(err)
	}
	reqs, err := q.List()
	if err != nil || len(reqs) != 1 {
		t.Fatalf("requests: %+v, %v", reqs, err)
	}
	// What a decider killed before widening leaves: held, its lock free.
	if _, err := q.DecideHeld(reqs[0].ID, "user:decider"); err != nil {
		t.Fatal(err)
	}
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
		if n := int32(strings.Count(r.msgs.String(), "finish the approval "+reqs[0].ID)); n != want {
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
	if got, _ := q.Get(reqs[0].ID); got.Held {
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
