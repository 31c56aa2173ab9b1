package lifecycle_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/audit"
	"github.com/bot-bottle/bot-bottle/internal/lifecycle"
	"github.com/bot-bottle/bot-bottle/internal/queue"
	"github.com/bot-bottle/bot-bottle/internal/testbackend"
)

// decisions counts the audited decisions on request reqID of bottle id,
// each of which must be the decider's (actor).
func decisions(t *testing.T, r *rig, id, reqID, actor string) int {
	t.Helper()
	evs, err := r.env.Audit(id)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ev := range evs {
		if ev.Kind == audit.KindDecision && ev.RequestID == reqID {
			n++
			if ev.Actor != actor {
				t.Errorf("the decision is audited as %s's, want the decider's (%s)", ev.Actor, actor)
			}
		}
	}
	return n
}

// dockerfileOf is the bottle's own Dockerfile ("" for none).
func dockerfileOf(t *testing.T, r *rig, id string) string {
	t.Helper()
	rec, err := r.env.Store.Load(id)
	if err != nil {
		t.Fatalf("load %s: %v", id, err)
	}
	return string(rec.Dockerfile)
}

// A decider killed anywhere between deciding a capability approval and
// releasing it leaves the bottle and an approval the agent has not heard;
// the next reader carries it out (the RUN in the Dockerfile once, one
// audited decision, the bottle kept), only then tells the agent, and stops
// the bottle for its rebuild. One killed after releasing it, before the
// stop, leaves the stop to the next reader.
func TestCapabilityApprovalKilledBetweenStepsIsFinishedByTheNextReader(t *testing.T) {
	for _, point := range []string{lifecycle.HaltCapabilityDecided, lifecycle.HaltCapabilityWritten, lifecycle.HaltCapabilityCarriedOut, lifecycle.HaltCapabilityReleased} {
		t.Run(point, func(t *testing.T) {
			r := liveRig(t, t.TempDir(), testbackend.Options{}, &liveEgress{})
			id := r.detached()
			hostQueue := filepath.Join(r.env.Home, "queue", id)
			const token = "cccccccccccccccc1"
			const run = "touch /installed"
			reqID := r.collectOne(t, hostQueue, token, queue.Submission{Kind: queue.KindCapability, Run: run, Reason: "needs it"})
			ctx := context.Background()

			approveKilledAt(t, r.env.Home, reqID, point)

			// Released only at the last point, and then with its stop to come.
			released := point == lifecycle.HaltCapabilityReleased
			got, err := queue.Open(r.env.Home).Get(reqID)
			if err != nil || got.Status != queue.StatusApproved || got.Held == released || got.Stopping != released {
				t.Fatalf("the request after the kill at %s: %+v, %v", point, got, err)
			}
			if rc := receipt(t, hostQueue, token); rc.Status != queue.StatusPending && !released {
				t.Fatalf("after the kill at %s the agent reads %s: an approval nothing carries out", point, rc.Status)
			}
			if !r.exists(id) {
				t.Fatalf("the bottle is gone after the kill at %s", point)
			}
			if _, running := r.backendHas(id); !running {
				t.Fatalf("the bottle was stopped before its approval was carried out")
			}
			// The kill came where it was meant to.
			written := point != lifecycle.HaltCapabilityDecided
			if got := strings.Contains(dockerfileOf(t, r, id), "RUN "+run); got != written {
				t.Fatalf("after the kill at %s the Dockerfile has the RUN: %v", point, got)
			}
			kept, err := r.env.Store.IsPreserved(id)
			if err != nil || kept != (point == lifecycle.HaltCapabilityCarriedOut || released) {
				t.Fatalf("after the kill at %s the bottle is kept: %v, %v", point, kept, err)
			}

			if _, err := r.env.Requests(ctx); err != nil {
				t.Fatal(err)
			}
			if rc := receipt(t, hostQueue, token); rc.Status != queue.StatusApproved {
				t.Fatalf("the next reader left the agent reading %s\n%s", rc.Status, r.msgs)
			}
			if got, _ := queue.Open(r.env.Home).Get(reqID); got.Held || got.Stopping {
				t.Errorf("still held or stopping after the next reader: %+v", got)
			}
			df := dockerfileOf(t, r, id)
			if n := strings.Count(df, "RUN "+run+"\n"); n != 1 {
				t.Errorf("the Dockerfile has the approved RUN %d times:\n%s", n, df)
			}
			if kept, err := r.env.Store.IsPreserved(id); err != nil || !kept {
				t.Errorf("the bottle is not kept after the next reader: %v, %v", kept, err)
			}
			if n := decisions(t, r, id, reqID, "user:child"); n != 1 {
				t.Errorf("%d audited decisions of %s, want 1", n, reqID)
			}
			if b, running := r.backendHas(id); running {
				t.Errorf("the next reader left the bottle running: %+v\n%s", b, r.msgs)
			}
			if rec, err := r.env.Store.Load(id); err != nil || rec.Handle != nil {
				t.Errorf("the bottle's record after its stop: %+v, %v", rec, err)
			}

			// A second reader finds nothing left to do.
			if _, err := r.env.Requests(ctx); err != nil {
				t.Fatal(err)
			}
			if again := dockerfileOf(t, r, id); again != df {
				t.Errorf("a later reader changed the Dockerfile:\n%s", again)
			}
			if n := decisions(t, r, id, reqID, "user:child"); n != 1 {
				t.Errorf("after a later reader, %d audited decisions of %s", n, reqID)
			}
		})
	}
}

// A session that ends while a capability approval of its bottle is being
// carried out (decided, not yet kept) keeps the bottle, though it was not
// kept: its removal would lose the approval and the agent's work. The
// decider's carrying out then finds it there.
func TestSessionEndDuringAHeldCapabilityApprovalKeepsTheBottle(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	id, end, done := attached(t, r)
	hostQueue := filepath.Join(r.env.Home, "queue", id)
	const token = "dddddddddddddddd1"
	file(t, hostQueue, token, queue.Submission{Kind: queue.KindCapability, Run: "touch /kept", Reason: "needs it"})
	q := queue.Open(r.env.Home)
	if _, _, err := q.Ingest(id); err != nil {
		t.Fatal(err)
	}
	held, err := q.List()
	if err != nil || len(held) != 1 {
		t.Fatalf("requests: %+v, %v", held, err)
	}
	reqID := held[0].ID
	// A decider at work: the apply lock taken, the approval decided held.
	unlock, err := q.LockApply(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if _, err := q.DecideHeld(reqID, "user:decider"); err != nil {
		t.Fatal(err)
	}

	end()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the session did not end")
	}
	if !r.exists(id) {
		t.Fatalf("the session's end removed a bottle whose capability approval was under way\n%s", r.msgs)
	}
	if _, running := r.backendHas(id); running {
		t.Fatalf("the session's end left the bottle running")
	}

	// The decider dies (its lock goes); the next reader carries it out.
	unlock()
	if _, err := r.env.Requests(ctx); err != nil {
		t.Fatal(err)
	}
	if rc := receipt(t, hostQueue, token); rc.Status != queue.StatusApproved {
		t.Fatalf("the agent reads %s\n%s", rc.Status, r.msgs)
	}
	if df := dockerfileOf(t, r, id); strings.Count(df, "RUN touch /kept\n") != 1 {
		t.Fatalf("the Dockerfile:\n%s", df)
	}
	if kept, err := r.env.Store.IsPreserved(id); err != nil || !kept {
		t.Fatalf("kept: %v, %v", kept, err)
	}
	if n := decisions(t, r, id, reqID, "user:decider"); n != 1 {
		t.Errorf("%d audited decisions of %s, want 1", n, reqID)
	}
}

// attached starts a bottle whose session stays attached until the returned
// func is called, and returns its identity once it runs and the channel
// its session's end sends Start's code on.
func attached(t *testing.T, r *rig) (id string, end func(), done <-chan int) {
	t.Helper()
	goOn := filepath.Join(t.TempDir(), "go-on")
	codes := make(chan int, 1)
	go func() {
		code, err := r.env.Start(context.Background(), lifecycle.StartOptions{Agent: "tsh",
			Command: []string{"sh", "-c", "while [ ! -e " + goOn + " ]; do sleep 0.05; done"}})
		if err != nil {
			t.Errorf("start: %v", err)
		}
		codes <- code
	}()
	deadline := time.Now().Add(30 * time.Second)
	for id == "" {
		if time.Now().After(deadline) {
			t.Fatalf("the attached bottle never came up\n%s", r.msgs)
		}
		metas, _ := r.env.Store.List()
		for _, m := range metas {
			if h, err := r.env.Store.ReadHandle(m.Identity); err == nil && h != nil {
				id = m.Identity
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	end = func() {
		if err := os.WriteFile(goOn, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(end)
	return id, end, codes
}

// The attached session of a bottle whose capability approver was killed
// ends for the rebuild when the next reader finishes the approval (it asks
// the session to end, whose teardown is the only one), and the bottle is
// kept with the change.
func TestAttachedSessionEndsWhenAKilledCapabilityApprovalIsFinished(t *testing.T) {
	r := liveRig(t, t.TempDir(), testbackend.Options{}, &liveEgress{})
	id, _, done := attached(t, r)
	hostQueue := filepath.Join(r.env.Home, "queue", id)
	const token = "eeeeeeeeeeeeeee71"
	reqID := r.collectOne(t, hostQueue, token, queue.Submission{Kind: queue.KindCapability, Run: "touch /attached", Reason: "needs it"})
	ctx := context.Background()
	approveKilledAt(t, r.env.Home, reqID, lifecycle.HaltCapabilityDecided)
	select {
	case code := <-done:
		t.Fatalf("the session ended (%d) before the approval was carried out\n%s", code, r.msgs)
	default:
	}

	if _, err := r.env.Requests(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the attached session did not end for the rebuild\n%s", r.msgs)
	}
	if rc := receipt(t, hostQueue, token); rc.Status != queue.StatusApproved {
		t.Fatalf("the agent reads %s\n%s", rc.Status, r.msgs)
	}
	rec, err := r.env.Store.Load(id)
	if err != nil || !rec.Kept || rec.Handle != nil {
		t.Fatalf("the bottle after its session ended: %+v, %v\n%s", rec, err, r.msgs)
	}
	if n := strings.Count(string(rec.Dockerfile), "RUN touch /attached\n"); n != 1 {
		t.Fatalf("the Dockerfile has the RUN %d times:\n%s", n, rec.Dockerfile)
	}
	if _, running := r.backendHas(id); running {
		t.Fatalf("the bottle still runs")
	}
}

// A released capability approval whose stop is still to come (its decider
// killed after telling the agent) is done with by any stop of the bottle: a
// reader after the bottle was stopped and resumed with the change leaves
// the new session running.
func TestAStopEndsTheWaitOfAReleasedCapabilityApproval(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	id := r.detached()
	hostQueue := filepath.Join(r.env.Home, "queue", id)
	// What a decider killed between releasing and stopping leaves (the
	// Dockerfile and the kept mark are the carrying out's).
	reqID := heldByDeadDecider(t, r.env.Home, id, hostQueue, "abcdabcdabcdabcd1", queue.Submission{Kind: queue.KindCapability, Run: "touch /resumed", Reason: "needs it"})
	q := queue.Open(r.env.Home)
	if err := r.env.Store.WriteDockerfile(id, []byte("FROM host\n\n# approved request "+reqID+"\nRUN touch /resumed\n")); err != nil {
		t.Fatal(err)
	}
	if err := r.env.Store.MarkPreserved(id); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Release(reqID, true); err != nil {
		t.Fatal(err)
	}

	if err := r.env.Stop(ctx, id, false); err != nil {
		t.Fatal(err)
	}
	if got, _ := q.Get(reqID); got.Stopping {
		t.Fatalf("the stop left the approval waiting for a stop: %+v", got)
	}
	if _, err := r.env.Resume(ctx, id, lifecycle.ResumeOptions{Detach: true, Command: []string{"sleep", "30"}}); err != nil {
		t.Fatalf("resume: %v\n%s", err, r.msgs)
	}
	if _, err := r.env.Requests(ctx); err != nil {
		t.Fatal(err)
	}
	if _, running := r.backendHas(id); !running {
		t.Fatalf("a reader stopped the resumed bottle for an approval it already has\n%s", r.msgs)
	}
}
