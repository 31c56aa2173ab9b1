package state

import (
	"errors"
	"path/filepath"
)

// transcriptArchive is the transcript snapshot as the backend's CopyOut
// produced it (a tar of the agent's transcript_path), kept whole so that
// CopyIn restores names, modes and owners exactly.
var transcriptArchive = filepath.Join(transcriptDir, "transcript.tar")

const (
	transcriptLimit = 512 << 20
	dockerfileLimit = 1 << 20
)

// WriteTranscript stores the transcript snapshot archive atomically.
func (s *Store) WriteTranscript(id string, tar []byte) error {
	if _, err := s.TranscriptDir(id); err != nil {
		return err
	}
	return s.writeFile(id, transcriptArchive, tar)
}

// ReadTranscript returns the transcript snapshot archive, or nil, nil when
// the bottle has none.
func (s *Store) ReadTranscript(id string) ([]byte, error) {
	if err := ValidateIdentity(id); err != nil {
		return nil, err
	}
	data, err := s.readFile(id, transcriptArchive, "transcript of "+id, transcriptLimit)
	if errors.Is(err, errAbsent) {
		return nil, nil
	}
	return data, err
}

// ReadDockerfile returns the bottle's own Dockerfile, or nil, nil when it
// has none.
func (s *Store) ReadDockerfile(id string) ([]byte, error) {
	if err := ValidateIdentity(id); err != nil {
		return nil, err
	}
	data, err := s.readFile(id, dockerfileFile, "Dockerfile of "+id, dockerfileLimit)
	if errors.Is(err, errAbsent) {
		return nil, nil
	}
	return data, err
}
