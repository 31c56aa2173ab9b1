package state

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bot-bottle/bot-bottle/sdk"
)

func TestOpenCreatesHome(t *testing.T) {
	home := filepath.Join(t.TempDir(), "a", "b")
	s, err := Open(home)
	if err != nil {
		t.Fatal(err)
	}
	if s.Home() != home {
		t.Errorf("Home = %q, want %q", s.Home(), home)
	}
	assertMode(t, filepath.Join(home, "state"), 0o700)
	if s.Dir("x-aaaaa") != filepath.Join(home, "state", "x-aaaaa") {
		t.Errorf("Dir = %q", s.Dir("x-aaaaa"))
	}
	// Opening again is fine.
	if _, err := Open(home); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(""); err == nil {
		t.Error("Open(\"\") succeeded")
	}
	// home/state as a file is refused with a clear error.
	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, "state"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Open(bad)
	assertOneLine(t, err)
}

func TestOpenRelativeHomeIsAbsolute(t *testing.T) {
	t.Chdir(t.TempDir())
	s, err := Open("rel")
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(s.Home()) {
		t.Fatalf("Home %q is not absolute", s.Home())
	}
}

func TestDefaultHome(t *testing.T) {
	t.Setenv("BOT_BOTTLE_HOME", "/srv/bb")
	if h, err := DefaultHome(); err != nil || h != "/srv/bb" {
		t.Fatalf("DefaultHome = %q, %v; want /srv/bb", h, err)
	}
	t.Setenv("BOT_BOTTLE_HOME", "")
	t.Setenv("HOME", "/home/someone")
	if h, err := DefaultHome(); err != nil || h != "/home/someone/.bot-bottle" {
		t.Fatalf("DefaultHome = %q, %v; want /home/someone/.bot-bottle", h, err)
	}
}

func TestPreserve(t *testing.T) {
	s := newStore(t)
	id, err := s.Mint("shell", nil)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := s.IsPreserved(id); err != nil || p {
		t.Fatalf("fresh bottle preserved=%v err=%v", p, err)
	}
	if err := s.MarkPreserved(id); err != nil {
		t.Fatal(err)
	}
	if p, err := s.IsPreserved(id); err != nil || !p {
		t.Fatalf("after mark preserved=%v err=%v", p, err)
	}
	assertMode(t, filepath.Join(s.Dir(id), ".preserve"), 0o600)
	if err := s.MarkPreserved(id); err != nil {
		t.Fatalf("marking twice: %v", err)
	}
	if err := s.ClearPreserved(id); err != nil {
		t.Fatal(err)
	}
	if p, err := s.IsPreserved(id); err != nil || p {
		t.Fatalf("after clear preserved=%v err=%v", p, err)
	}
	if err := s.ClearPreserved(id); err != nil {
		t.Fatalf("clearing an absent marker: %v", err)
	}
	if err := s.ClearPreserved("gone-zzzzz"); err != nil {
		t.Fatalf("clearing on an absent bottle: %v", err)
	}
	if p, err := s.IsPreserved("gone-zzzzz"); err != nil || p {
		t.Fatalf("absent bottle preserved=%v err=%v", p, err)
	}
}

func TestDockerfile(t *testing.T) {
	s := newStore(t)
	id, _ := s.Mint("shell", nil)
	path, ok := s.DockerfilePath(id)
	if ok || path != filepath.Join(s.Dir(id), "Dockerfile") {
		t.Fatalf("DockerfilePath before write = %q, %v", path, ok)
	}
	content := []byte("FROM scratch\nCOPY busybox /bin/sh\n")
	if err := s.WriteDockerfile(id, content); err != nil {
		t.Fatal(err)
	}
	path, ok = s.DockerfilePath(id)
	if !ok {
		t.Fatal("DockerfilePath reports no Dockerfile after write")
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("Dockerfile = %q, %v", got, err)
	}
	assertMode(t, path, 0o600)
	if p, ok := s.DockerfilePath("../x"); ok || p != "" {
		t.Errorf("DockerfilePath(invalid) = %q, %v", p, ok)
	}
}

func TestTranscriptAndSnapshotDirs(t *testing.T) {
	s := newStore(t)
	id, _ := s.Mint("claude", nil)
	if s.HasTranscript(id) {
		t.Fatal("HasTranscript before anything was written")
	}
	dir, err := s.TranscriptDir(id)
	if err != nil {
		t.Fatal(err)
	}
	if dir != filepath.Join(s.Dir(id), "transcript") {
		t.Errorf("TranscriptDir = %q", dir)
	}
	assertMode(t, dir, 0o700)
	if s.HasTranscript(id) {
		t.Fatal("HasTranscript for an empty directory")
	}
	if err := os.WriteFile(filepath.Join(dir, "session.jsonl"), []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !s.HasTranscript(id) {
		t.Fatal("HasTranscript false with a file in it")
	}
	if again, err := s.TranscriptDir(id); err != nil || again != dir {
		t.Fatalf("TranscriptDir again = %q, %v", again, err)
	}
	if s.HasTranscript("BAD") {
		t.Error("HasTranscript true for an invalid identity")
	}

	snap, err := s.SnapshotDir(id)
	if err != nil {
		t.Fatal(err)
	}
	if snap != filepath.Join(s.Dir(id), "snapshot") {
		t.Errorf("SnapshotDir = %q", snap)
	}
	assertMode(t, snap, 0o700)
}

func TestSubdirRefusesSymlink(t *testing.T) {
	s := newStore(t)
	id, _ := s.Mint("claude", nil)
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(s.Dir(id), "transcript")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TranscriptDir(id); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("TranscriptDir with a planted symlink = %v, want ErrCorrupt", err)
	}
	if err := os.WriteFile(filepath.Join(outside, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if s.HasTranscript(id) {
		t.Error("HasTranscript followed a planted symlink")
	}
}

func TestCommittedImage(t *testing.T) {
	s := newStore(t)
	id, _ := s.Mint("claude", nil)
	if ref, err := s.ReadCommittedImage(id); err != nil || ref != "" {
		t.Fatalf("before commit: %q, %v", ref, err)
	}
	if ref, err := s.ReadCommittedImage("gone-aaaaa"); err != nil || ref != "" {
		t.Fatalf("absent bottle: %q, %v", ref, err)
	}
	const ref = "bot-bottle/committed:" + "claude-abcde-1"
	if err := s.WriteCommittedImage(id, ref); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ReadCommittedImage(id); err != nil || got != ref {
		t.Fatalf("ReadCommittedImage = %q, %v", got, err)
	}
	assertMode(t, filepath.Join(s.Dir(id), "committed-image"), 0o600)
	for _, bad := range []string{"", " x", "a\nb", "x\x00"} {
		if err := s.WriteCommittedImage(id, bad); err == nil {
			t.Errorf("WriteCommittedImage(%q) accepted", bad)
		} else {
			assertOneLine(t, err)
		}
	}
	if got, _ := s.ReadCommittedImage(id); got != ref {
		t.Fatalf("bad write changed the record to %q", got)
	}
	if err := s.ClearCommittedImage(id); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ReadCommittedImage(id); err != nil || got != "" {
		t.Fatalf("after clear: %q, %v", got, err)
	}
}

func TestHandle(t *testing.T) {
	s := newStore(t)
	id, _ := s.Mint("shell", nil)
	if h, err := s.ReadHandle(id); err != nil || h != nil {
		t.Fatalf("before write: %v, %v", h, err)
	}
	in := sdk.Handle{Version: 3, Backend: "docker", Identity: id, Data: []byte{0, 1, 2, 0xff, '"', '\n'}, ImageUser: "agent"}
	if err := s.WriteHandle(id, in); err != nil {
		t.Fatal(err)
	}
	got, err := s.ReadHandle(id)
	if err != nil || got == nil || !reflect.DeepEqual(*got, in) {
		t.Fatalf("ReadHandle = %+v, %v; want %+v", got, err, in)
	}
	assertMode(t, filepath.Join(s.Dir(id), "handle.json"), 0o600)

	if err := s.WriteHandle(id, sdk.Handle{Identity: "other-aaaaa"}); err == nil {
		t.Error("WriteHandle accepted a handle for another identity")
	}
	if err := os.WriteFile(filepath.Join(s.Dir(id), "handle.json"), []byte(`{"version":1,`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = s.ReadHandle(id)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "handle.json") {
		t.Fatalf("corrupt handle: %v, want ErrCorrupt naming handle.json", err)
	}
	assertOneLine(t, err)
}

func TestRemove(t *testing.T) {
	s := newStore(t)
	id, _ := s.Mint("shell", nil)
	if err := s.WriteMetadata(Metadata{Identity: id, AgentName: "shell"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TranscriptDir(id); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkPreserved(id); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(id); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(s.Dir(id)); !os.IsNotExist(err) {
		t.Fatalf("state dir still there: %v", err)
	}
	if _, err := s.ReadMetadata(id); !errors.Is(err, ErrNoBottle) {
		t.Fatalf("after Remove: %v, want ErrNoBottle", err)
	}
	if err := s.Remove(id); err != nil {
		t.Fatalf("removing twice: %v", err)
	}
}

func TestRemoveDoesNotFollowSymlink(t *testing.T) {
	s := newStore(t)
	outside := t.TempDir()
	victim := filepath.Join(outside, "keep")
	if err := os.WriteFile(victim, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, s.Dir("link-aaaaa")); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("link-aaaaa"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(victim); err != nil {
		t.Fatalf("Remove followed the symlink: %v", err)
	}
}

// A symlink planted in the state dir must never redirect a write.
func TestWritesDoNotFollowSymlinks(t *testing.T) {
	t.Run("file", func(t *testing.T) {
		s := newStore(t)
		id, _ := s.Mint("shell", nil)
		victim := filepath.Join(t.TempDir(), "victim")
		if err := os.WriteFile(victim, []byte("original"), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"metadata.json", "Dockerfile", "handle.json", "committed-image", ".preserve"} {
			if err := os.Symlink(victim, filepath.Join(s.Dir(id), name)); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.WriteMetadata(Metadata{Identity: id}); err != nil {
			t.Fatal(err)
		}
		if err := s.WriteDockerfile(id, []byte("FROM scratch\n")); err != nil {
			t.Fatal(err)
		}
		if err := s.WriteHandle(id, sdk.Handle{Backend: "docker"}); err != nil {
			t.Fatal(err)
		}
		if err := s.WriteCommittedImage(id, "img:1"); err != nil {
			t.Fatal(err)
		}
		if err := s.MarkPreserved(id); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(victim); string(got) != "original" {
			t.Fatalf("a write went through a symlink: victim now %q", got)
		}
		if _, err := s.ReadMetadata(id); err != nil {
			t.Fatalf("metadata written in place of the link is readable: %v", err)
		}
	})
	t.Run("bottle dir", func(t *testing.T) {
		s := newStore(t)
		outside := t.TempDir()
		if err := os.Symlink(outside, s.Dir("evil-aaaaa")); err != nil {
			t.Fatal(err)
		}
		writes := map[string]error{
			"WriteMetadata":       s.WriteMetadata(Metadata{Identity: "evil-aaaaa"}),
			"WriteDockerfile":     s.WriteDockerfile("evil-aaaaa", []byte("x")),
			"WriteHandle":         s.WriteHandle("evil-aaaaa", sdk.Handle{}),
			"WriteCommittedImage": s.WriteCommittedImage("evil-aaaaa", "x"),
			"MarkPreserved":       s.MarkPreserved("evil-aaaaa"),
		}
		_, writes["TranscriptDir"] = s.TranscriptDir("evil-aaaaa")
		_, writes["SnapshotDir"] = s.SnapshotDir("evil-aaaaa")
		for name, err := range writes {
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s through a symlinked bottle dir = %v, want ErrCorrupt", name, err)
			}
		}
		entries, _ := os.ReadDir(outside)
		if len(entries) != 0 {
			t.Fatalf("writes landed outside the state dir: %v", entries)
		}
		if _, err := s.ReadMetadata("evil-aaaaa"); !errors.Is(err, ErrCorrupt) {
			t.Errorf("ReadMetadata through a symlinked bottle dir = %v, want ErrCorrupt", err)
		}
	})
}

// Every method that takes an identity refuses a bad one and touches nothing.
func TestEveryMethodValidatesIdentity(t *testing.T) {
	s := newStore(t)
	for _, bad := range []string{"", "/", "..", "../x", "../../etc", "Claude-abcde", "a b", "-x"} {
		before := treeSnapshot(t, filepath.Dir(s.Home()))
		calls := map[string]error{
			"WriteMetadata":       s.WriteMetadata(Metadata{Identity: bad}),
			"MarkPreserved":       s.MarkPreserved(bad),
			"ClearPreserved":      s.ClearPreserved(bad),
			"WriteDockerfile":     s.WriteDockerfile(bad, []byte("x")),
			"WriteCommittedImage": s.WriteCommittedImage(bad, "x"),
			"ClearCommittedImage": s.ClearCommittedImage(bad),
			"WriteHandle":         s.WriteHandle(bad, sdk.Handle{}),
			"Remove":              s.Remove(bad),
		}
		_, calls["ReadMetadata"] = s.ReadMetadata(bad)
		_, calls["IsPreserved"] = s.IsPreserved(bad)
		_, calls["TranscriptDir"] = s.TranscriptDir(bad)
		_, calls["SnapshotDir"] = s.SnapshotDir(bad)
		_, calls["ReadCommittedImage"] = s.ReadCommittedImage(bad)
		_, calls["ReadHandle"] = s.ReadHandle(bad)
		_, calls["Lock"] = s.Lock(bad)
		for name, err := range calls {
			if !errors.Is(err, ErrInvalidIdentity) {
				t.Errorf("%s(%q) = %v, want ErrInvalidIdentity", name, bad, err)
			}
		}
		if s.HasTranscript(bad) {
			t.Errorf("HasTranscript(%q) = true", bad)
		}
		if _, ok := s.DockerfilePath(bad); ok {
			t.Errorf("DockerfilePath(%q) reports a file", bad)
		}
		if after := treeSnapshot(t, filepath.Dir(s.Home())); after != before {
			t.Errorf("calls with %q changed the tree:\nbefore:\n%s\nafter:\n%s", bad, before, after)
		}
	}
}
