package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"

	"github.com/gofrs/flock"
)

// agentFile is one file of a built-in agent, path slash-separated and
// relative to the agent's directory.
type agentFile struct {
	path string
	data []byte
}

// extract writes the built-in agent name to
// $home/cache/agents/<name>-<12 hex of its digest>/ and returns that
// directory. The digest covers every file, so a new binary with a changed
// agent gets a fresh directory and an unchanged one reuses the old. The
// directory is filled under a temporary name and renamed into place, so a
// reader (or a concurrent bot-bottle) never sees it half written.
//
// embed.FS keeps no file modes; a file that starts with "#!" is made
// executable so scripts COPY'd by a Dockerfile still run.
func (l *loader) extract(name string) (string, error) {
	sub, err := fs.Sub(l.builtin, name)
	if err != nil {
		return "", fmt.Errorf("built-in agent %s: %w", name, err)
	}
	files, err := readAgentFiles(sub)
	if err != nil {
		return "", fmt.Errorf("read built-in agent %s: %w", name, err)
	}
	sum := digest(files)
	parent := filepath.Join(l.home, "cache", "agents")
	final := filepath.Join(parent, name+"-"+sum[:12])
	if dirDigest(final) == sum {
		return final, nil
	}

	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", fmt.Errorf("extract agent %s: %w", name, err)
	}
	// Only the slow path is locked: concurrent bot-bottles that find the
	// directory intact never wait, and two that find it missing or damaged
	// cannot move each other's fresh copy aside.
	lock := flock.New(filepath.Join(parent, "."+name+".lock"))
	if err := lock.Lock(); err != nil {
		return "", fmt.Errorf("extract agent %s: lock: %w", name, err)
	}
	defer lock.Unlock()
	if dirDigest(final) == sum {
		return final, nil
	}
	tmp, err := os.MkdirTemp(parent, "."+name+"-*.tmp")
	if err != nil {
		return "", fmt.Errorf("extract agent %s: %w", name, err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed into place
	if err := writeAgentFiles(tmp, files); err != nil {
		return "", fmt.Errorf("extract agent %s: %w", name, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", fmt.Errorf("extract agent %s: %w", name, err)
	}

	// A directory that exists but does not match was damaged (the digest is
	// in its name); move it aside rather than reuse it.
	if _, err := os.Lstat(final); err == nil {
		stale, err := os.MkdirTemp(parent, "."+name+"-*.stale")
		if err != nil {
			return "", fmt.Errorf("extract agent %s: %w", name, err)
		}
		defer os.RemoveAll(stale)
		if err := os.Rename(final, filepath.Join(stale, "old")); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("extract agent %s: replace damaged %s: %w", name, final, err)
		}
	}
	if err := os.Rename(tmp, final); err != nil {
		return "", fmt.Errorf("extract agent %s: %w", name, err)
	}
	syncDir(parent)
	return final, nil
}

func readAgentFiles(fsys fs.FS) ([]agentFile, error) {
	var files []agentFile
	err := fs.WalkDir(fsys, ".", func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() {
			return nil
		}
		if !e.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file", p)
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		files = append(files, agentFile{path: p, data: data})
		return nil
	})
	sort.Slice(files, func(i, j int) bool { return files[i].path < files[j].path })
	return files, err
}

// digest is a sha256 over the files' paths and contents, framed so that no
// two different sets of files hash alike.
func digest(files []agentFile) string {
	h := sha256.New()
	var n [8]byte
	for _, f := range files {
		binary.BigEndian.PutUint64(n[:], uint64(len(f.path)))
		h.Write(n[:])
		h.Write([]byte(f.path))
		binary.BigEndian.PutUint64(n[:], uint64(len(f.data)))
		h.Write(n[:])
		h.Write(f.data)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// dirDigest is digest over what is on disk in dir, or "" when dir is missing
// or holds anything but directories and regular files.
func dirDigest(dir string) string {
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() {
		return ""
	}
	files, err := readAgentFiles(os.DirFS(dir))
	if err != nil {
		return ""
	}
	return digest(files)
}

func writeAgentFiles(dir string, files []agentFile) error {
	for _, f := range files {
		dst := filepath.Join(dir, filepath.FromSlash(f.path))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		mode := fs.FileMode(0o644)
		if bytes.HasPrefix(f.data, []byte("#!")) {
			mode = 0o755
		}
		if err := writeSynced(dst, f.data, mode); err != nil {
			return err
		}
	}
	// Directories are synced so the rename publishes complete contents.
	dirs := map[string]bool{dir: true}
	for _, f := range files {
		dirs[filepath.Join(dir, filepath.FromSlash(path.Dir(f.path)))] = true
	}
	for d := range dirs {
		syncDir(d)
	}
	return nil
}

func writeSynced(name string, data []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	// The umask may have narrowed mode; the build context needs it as is.
	return os.Chmod(name, mode)
}

// syncDir is best effort: some file systems cannot fsync a directory, and
// the data files themselves are already synced.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
