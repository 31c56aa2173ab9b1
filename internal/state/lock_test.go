package state

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLockContentionInProcess(t *testing.T) {
	s := newStore(t)
	const id = "shell-abcde"
	unlock, err := s.Lock(id)
	if err != nil {
		t.Fatal(err)
	}
	// A second Store on the same home opens its own file descriptor; flock(2)
	// locks belong to the open file, so this must conflict even in-process.
	other, err := Open(s.Home())
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []*Store{s, other} {
		_, err := st.Lock(id)
		if !errors.Is(err, ErrLocked) {
			t.Fatalf("second Lock = %v, want ErrLocked", err)
		}
		assertOneLine(t, err)
		if !strings.Contains(err.Error(), "in use by another bot-bottle process") {
			t.Errorf("message %q", err)
		}
	}
	// Another bottle is independent.
	u2, err := s.Lock("shell-zzzzz")
	if err != nil {
		t.Fatalf("lock of another bottle: %v", err)
	}
	u2()

	unlock()
	unlock() // idempotent
	u3, err := other.Lock(id)
	if err != nil {
		t.Fatalf("Lock after unlock: %v", err)
	}
	u3()
}

func TestLockLivesOutsideStateAndSurvivesRemove(t *testing.T) {
	s := newStore(t)
	id, err := s.Mint("shell", nil)
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := s.Lock(id)
	if err != nil {
		t.Fatal(err)
	}
	lockPath := filepath.Join(s.Home(), "locks", id+".lock")
	assertMode(t, lockPath, 0o600)
	assertMode(t, filepath.Dir(lockPath), 0o700)
	if err := s.Remove(id); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lock(id); !errors.Is(err, ErrLocked) {
		t.Fatalf("after Remove, Lock = %v; the lock must still be held", err)
	}
	unlock()
	// The state is gone, so releasing the lock tidied its file away.
	if _, err := os.Lstat(lockPath); !os.IsNotExist(err) {
		t.Errorf("lock file of a removed bottle left behind: %v", err)
	}
	u, err := s.Lock(id)
	if err != nil {
		t.Fatalf("relock: %v", err)
	}
	u()
}

func TestLockKeepsFileOfLiveBottle(t *testing.T) {
	s := newStore(t)
	id, _ := s.Mint("shell", nil)
	unlock, err := s.Lock(id)
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	if _, err := os.Lstat(filepath.Join(s.Home(), "locks", id+".lock")); err != nil {
		t.Errorf("lock file of a live bottle removed: %v", err)
	}
}

func TestLockRefusesSymlink(t *testing.T) {
	s := newStore(t)
	if err := os.Mkdir(filepath.Join(s.Home(), "locks"), 0o700); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(t.TempDir(), "target")
	if err := os.Symlink(target, filepath.Join(s.Home(), "locks", "shell-aaaaa.lock")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lock("shell-aaaaa"); err == nil {
		t.Fatal("Lock followed a symlinked lock file")
	}
	if _, err := os.Lstat(target); !os.IsNotExist(err) {
		t.Errorf("Lock created the symlink's target")
	}
}
