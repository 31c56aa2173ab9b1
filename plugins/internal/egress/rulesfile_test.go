package egress

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseRulesFile(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		rules      []string
		err        string
	}{
		{"rules", `{"identity":"shell-7k2qz","rules":["a.test","*.b.test:80"]}`, []string{"a.test:443", "*.b.test:80"}, ""},
		{"unknown fields are tolerated", `{"identity":"shell-7k2qz","rules":[],"version":2}`, []string{}, ""},
		{"no rules allow nothing", `{"identity":"shell-7k2qz"}`, []string{}, ""},
		{"other bottle", `{"identity":"other-aaaaa","rules":["a.test"]}`, nil, `rules are for bottle "other-aaaaa", not "shell-7k2qz"`},
		{"no identity", `{"rules":["a.test"]}`, nil, `rules are for bottle ""`},
		{"bad rule", `{"identity":"shell-7k2qz","rules":["a.test","::1"]}`, nil, `rule 2 ("::1")`},
		{"not JSON", `a.test`, nil, "not a rules file"},
		{"truncated", `{"identity":"shell-7k2qz","rules":["a.te`, nil, "not a rules file"},
		{"rules not a list", `{"identity":"shell-7k2qz","rules":"a.test"}`, nil, "not a rules file"},
		{"too big", `{"identity":"shell-7k2qz","rules":[],"pad":"` + strings.Repeat("x", MaxRulesFileSize) + `"}`, nil, "more than"},
	} {
		rs, err := ParseRulesFile([]byte(tc.data), testIdentity)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err = %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if got := rs.Strings(); !slices.Equal(got, tc.rules) && !(len(got) == 0 && len(tc.rules) == 0) {
			t.Errorf("%s: rules %q, want %q", tc.name, got, tc.rules)
		}
	}
}

func TestEncodeRulesFileRoundTrips(t *testing.T) {
	data, err := EncodeRulesFile(testIdentity, []string{"API.example.com", "[::1]:8080"})
	if err != nil {
		t.Fatal(err)
	}
	var f RulesFile
	if err := json.Unmarshal(data, &f); err != nil || f.Identity != testIdentity {
		t.Fatalf("encoded file %s: %v", data, err)
	}
	rs, err := ParseRulesFile(data, testIdentity)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rs.Match("api.example.com", 443); !ok {
		t.Fatal("round-tripped rules lost api.example.com")
	}
	if _, err := EncodeRulesFile(testIdentity, []string{"ok.test", "bad_name.test"}); err == nil {
		t.Fatal("EncodeRulesFile accepted a bad rule")
	}
	if _, err := EncodeRulesFile("", nil); err == nil {
		t.Fatal("EncodeRulesFile accepted an empty identity")
	}
	empty, err := EncodeRulesFile(testIdentity, nil)
	if err != nil || !bytes.Contains(empty, []byte(`"rules": []`)) {
		t.Fatalf("no rules encode as %s, %v; want an empty list", empty, err)
	}
}

func TestReadRulesFileErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadRulesFile(filepath.Join(dir, "missing.json"), testIdentity); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
	if _, err := ReadRulesFile(dir, testIdentity); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: %v", err)
	}
	big := filepath.Join(dir, "big.json")
	if err := os.WriteFile(big, bytes.Repeat([]byte(" "), MaxRulesFileSize+10), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadRulesFile(big, testIdentity); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("big file: %v", err)
	}
}

// watchFixture drives a Watcher's polls by hand with a clock it controls.
type watchFixture struct {
	t    *testing.T
	path string
	w    *Watcher
	log  *syncBuffer
	now  time.Time
	base time.Time // the fixture's start, for timestamps that must not move
}

func newWatchFixture(t *testing.T, rules ...string) *watchFixture {
	f := &watchFixture{t: t, path: filepath.Join(t.TempDir(), "rules.json"), log: &syncBuffer{}, now: time.Now()}
	f.base = f.now
	f.write(rules...)
	f.w = NewWatcher(f.path, testIdentity, slog.New(slog.NewTextHandler(f.log, nil)))
	f.w.now = func() time.Time { return f.now }
	if _, err := f.w.Load(); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *watchFixture) write(rules ...string) {
	data, err := EncodeRulesFile(testIdentity, rules)
	if err != nil {
		f.t.Fatal(err)
	}
	f.writeRaw(string(data))
}

func (f *watchFixture) writeRaw(data string) {
	if err := os.WriteFile(f.path, []byte(data), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// age sets the file's modification time well in the past, as a file
// unpacked from a tar with an old timestamp has.
func (f *watchFixture) age() {
	old := f.base.Add(-time.Hour)
	if err := os.Chtimes(f.path, old, old); err != nil {
		f.t.Fatal(err)
	}
}

func (f *watchFixture) poll() []string {
	f.now = f.now.Add(DefaultPollInterval)
	rs := f.w.poll()
	if rs == nil {
		return nil
	}
	return rs.Strings()
}

func TestWatcherSeesEveryKindOfChange(t *testing.T) {
	f := newWatchFixture(t, "aaaa.test")
	if got := f.poll(); got != nil {
		t.Fatalf("unchanged file reloaded: %q", got)
	}
	// An in-place rewrite of the same size within one tick of the file
	// system's clock: the stat does not differ, the contents do.
	before, err := os.Stat(f.path)
	if err != nil {
		t.Fatal(err)
	}
	f.write("bbbb.test")
	if err := os.Chtimes(f.path, before.ModTime(), before.ModTime()); err != nil {
		t.Fatal(err)
	}
	if got := f.poll(); !slices.Equal(got, []string{"bbbb.test:443"}) {
		t.Fatalf("same-size rewrite: %q", got)
	}
	if got := f.poll(); got != nil {
		t.Fatalf("reloaded twice: %q", got)
	}
	// A replacement that keeps size, inode and an old mtime is still seen,
	// within seconds.
	f.age()
	f.poll()
	f.write("cccc.test")
	f.age()
	var got []string
	for i := 0; got == nil && i < int(3*time.Second/DefaultPollInterval); i++ {
		got = f.poll()
	}
	if !slices.Equal(got, []string{"cccc.test:443"}) {
		t.Fatalf("replacement with an old mtime: %q", got)
	}
	// Rename over it.
	tmp := f.path + ".new"
	data, _ := EncodeRulesFile(testIdentity, []string{"dddd.test:8443"})
	os.WriteFile(tmp, data, 0o644)
	if err := os.Rename(tmp, f.path); err != nil {
		t.Fatal(err)
	}
	if got := f.poll(); !slices.Equal(got, []string{"dddd.test:8443"}) {
		t.Fatalf("rename: %q", got)
	}
	if strings.Count(f.log.String(), "egress rules reloaded") != 3 {
		t.Errorf("log:\n%s", f.log)
	}
}

func TestWatcherKeepsRulesOnABadFileAndReportsItOnce(t *testing.T) {
	f := newWatchFixture(t, "a.test")
	f.writeRaw(`{"identity":"shell-7k2qz","rules":["a.te`)
	if got := f.poll(); got != nil {
		t.Fatalf("a bad file gave rules %q", got)
	}
	if f.log.String() != "" {
		t.Fatalf("a possibly half-written file was reported at once:\n%s", f.log)
	}
	for range 5 {
		if got := f.poll(); got != nil {
			t.Fatalf("a bad file gave rules %q", got)
		}
	}
	if n := strings.Count(f.log.String(), "keeping the egress rules in force"); n != 1 {
		t.Fatalf("the bad file was reported %d times, want once:\n%s", n, f.log)
	}
	os.Remove(f.path)
	f.poll()
	f.poll()
	if !strings.Contains(f.log.String(), "no such file") || strings.Count(f.log.String(), "no such file") != 1 {
		t.Fatalf("a missing file was not reported once:\n%s", f.log)
	}
	f.write("a.test", "b.test")
	if got := f.poll(); !slices.Equal(got, []string{"a.test:443", "b.test:443"}) {
		t.Fatalf("after the fix: %q", got)
	}
	// The same error later is reported again: it is news again.
	f.writeRaw(`nope`)
	for range 3 {
		f.poll()
	}
	if n := strings.Count(f.log.String(), "keeping the egress rules in force"); n != 3 {
		t.Fatalf("want 3 reports (bad, missing, bad again), got %d:\n%s", n, f.log)
	}
}

func TestEventLogWritesWholeLines(t *testing.T) {
	var buf syncBuffer
	l := NewEventLog(&buf)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.Write(Event{Identity: testIdentity, Host: strings.Repeat("h", i+1) + ".test", Port: 443, Allowed: i%2 == 0, Method: "CONNECT"})
		}()
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 50 {
		t.Fatalf("%d lines, want 50", len(lines))
	}
	for _, line := range lines {
		var ev Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if ts, err := time.Parse(time.RFC3339Nano, ev.Time); err != nil || time.Since(ts) > time.Minute {
			t.Errorf("event time %q: %v", ev.Time, err)
		}
	}
	if err := NewEventLog(failingWriter{}).Write(Event{}); err == nil {
		t.Error("a failed write was not reported")
	}
}
