package state

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

const (
	detachedFile      = ".detached"
	stopRequestedFile = ".stop-requested"
)

// RequestStop asks the process attached to the bottle to end its session
// (an approval that rebuilds it), so that the one teardown is that
// session's own.
func (s *Store) RequestStop(id string) error { return s.writeFile(id, stopRequestedFile, nil) }

// StopRequested reports whether RequestStop was called since the launch.
func (s *Store) StopRequested(id string) (bool, error) { return s.hasMarker(id, stopRequestedFile) }

// ClearStopRequest removes the request; absence is not an error.
func (s *Store) ClearStopRequest(id string) error {
	return s.removeFile(id, stopRequestedFile, "stop request")
}

// MarkDetached records that the bottle runs with no bot-bottle process
// attached on purpose (started with --detach, or the user detached), so that
// prune does not mistake it for the leftovers of a crash.
func (s *Store) MarkDetached(id string) error { return s.writeFile(id, detachedFile, nil) }

// IsDetached reports whether the bottle carries the detached marker.
func (s *Store) IsDetached(id string) (bool, error) { return s.hasMarker(id, detachedFile) }

// ClearDetached removes the detached marker; absence is not an error.
func (s *Store) ClearDetached(id string) error {
	return s.removeFile(id, detachedFile, "detached marker")
}

// RemoveHandle forgets the handle of a bottle whose launch has closed, so
// that nothing later mistakes it for a running bottle.
func (s *Store) RemoveHandle(id string) error { return s.removeFile(id, handleFile, "handle") }

func (s *Store) hasMarker(id, name string) (bool, error) {
	if err := ValidateIdentity(id); err != nil {
		return false, err
	}
	if !s.realDir(id) {
		return false, nil
	}
	_, err := os.Lstat(filepath.Join(s.Dir(id), name))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("check %s of %s: %w", name, id, err)
	}
}

func (s *Store) removeFile(id, name, what string) error {
	root, err := s.openBottle(id, false)
	if errors.Is(err, ErrNoBottle) {
		return nil
	}
	if err != nil {
		return err
	}
	defer root.Close()
	if err := root.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s of %s: %w", what, id, err)
	}
	return nil
}
