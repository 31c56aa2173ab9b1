package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// VerifiedBinariesFile is the core's cache of plugin binaries it hashed,
// directly in home/state (a name no identity can have: identities have no
// dot, and Identities lists directories only).
const VerifiedBinariesFile = "plugins-verified.json"

const (
	verifiedLimit   = 1 << 20
	maxVerified     = 64
	verifiedVersion = 1
)

// VerifiedBinary says that the file at Path, as its inode stood (device,
// inode, size, modification and change time), had sha256 SHA256 when it
// was hashed at HashedAt. pluginhost decides when a record may stand in for
// hashing again; this package only keeps the records.
type VerifiedBinary struct {
	Path     string    `json:"path"`
	Dev      uint64    `json:"dev"`
	Ino      uint64    `json:"ino"`
	Size     int64     `json:"size"`
	MtimeNs  int64     `json:"mtime_ns"`
	CtimeNs  int64     `json:"ctime_ns"`
	SHA256   string    `json:"sha256"`
	HashedAt time.Time `json:"hashed_at"`
}

type verifiedJSON struct {
	Version  int              `json:"version"`
	Binaries []VerifiedBinary `json:"binaries"`
}

// VerifiedBinariesPath is where the cache lives, for messages and tests.
func (s *Store) VerifiedBinariesPath() string {
	return filepath.Join(s.stateDir(), VerifiedBinariesFile)
}

// VerifiedBinary returns the record for path. The cache is only a shortcut:
// a missing, unreadable or corrupt file is no record (the caller hashes),
// never an error.
func (s *Store) VerifiedBinary(path string) (VerifiedBinary, bool) {
	for _, v := range s.readVerified() {
		if v.Path == path {
			return v, true
		}
	}
	return VerifiedBinary{}, false
}

// RecordVerifiedBinary replaces the record for v.Path with v, atomically
// (temporary file, fsync, rename), keeping the newest maxVerified records. A
// corrupt cache is replaced by one holding v. Two processes recording at once
// may lose one of the two records: the loser is hashed again next time.
func (s *Store) RecordVerifiedBinary(v VerifiedBinary) error {
	if v.Path == "" || v.SHA256 == "" {
		return errors.New("record verified binary: path and sha256 are required")
	}
	list := []VerifiedBinary{v}
	for _, o := range s.readVerified() {
		if o.Path != v.Path {
			list = append(list, o)
		}
	}
	sort.SliceStable(list, func(i, j int) bool { return list[i].HashedAt.After(list[j].HashedAt) })
	if len(list) > maxVerified {
		list = list[:maxVerified]
	}
	data, err := json.Marshal(verifiedJSON{Version: verifiedVersion, Binaries: list})
	if err != nil {
		return fmt.Errorf("record verified binary %s: %w", v.Path, err)
	}
	root, err := os.OpenRoot(s.stateDir())
	if err != nil {
		return fmt.Errorf("record verified binary %s: %w", v.Path, err)
	}
	defer root.Close()
	if err := writeAtomic(root, VerifiedBinariesFile, append(data, '\n')); err != nil {
		return fmt.Errorf("write %s: %w", s.VerifiedBinariesPath(), err)
	}
	return nil
}

// readVerified reads the cache; anything wrong with it reads as empty. The
// file is opened through a Root without following a symlink at its name.
func (s *Store) readVerified() []VerifiedBinary {
	root, err := os.OpenRoot(s.stateDir())
	if err != nil {
		return nil
	}
	defer root.Close()
	lfi, err := root.Lstat(VerifiedBinariesFile)
	if err != nil || !lfi.Mode().IsRegular() {
		return nil
	}
	f, err := root.OpenFile(VerifiedBinariesFile, os.O_RDONLY|oNoFollow, 0)
	if err != nil {
		return nil
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, verifiedLimit+1))
	if err != nil || len(data) > verifiedLimit {
		return nil
	}
	var vj verifiedJSON
	if reason, _ := decodeObject(data, &vj); reason != "" || vj.Version != verifiedVersion {
		return nil
	}
	return vj.Binaries
}
