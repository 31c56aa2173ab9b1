// Package state is the only code that reads or writes bot-bottle's state
// directory ($BOT_BOTTLE_HOME/state/<identity>/): identity minting and
// validation, bottle metadata, the preserve marker, the per-bottle
// Dockerfile, transcript and snapshot directories, the committed image
// reference, the backend's opaque handle, cleanup, and the per-bottle lock.
//
// Every method that takes an identity validates it first, so a name a user
// typed can never reach outside the state directory. Files are written
// atomically (temporary file in the same directory, fsync, rename) with mode
// 0600, directories are created 0700, and nothing is written through a
// symlink planted inside a bottle's directory.
package state

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// HomeEnv names the environment variable that overrides the default home.
const HomeEnv = "BOT_BOTTLE_HOME"

const (
	dirPerm  os.FileMode = 0o700
	filePerm os.FileMode = 0o600
)

// DefaultHome returns $BOT_BOTTLE_HOME as an absolute path, or ~/.bot-bottle
// when it is unset or empty.
func DefaultHome() (string, error) {
	if h := os.Getenv(HomeEnv); h != "" {
		abs, err := filepath.Abs(h)
		if err != nil {
			return "", fmt.Errorf("resolve %s %q: %w", HomeEnv, h, err)
		}
		return abs, nil
	}
	u, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find home directory (set %s): %w", HomeEnv, err)
	}
	return filepath.Join(u, ".bot-bottle"), nil
}

// Store is bot-bottle's state under one home directory. It holds no open
// files, so any number of Stores (in any number of processes) may share a
// home; coordination between them is by atomic file operations and Lock.
type Store struct {
	home string
	// suffix draws the random part of a minted identity. Tests replace it
	// to force collisions; nil means crypto/rand.
	suffix func() (string, error)
}

// Open returns the Store rooted at home, creating home and home/state (0700)
// when they are missing. A relative home is made absolute, because the paths
// the Store hands out end up in mounts and messages.
func Open(home string) (*Store, error) {
	if home == "" {
		return nil, errors.New("open state: empty home directory")
	}
	abs, err := filepath.Abs(home)
	if err != nil {
		return nil, fmt.Errorf("open state in %s: %w", home, err)
	}
	if err := os.MkdirAll(abs, dirPerm); err != nil {
		return nil, fmt.Errorf("open state in %s: %w", abs, err)
	}
	s := &Store{home: abs}
	if err := os.Mkdir(s.stateDir(), dirPerm); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("open state in %s: %w", abs, err)
	}
	fi, err := os.Stat(s.stateDir())
	if err != nil {
		return nil, fmt.Errorf("open state in %s: %w", abs, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("open state in %s: %s is not a directory", abs, s.stateDir())
	}
	return s, nil
}

// Home returns the absolute home directory ($BOT_BOTTLE_HOME).
func (s *Store) Home() string { return s.home }

// Dir returns home/state/<id>. It does not validate id: callers that got id
// from a user must call ValidateIdentity first.
func (s *Store) Dir(id string) string { return filepath.Join(s.stateDir(), id) }

// Within reports whether path (absolute, links resolved) is in the state
// directory: in some bottle's state, such as a --review bottle's clone.
func (s *Store) Within(path string) bool {
	dir := s.stateDir()
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

func (s *Store) stateDir() string { return filepath.Join(s.home, "state") }
