package lifecycle_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/lifecycle"
	"github.com/bot-bottle/bot-bottle/internal/queue"
)

// A session that ends while a capability approval of its bottle is being
// carried out (decided, not yet kept) keeps the bottle, though it was not
// kept: its removal would lose the approval and the agent's work.
func TestSessionEndDuringAHeldCapabilityApprovalKeepsTheBottle(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	goOn := filepath.Join(t.TempDir(), "go-on")
	done := make(chan int, 1)
	go func() {
		code, err := r.env.Start(ctx, lifecycle.StartOptions{Agent: "tsh",
			Command: []string{"sh", "-c", "while [ ! -e " + goOn + " ]; do sleep 0.05; done"}})
		if err != nil {
			t.Errorf("start: %v", err)
		}
		done <- code
	}()
	var id string
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

	if err := os.WriteFile(goOn, nil, 0o600); err != nil {
		t.Fatal(err)
	}
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
}
