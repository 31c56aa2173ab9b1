package state

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func verifiedRecord(path string, at time.Time) VerifiedBinary {
	return VerifiedBinary{Path: path, Dev: 1, Ino: 2, Size: 3, MtimeNs: 4, CtimeNs: 5, SHA256: strings.Repeat("ab", 32), HashedAt: at}
}

func TestVerifiedBinaryRoundTrip(t *testing.T) {
	s := newStore(t)
	if _, ok := s.VerifiedBinary("/p/a"); ok {
		t.Fatal("a record in a fresh home")
	}
	now := time.Now().UTC().Round(0)
	a, b := verifiedRecord("/p/a", now), verifiedRecord("/p/b", now.Add(time.Second))
	b.Ino = 9
	for _, v := range []VerifiedBinary{a, b} {
		if err := s.RecordVerifiedBinary(v); err != nil {
			t.Fatal(err)
		}
	}
	if got, ok := s.VerifiedBinary("/p/a"); !ok || !got.HashedAt.Equal(a.HashedAt) || got.Ino != 2 || got.SHA256 != a.SHA256 {
		t.Fatalf("a: %+v %v", got, ok)
	}
	// A new record for a path replaces the old one.
	b2 := b
	b2.Ino, b2.SHA256 = 10, strings.Repeat("cd", 32)
	if err := s.RecordVerifiedBinary(b2); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.VerifiedBinary("/p/b"); got.Ino != 10 || got.SHA256 != b2.SHA256 {
		t.Fatalf("b replaced: %+v", got)
	}
	fi, err := os.Stat(s.VerifiedBinariesPath())
	if err != nil || fi.Mode().Perm() != filePerm {
		t.Fatalf("cache file: %v %v", fi, err)
	}
	data, _ := os.ReadFile(s.VerifiedBinariesPath())
	if n := strings.Count(string(data), `"path"`); n != 2 {
		t.Fatalf("%d records, want 2:\n%s", n, data)
	}
	// It is no bottle.
	if ids, err := s.Identities(); err != nil || len(ids) != 0 {
		t.Fatalf("identities %v %v", ids, err)
	}
}

// A corrupt, oversized, foreign-version or symlinked cache is no record,
// never an error, and the next record replaces it with a good file.
func TestVerifiedBinaryCorruptCache(t *testing.T) {
	for name, write := range map[string]func(t *testing.T, p string){
		"garbage": func(t *testing.T, p string) { must(t, os.WriteFile(p, []byte("\x00{not json"), 0o600)) },
		"truncated": func(t *testing.T, p string) {
			must(t, os.WriteFile(p, []byte(`{"version":1,"binaries":[{"path":"/p/a"`), 0o600))
		},
		"empty": func(t *testing.T, p string) { must(t, os.WriteFile(p, nil, 0o600)) },
		"version": func(t *testing.T, p string) {
			must(t, os.WriteFile(p, []byte(`{"version":99,"binaries":[{"path":"/p/a","sha256":"x"}]}`), 0o600))
		},
		"wrong type": func(t *testing.T, p string) {
			must(t, os.WriteFile(p, []byte(`{"version":1,"binaries":[{"path":"/p/a","ino":"x"}]}`), 0o600))
		},
		"huge": func(t *testing.T, p string) {
			must(t, os.WriteFile(p, []byte(`{"version":1,"binaries":[{"path":"/p/a","sha256":"x"}],"pad":"`+strings.Repeat("x", verifiedLimit)+`"}`), 0o600))
		},
		"directory": func(t *testing.T, p string) { must(t, os.Mkdir(p, 0o700)) },
		"symlink": func(t *testing.T, p string) {
			target := filepath.Join(t.TempDir(), "elsewhere.json")
			must(t, os.WriteFile(target, []byte(`{"version":1,"binaries":[{"path":"/p/a","sha256":"x"}]}`), 0o600))
			must(t, os.Symlink(target, p))
			t.Cleanup(func() {
				if data, _ := os.ReadFile(target); !strings.Contains(string(data), `"x"`) {
					t.Errorf("the symlink's target was written: %s", data)
				}
			})
		},
	} {
		t.Run(name, func(t *testing.T) {
			s := newStore(t)
			write(t, s.VerifiedBinariesPath())
			if v, ok := s.VerifiedBinary("/p/a"); ok {
				t.Fatalf("a record from a corrupt cache: %+v", v)
			}
			err := s.RecordVerifiedBinary(verifiedRecord("/p/b", time.Now()))
			if name == "directory" {
				// A directory in its place is not replaced; still only
				// the caller's shortcut is lost.
				if err == nil {
					t.Fatal("recorded over a directory")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := s.VerifiedBinary("/p/b"); !ok {
				t.Fatal("the record replacing a corrupt cache is not read back")
			}
			if _, ok := s.VerifiedBinary("/p/a"); ok {
				t.Fatal("a record of the corrupt cache survived")
			}
			if fi, err := os.Lstat(s.VerifiedBinariesPath()); err != nil || !fi.Mode().IsRegular() {
				t.Fatalf("cache is not a regular file now: %v %v", fi, err)
			}
		})
	}
}

// The cache keeps the newest records, so it stays small whatever is run.
func TestVerifiedBinaryBounded(t *testing.T) {
	s := newStore(t)
	t0 := time.Now()
	for i := range maxVerified + 5 {
		if err := s.RecordVerifiedBinary(verifiedRecord(fmt.Sprintf("/p/%d", i), t0.Add(time.Duration(i)*time.Second))); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(s.readVerified()); got != maxVerified {
		t.Fatalf("%d records, want %d", got, maxVerified)
	}
	if _, ok := s.VerifiedBinary("/p/0"); ok {
		t.Fatal("the oldest record was kept")
	}
	if _, ok := s.VerifiedBinary(fmt.Sprintf("/p/%d", maxVerified+4)); !ok {
		t.Fatal("the newest record was dropped")
	}
	if err := s.RecordVerifiedBinary(VerifiedBinary{Path: "/p/x"}); err == nil {
		t.Fatal("a record without sha256 was accepted")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
