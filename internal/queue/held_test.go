package queue

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A held approval is decided (nobody else may decide it) but reads as
// pending in the bottle's outbox, whoever writes the receipt, until Release.
func TestHeldApprovalIsPendingToTheBottleUntilReleased(t *testing.T) {
	q, _, dir := newQueue(t)
	submit(t, dir, token(1)+".json", `{"kind":"egress","reason":"docs","host":"docs.example.test"}`)
	r := ingestOne(t, q)
	d, err := q.DecideHeld(r.ID, "user:alice")
	if err != nil || d.Status != StatusApproved || !d.Held {
		t.Fatalf("DecideHeld = %+v, %v", d, err)
	}
	if _, err := q.Decide(r.ID, false, "no", "user:bob"); !errors.Is(err, ErrAlreadyDecided) {
		t.Fatalf("deciding a held request again: %v", err)
	}
	if rc := readReceipt(t, dir, token(1)); rc.Status != StatusPending || rc.DecidedAt != nil {
		t.Fatalf("receipt of a held approval: %+v", rc)
	}
	// Another process's Ingest rewrites a receipt that differs: still pending.
	os.Remove(filepath.Join(dir, "outbox", token(1)+".json"))
	if _, _, err := q.Ingest(testID); err != nil {
		t.Fatal(err)
	}
	if rc := readReceipt(t, dir, token(1)); rc.Status != StatusPending {
		t.Fatalf("receipt a reconcile wrote of a held approval: %+v", rc)
	}
	if held, err := q.Held(testID); err != nil || len(held) != 1 || held[0].ID != r.ID {
		t.Fatalf("Held = %+v, %v", held, err)
	}

	rel, err := q.Release(r.ID, false)
	if err != nil || rel.Held || rel.Status != StatusApproved || rel.DecidedBy != "user:alice" {
		t.Fatalf("Release = %+v, %v", rel, err)
	}
	if rc := readReceipt(t, dir, token(1)); rc.Status != StatusApproved || rc.DecidedAt == nil {
		t.Fatalf("receipt after Release: %+v", rc)
	}
	if held, err := q.Held(testID); err != nil || len(held) != 0 {
		t.Fatalf("Held after Release = %+v, %v", held, err)
	}
	// A second release (a reader finishing what was already finished) is a no-op.
	if again, err := q.Release(r.ID, false); err != nil || again.Held || again.Status != StatusApproved || !again.DecidedAt.Equal(*rel.DecidedAt) {
		t.Fatalf("second Release = %+v, %v; want %+v", again, err, rel)
	}
}

// The apply lock is one holder at a time across processes' open files; a
// waiter gets it when the holder lets go and gives up when its ctx ends.
func TestApplyLock(t *testing.T) {
	q, _, _ := newQueue(t)
	unlock, err := q.LockApply(context.Background(), testID)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := q.TryLockApply(testID); ok || err != nil {
		t.Fatalf("TryLockApply while held: %v, %v", ok, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := q.LockApply(ctx, testID); err == nil || !errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("LockApply while held, until its ctx ends: %q", err)
	}
	got := make(chan error, 1)
	go func() {
		u, err := q.LockApply(context.Background(), testID)
		if err == nil {
			u()
		}
		got <- err
	}()
	time.Sleep(30 * time.Millisecond)
	unlock()
	unlock() // more than once is fine
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a waiter did not get the lock its holder let go")
	}
	u, ok, err := q.TryLockApply(testID)
	if !ok || err != nil {
		t.Fatalf("TryLockApply once free: %v, %v", ok, err)
	}
	u()
	if _, _, err := q.TryLockApply("nobody-abcde"); !errors.Is(err, ErrNoRequest) {
		t.Fatalf("TryLockApply of a bottle without requests: %v", err)
	}
}

// Released with its stop to come, an approval reads approved to the bottle
// and stays among Held until its bottle's stop (Stopped) clears it.
func TestReleasedApprovalWaitsForItsStop(t *testing.T) {
	q, _, dir := newQueue(t)
	submit(t, dir, token(2)+".json", `{"kind":"capability","reason":"tools","run":"true"}`)
	r := ingestOne(t, q)
	if _, err := q.DecideHeld(r.ID, "user:alice"); err != nil {
		t.Fatal(err)
	}
	rel, err := q.Release(r.ID, true)
	if err != nil || rel.Held || !rel.Stopping {
		t.Fatalf("Release = %+v, %v", rel, err)
	}
	if rc := readReceipt(t, dir, token(2)); rc.Status != StatusApproved {
		t.Fatalf("receipt of a released approval: %+v", rc)
	}
	if held, err := q.Held(testID); err != nil || len(held) != 1 || !held[0].Stopping {
		t.Fatalf("Held while its stop is to come = %+v, %v", held, err)
	}
	if err := q.Stopped(testID); err != nil {
		t.Fatal(err)
	}
	if held, err := q.Held(testID); err != nil || len(held) != 0 {
		t.Fatalf("Held after the stop = %+v, %v", held, err)
	}
	if err := q.Stopped("nobody-abcde"); err != nil {
		t.Fatalf("Stopped of a bottle without requests: %v", err)
	}
}
