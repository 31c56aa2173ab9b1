package state

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/bot-bottle/bot-bottle/sdk/backendtest"
)

// minted reports whether id has the shape Mint gives: <slug>-<5 base36>.
func minted(id, slug string) bool {
	suffix, ok := strings.CutPrefix(id, slug+"-")
	return ok && ValidateIdentity(id) == nil && len(suffix) == 5 && strings.Trim(suffix, "0123456789abcdefghijklmnopqrstuvwxyz") == ""
}

// TestValidateIdentity runs the one name rule's table (sdk/backendtest)
// against the state dir's guard, and checks its errors.
func TestValidateIdentity(t *testing.T) {
	backendtest.CheckNameRule(t, func(id string) bool { return ValidateIdentity(id) == nil })
	backendtest.CheckNameRule(t, func(n string) bool { return ValidateName("agent name", n) == nil })
	for _, c := range backendtest.NameCases {
		if c.Valid {
			continue
		}
		err := ValidateIdentity(c.Name)
		if !errors.Is(err, ErrInvalidIdentity) {
			t.Fatalf("ValidateIdentity(%q) = %v, want ErrInvalidIdentity", c.Name, err)
		}
		assertOneLine(t, err)
		want := fmt.Sprintf("invalid identity %q: must be lower-case letters, digits and '-'", c.Name)
		if !strings.HasPrefix(err.Error(), want) {
			t.Errorf("message %q does not start with %q", err, want)
		}
	}
}

func TestValidateName(t *testing.T) {
	if err := ValidateName("agent name", "claude"); err != nil {
		t.Fatalf("valid name refused: %v", err)
	}
	for _, name := range []string{"", "Claude", "../claude", "a/b", "-x", "a b", strings.Repeat("x", 65)} {
		err := ValidateName("agent name", name)
		if !errors.Is(err, ErrInvalidName) {
			t.Fatalf("ValidateName(%q) = %v, want ErrInvalidName", name, err)
		}
		if errors.Is(err, ErrInvalidIdentity) {
			t.Errorf("ValidateName(%q) error also matches ErrInvalidIdentity", name)
		}
		assertOneLine(t, err)
		if want := fmt.Sprintf("invalid agent name %q: ", name); !strings.HasPrefix(err.Error(), want) {
			t.Errorf("message %q does not start with %q", err, want)
		}
	}
}

func TestSlug(t *testing.T) {
	cases := map[string]string{
		"claude":                       "claude",
		"Claude Code":                  "claude-code",
		"  My__Agent!!v2  ":            "my-agent-v2",
		"a--b":                         "a-b",
		"---":                          "bottle",
		"":                             "bottle",
		"ÄÖÜ":                          "bottle",
		"naïve":                        "na-ve",
		"../../etc/passwd":             "etc-passwd",
		strings.Repeat("ab", 30):       strings.Repeat("ab", 20),
		strings.Repeat("a", 39) + " b": strings.Repeat("a", 39),
	}
	for in, want := range cases {
		got := Slug(in)
		if got != want {
			t.Errorf("Slug(%q) = %q, want %q", in, got, want)
		}
		if len(got) > 40 {
			t.Errorf("Slug(%q) = %q is longer than 40", in, got)
		}
		if err := ValidateIdentity(got); err != nil {
			t.Errorf("Slug(%q) = %q is not a valid identity: %v", in, got, err)
		}
	}
}

func TestMintFormatAndReservation(t *testing.T) {
	s := newStore(t)
	id, err := s.Mint("Claude Code", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !minted(id, "claude-code") {
		t.Fatalf("minted %q, want claude-code-xxxxx", id)
	}
	fi, err := os.Lstat(s.Dir(id))
	if err != nil || !fi.IsDir() {
		t.Fatalf("state dir of %s not created: %v", id, err)
	}
	assertMode(t, s.Dir(id), 0o700)
}

func TestMintSkipsTaken(t *testing.T) {
	s := newStore(t)
	var asked []string
	id, err := s.Mint("shell", func(id string) bool {
		asked = append(asked, id)
		return len(asked) < 3 // the first two candidates are "running"
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(asked) != 3 || id != asked[2] {
		t.Fatalf("Mint returned %q after asking %v; want the third candidate", id, asked)
	}
	for _, skipped := range asked[:2] {
		if _, err := os.Lstat(s.Dir(skipped)); !os.IsNotExist(err) {
			t.Errorf("taken candidate %s got a state dir", skipped)
		}
	}
}

func TestMintGivesUp(t *testing.T) {
	s := newStore(t)
	n := 0
	_, err := s.Mint("shell", func(string) bool { n++; return true })
	if err == nil {
		t.Fatal("Mint succeeded although every identity was taken")
	}
	if n != mintRetries {
		t.Errorf("taken asked %d times, want %d", n, mintRetries)
	}
	assertOneLine(t, err)
	ids, _ := s.Identities()
	if len(ids) != 0 {
		t.Errorf("failed Mint left state dirs: %v", ids)
	}
}

// lowEntropy makes a Store whose suffixes come from only n values, so that
// concurrent mints must collide and rely on the atomic Mkdir.
func lowEntropy(s *Store, n int64) {
	s.suffix = func() (string, error) {
		v, err := randomBelow(n)
		if err != nil {
			return "", err
		}
		return padBase36(v), nil
	}
}

func TestMintCollisionsInProcess(t *testing.T) {
	s := newStore(t)
	lowEntropy(s, 64)
	const workers = 48
	ids := make([]string, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids[i], errs[i] = s.Mint("claude", nil)
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, id := range ids {
		if errs[i] != nil {
			t.Fatalf("Mint %d: %v", i, errs[i])
		}
		if seen[id] {
			t.Fatalf("identity %s minted twice", id)
		}
		seen[id] = true
	}
	got, _ := s.Identities()
	if len(got) != workers {
		t.Fatalf("%d state dirs, want %d", len(got), workers)
	}
}

func TestMintLocked(t *testing.T) {
	s := newStore(t)
	id, unlock, err := s.MintLocked("shell", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lock(id); !errors.Is(err, ErrLocked) {
		t.Fatalf("Lock of freshly minted %s = %v, want ErrLocked", id, err)
	}
	unlock()
	u2, err := s.Lock(id)
	if err != nil {
		t.Fatalf("Lock after unlock: %v", err)
	}
	u2()
}

func TestMintLockedSkipsLockedCandidates(t *testing.T) {
	s := newStore(t)
	// Only two possible suffixes; hold the lock of one of them, so every
	// successful mint must be the other.
	vals := []string{"aaaaa", "bbbbb"}
	i := 0
	s.suffix = func() (string, error) { v := vals[i%2]; i++; return v, nil }
	held, err := s.Lock("shell-aaaaa")
	if err != nil {
		t.Fatal(err)
	}
	defer held()
	id, unlock, err := s.MintLocked("shell", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if id != "shell-bbbbb" {
		t.Fatalf("MintLocked = %s, want shell-bbbbb (shell-aaaaa is locked)", id)
	}
	if _, err := os.Lstat(s.Dir("shell-aaaaa")); !os.IsNotExist(err) {
		t.Errorf("locked candidate got a state dir")
	}
}
