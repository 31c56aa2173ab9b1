package state

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/gofrs/flock"
)

// UpdateMetadata applies change to the bottle's metadata under a
// cross-process lock of its own (not the bottle's session lock, which an
// attached bot-bottle holds for the whole session), so that two processes
// widening a bottle's allowlist at once never lose each other's change.
func (s *Store) UpdateMetadata(ctx context.Context, id string, change func(*Metadata) error) (Metadata, error) {
	if err := ValidateIdentity(id); err != nil {
		return Metadata{}, err
	}
	dir := filepath.Join(s.home, "locks")
	if err := os.Mkdir(dir, dirPerm); err != nil && !errors.Is(err, os.ErrExist) {
		return Metadata{}, fmt.Errorf("update metadata of %s: %w", id, err)
	}
	fl := flock.New(filepath.Join(dir, id+".meta.lock"), flock.SetPermissions(filePerm), flock.SetFlag(os.O_CREATE|os.O_RDONLY|oNoFollow))
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ok, err := fl.TryLockContext(ctx, 10*time.Millisecond)
	if err != nil || !ok {
		return Metadata{}, fmt.Errorf("update metadata of %s: lock: %v", id, err)
	}
	defer fl.Unlock()
	m, err := s.ReadMetadata(id)
	if err != nil {
		return Metadata{}, err
	}
	if err := change(&m); err != nil {
		return Metadata{}, err
	}
	if err := s.WriteMetadata(m); err != nil {
		return Metadata{}, err
	}
	return m, nil
}
