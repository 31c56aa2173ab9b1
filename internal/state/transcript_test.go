package state

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestTranscriptAndDockerfileRoundTrip(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.Mint("shell", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.ReadTranscript(id); got != nil || err != nil {
		t.Fatalf("no transcript yet: %q %v", got, err)
	}
	if s.HasTranscript(id) {
		t.Fatal("HasTranscript before any")
	}
	if err := s.WriteTranscript(id, []byte("tar bytes")); err != nil {
		t.Fatal(err)
	}
	got, err := s.ReadTranscript(id)
	if err != nil || !bytes.Equal(got, []byte("tar bytes")) || !s.HasTranscript(id) {
		t.Fatalf("transcript = %q, %v", got, err)
	}
	if got, err := s.ReadDockerfile(id); got != nil || err != nil {
		t.Fatalf("no Dockerfile yet: %q %v", got, err)
	}
	if err := s.WriteDockerfile(id, []byte("FROM scratch\n")); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ReadDockerfile(id); string(got) != "FROM scratch\n" {
		t.Fatalf("Dockerfile = %q", got)
	}
	// A symlink planted in place of the archive is refused, not followed.
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("host file"), 0o600)
	p := filepath.Join(s.Dir(id), "transcript", "transcript.tar")
	os.Remove(p)
	if err := os.Symlink(secret, p); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ReadTranscript(id); err == nil {
		t.Fatalf("symlinked transcript read: %q", got)
	}
}
