package state

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/gofrs/flock"
)

// lockRetries bounds how often Lock starts over after finding that the file
// it locked was unlinked by a releasing holder.
const lockRetries = 10

// Lock takes the bottle's exclusive lock without waiting. The lock file lives
// in home/locks/<id>.lock, outside the state directory, so the lock is still
// held while the holder removes the bottle's state. Any other holder (another
// process, or another Lock call in this process: flock(2) locks belong to
// the open file, not the process) makes it fail with ErrLocked. The returned
// unlock releases the lock and may be called more than once.
func (s *Store) Lock(id string) (unlock func(), err error) {
	if err := ValidateIdentity(id); err != nil {
		return nil, err
	}
	dir := filepath.Join(s.home, "locks")
	if err := os.Mkdir(dir, dirPerm); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("lock %s: %w", id, err)
	}
	path := filepath.Join(dir, id+".lock")
	for range lockRetries {
		fl := flock.New(path, flock.SetPermissions(filePerm), flock.SetFlag(os.O_CREATE|os.O_RDONLY|oNoFollow))
		ok, err := fl.TryLock()
		if err != nil {
			return nil, fmt.Errorf("lock %s (%s): %w", id, path, err)
		}
		if !ok {
			return nil, &stateError{
				msg:      fmt.Sprintf("bottle %q is in use by another bot-bottle process (lock %s)", id, path),
				sentinel: ErrLocked,
			}
		}
		// A holder that releases a bottle whose state is gone unlinks the
		// lock file. If that happened between our open and our flock, we
		// hold a lock on a file nobody else will ever open: start over.
		held, herr := fl.Stat()
		cur, cerr := os.Lstat(path)
		if herr == nil && cerr == nil && os.SameFile(held, cur) {
			// Who holds it, for Held: a reader that must not take the lock.
			_ = os.WriteFile(path+".pid", []byte(strconv.Itoa(os.Getpid())), filePerm)
			var once sync.Once
			return func() { once.Do(func() { s.release(id, path, fl) }) }, nil
		}
		_ = fl.Unlock()
	}
	return nil, fmt.Errorf("lock %s (%s): lock file keeps changing", id, path)
}

// Held reports whether a live process holds the bottle's lock, without
// taking it (list and the dashboard ask often, and must never make a
// starting or attaching process fail to get it). A holder that died (kill
// -9) holds nothing: the kernel released its lock.
func (s *Store) Held(id string) bool {
	if ValidateIdentity(id) != nil {
		return false
	}
	data, err := os.ReadFile(filepath.Join(s.home, "locks", id+".lock.pid"))
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return false
	}
	if pid == os.Getpid() {
		return true
	}
	err = syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// release drops the lock. When the bottle has no state any more the lock file
// is unlinked first, while still held, so lock files do not pile up; Lock's
// same-file check keeps that safe against a concurrent locker.
func (s *Store) release(id, path string, fl *flock.Flock) {
	_ = os.Remove(path + ".pid")
	if _, err := os.Lstat(s.Dir(id)); errors.Is(err, os.ErrNotExist) {
		_ = os.Remove(path)
	}
	_ = fl.Unlock()
}
