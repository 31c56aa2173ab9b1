package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/bot-bottle/bot-bottle/sdk"
)

const (
	preserveFile       = ".preserve"
	dockerfileFile     = "Dockerfile"
	transcriptDir      = "transcript"
	snapshotDir        = "snapshot"
	reviewDir          = "review"
	committedImageFile = "committed-image"
	handleFile         = "handle.json"

	committedImageLimit = 4 << 10
	handleLimit         = 16 << 20
)

// MarkPreserved marks the bottle preserved: its state survives the end of
// its session.
func (s *Store) MarkPreserved(id string) error {
	return s.writeFile(id, preserveFile, nil)
}

// IsPreserved reports whether the bottle carries the preserve marker. A
// missing bottle is not preserved.
func (s *Store) IsPreserved(id string) (bool, error) { return s.hasMarker(id, preserveFile) }

// ClearPreserved removes the preserve marker; an absent marker or bottle is
// not an error.
func (s *Store) ClearPreserved(id string) error {
	return s.removeFile(id, preserveFile, "preserve marker")
}

// WriteDockerfile atomically writes the bottle's own Dockerfile (the one an
// approved capability request produced).
func (s *Store) WriteDockerfile(id string, content []byte) error {
	return s.writeFile(id, dockerfileFile, content)
}

// DockerfilePath returns where the bottle's own Dockerfile lives and whether
// it exists as a regular file. An invalid id gives "", false.
func (s *Store) DockerfilePath(id string) (string, bool) {
	if ValidateIdentity(id) != nil {
		return "", false
	}
	path := filepath.Join(s.Dir(id), dockerfileFile)
	if !s.realDir(id) {
		return path, false
	}
	fi, err := os.Lstat(path)
	return path, err == nil && fi.Mode().IsRegular()
}

// TranscriptDir returns state/<id>/transcript, creating it (0700) if needed.
func (s *Store) TranscriptDir(id string) (string, error) {
	return s.subdir(id, transcriptDir)
}

// HasTranscript reports whether the bottle has a non-empty transcript
// directory. An invalid id has none.
func (s *Store) HasTranscript(id string) bool {
	if ValidateIdentity(id) != nil || !s.realDir(id) {
		return false
	}
	dir := filepath.Join(s.Dir(id), transcriptDir)
	if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() {
		return false
	}
	f, err := os.Open(dir)
	if err != nil {
		return false
	}
	defer f.Close()
	names, _ := f.Readdirnames(1)
	return len(names) > 0
}

// SnapshotDir returns state/<id>/snapshot, creating it (0700) if needed, for
// backends whose snapshots are files rather than images.
func (s *Store) SnapshotDir(id string) (string, error) {
	return s.subdir(id, snapshotDir)
}

// ReviewDir returns state/<id>/review, creating it (0700) if needed: a
// --review bottle's clone (the agent's, mounted as its project) and the
// core's own repository beside it. It goes with the rest of the state.
func (s *Store) ReviewDir(id string) (string, error) {
	return s.subdir(id, reviewDir)
}

// WriteCommittedImage records the reference of the image a commit produced.
// The reference must be one non-empty line.
func (s *Store) WriteCommittedImage(id, ref string) error {
	if err := ValidateIdentity(id); err != nil {
		return err
	}
	if ref == "" || strings.TrimSpace(ref) != ref || strings.ContainsAny(ref, "\r\n\x00") {
		return fmt.Errorf("record committed image of %s: invalid image reference %q", id, ref)
	}
	return s.writeFile(id, committedImageFile, []byte(ref+"\n"))
}

// ReadCommittedImage returns the recorded committed image reference, or ""
// when there is none.
func (s *Store) ReadCommittedImage(id string) (string, error) {
	if err := ValidateIdentity(id); err != nil {
		return "", err
	}
	data, err := s.readFile(id, committedImageFile, "committed image of "+id, committedImageLimit)
	if errors.Is(err, errAbsent) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(data)), nil
}

// ClearCommittedImage forgets the committed image reference (for example when
// the backend no longer has the image). Absent is not an error.
func (s *Store) ClearCommittedImage(id string) error {
	root, err := s.openBottle(id, false)
	if errors.Is(err, ErrNoBottle) {
		return nil
	}
	if err != nil {
		return err
	}
	defer root.Close()
	if err := root.Remove(committedImageFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("clear committed image of %s: %w", id, err)
	}
	return nil
}

// handleJSON is handle.json on disk. It has its own tags so that the file
// format does not change if the SDK's Go field names do.
type handleJSON struct {
	Version  uint32 `json:"version"`
	Backend  string `json:"backend"`
	Identity string `json:"identity"`
	Data     []byte `json:"data"`
	// ImageUser: absent in a handle of an earlier core or plugin.
	ImageUser string `json:"image_user,omitempty"`
}

// WriteHandle atomically stores the opaque handle a backend's Launch
// returned, so that a later command can drive the bottle from a fresh plugin
// process. A handle naming another identity is refused.
func (s *Store) WriteHandle(id string, h sdk.Handle) error {
	if err := ValidateIdentity(id); err != nil {
		return err
	}
	if h.Identity != "" && h.Identity != id {
		return fmt.Errorf("write handle for %s: handle names identity %q", id, h.Identity)
	}
	data, err := json.Marshal(handleJSON(h))
	if err != nil {
		return fmt.Errorf("write handle for %s: %w", id, err)
	}
	return s.writeFile(id, handleFile, append(data, '\n'))
}

// ReadHandle returns the stored handle, or nil, nil when there is none.
func (s *Store) ReadHandle(id string) (*sdk.Handle, error) {
	if err := ValidateIdentity(id); err != nil {
		return nil, err
	}
	what := "handle for " + id
	data, err := s.readFile(id, handleFile, what, handleLimit)
	if errors.Is(err, errAbsent) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	corrupt := func(reason string, cause error) error {
		return &stateError{
			msg:      fmt.Sprintf("%s is corrupt (%s): %s", what, filepath.Join(s.Dir(id), handleFile), oneLine(reason)),
			sentinel: ErrCorrupt,
			cause:    cause,
		}
	}
	var hj handleJSON
	if reason, err := decodeObject(data, &hj); reason != "" {
		return nil, corrupt(reason, err)
	}
	if hj.Identity != "" && hj.Identity != id {
		return nil, corrupt(fmt.Sprintf("it names identity %q", hj.Identity), nil)
	}
	h := sdk.Handle(hj)
	return &h, nil
}

// realDir reports whether the bottle's directory exists and is a directory,
// not a symlink to one.
func (s *Store) realDir(id string) bool {
	fi, err := os.Lstat(s.Dir(id))
	return err == nil && fi.IsDir()
}
