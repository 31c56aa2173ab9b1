package state

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/google/renameio/v2"
)

// openBottle opens the bottle's state directory as an os.Root, so that
// nothing done through it can leave the directory. With create set a missing
// directory is created; otherwise a missing one is reported as ErrNoBottle.
// A symlink or non-directory in its place is refused: a link planted there
// would otherwise redirect every write below it.
func (s *Store) openBottle(id string, create bool) (*os.Root, error) {
	if err := ValidateIdentity(id); err != nil {
		return nil, err
	}
	dir := s.Dir(id)
	if create {
		if err := os.Mkdir(dir, dirPerm); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("create state for %s: %w", id, err)
		}
	}
	lfi, err := os.Lstat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, &stateError{msg: fmt.Sprintf("no bottle %q", id), sentinel: ErrNoBottle}
	}
	if err != nil {
		return nil, fmt.Errorf("state for %s: %w", id, err)
	}
	if !lfi.IsDir() {
		return nil, &stateError{
			msg:      fmt.Sprintf("state for %s is not a directory (%s)", id, dir),
			sentinel: ErrCorrupt,
		}
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open state for %s: %w", id, err)
	}
	// The directory could have been swapped for a link between Lstat and
	// OpenRoot; make sure the root is the directory we checked.
	rfi, err := root.Stat(".")
	if err != nil || !os.SameFile(lfi, rfi) {
		root.Close()
		return nil, &stateError{
			msg:      fmt.Sprintf("state for %s changed while opening it (%s)", id, dir),
			sentinel: ErrCorrupt,
		}
	}
	return root, nil
}

// writeFile atomically replaces name inside the bottle's directory with data
// (mode 0600): a temporary file in the same directory, fsync, rename, then an
// fsync of the directory so the rename itself survives a crash. A symlink at
// name is replaced, never followed.
func (s *Store) writeFile(id, name string, data []byte) error {
	root, err := s.openBottle(id, true)
	if err != nil {
		return err
	}
	defer root.Close()
	if err := writeAtomic(root, name, data); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Join(s.Dir(id), name), err)
	}
	return nil
}

func writeAtomic(root *os.Root, name string, data []byte) error {
	pf, err := renameio.NewPendingFile(name, renameio.WithRoot(root), renameio.WithStaticPermissions(filePerm))
	if err != nil {
		return err
	}
	defer pf.Cleanup()
	if _, err := pf.Write(data); err != nil {
		return err
	}
	if err := pf.CloseAtomicallyReplace(); err != nil {
		return err
	}
	return syncDir(root)
}

func syncDir(root *os.Root) error {
	d, err := root.Open(".")
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// errAbsent is returned by readFile when the bottle or the file is missing.
var errAbsent = errors.New("absent")

// readFile reads a regular file inside the bottle's directory, refusing
// symlinks and anything larger than limit. A missing bottle or file is
// errAbsent; anything present but unreadable as a plain file wraps ErrCorrupt
// with a message naming what (e.g. "metadata for x") and the path.
func (s *Store) readFile(id, name, what string, limit int64) ([]byte, error) {
	root, err := s.openBottle(id, false)
	if errors.Is(err, ErrNoBottle) {
		return nil, errAbsent
	}
	if err != nil {
		return nil, err
	}
	defer root.Close()
	path := filepath.Join(s.Dir(id), name)
	corrupt := func(format string, args ...any) error {
		return &stateError{
			msg:      fmt.Sprintf("%s is corrupt (%s): %s", what, path, fmt.Sprintf(format, args...)),
			sentinel: ErrCorrupt,
		}
	}
	lfi, err := root.Lstat(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, errAbsent
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if lfi.Mode()&os.ModeSymlink != 0 {
		return nil, corrupt("is a symlink, refusing to follow it")
	}
	if !lfi.Mode().IsRegular() {
		return nil, corrupt("not a regular file")
	}
	f, err := root.Open(name)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	ffi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	// The file may have been atomically replaced since Lstat; that is fine,
	// we read one whole version. A symlink swapped in meanwhile could only
	// point inside the bottle's directory, since the Root confines it.
	if !ffi.Mode().IsRegular() {
		return nil, corrupt("not a regular file")
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, corrupt("larger than %d bytes", limit)
	}
	return data, nil
}

// subdir creates (if needed) a directory inside the bottle's directory and
// returns its path, refusing a symlink in its place.
func (s *Store) subdir(id, name string) (string, error) {
	root, err := s.openBottle(id, true)
	if err != nil {
		return "", err
	}
	defer root.Close()
	path := filepath.Join(s.Dir(id), name)
	if err := root.Mkdir(name, dirPerm); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("create %s: %w", path, err)
	}
	fi, err := root.Lstat(name)
	if err != nil {
		return "", fmt.Errorf("create %s: %w", path, err)
	}
	if !fi.IsDir() {
		return "", &stateError{
			msg:      fmt.Sprintf("%s of %s is not a directory (%s)", name, id, path),
			sentinel: ErrCorrupt,
		}
	}
	return path, nil
}

// Remove deletes the bottle's whole state directory. A missing directory is
// not an error. A symlink in its place is removed, not followed.
func (s *Store) Remove(id string) error {
	if err := ValidateIdentity(id); err != nil {
		return err
	}
	dir := s.Dir(id)
	err := os.RemoveAll(dir)
	if errors.Is(err, fs.ErrPermission) && s.realDir(id) {
		// A --review bottle's agent owns its clone and may have made a
		// directory of it read-only, which would leave the state half
		// removed: give every directory back its owner's bits and retry.
		if werr := ownerWritable(dir); werr == nil {
			err = os.RemoveAll(dir)
		}
	}
	if err != nil {
		return fmt.Errorf("remove state for %s: %w", id, err)
	}
	return nil
}

// ownerWritable makes every directory under dir rwx for its owner. It works
// through an os.Root, so a link planted below dir changes nothing outside.
func ownerWritable(dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	return fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // what cannot be read now is retried by RemoveAll
		}
		if d.IsDir() {
			_ = root.Chmod(p, 0o700)
		}
		return nil
	})
}
