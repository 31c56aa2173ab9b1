package pluginlock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gofrs/flock"
)

func sum(c byte) string { return strings.Repeat(string(c), 64) }

func TestRoundTrip(t *testing.T) {
	home := t.TempDir()
	want := &Lock{Entries: map[string]Entry{
		"skeleton": {Name: "skeleton", Version: "0.1.0", Protocol: 1, APIVersions: []string{"1.0.0"}, SHA256: sum('a')},
		"docker":   {Name: "docker", Version: "1.2.3", Protocol: 2, APIVersions: []string{"1.0.0", "2.0.0"}, SHA256: sum('b')},
		"bare":     {Name: "bare", SHA256: sum('c')},
	}}
	if err := Write(Path(home), want); err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(Path(home))
	if err != nil {
		t.Fatal(err)
	}
	text := string(src)
	if !strings.HasPrefix(text, "# This file is maintained by \"bot-bottle plugins install\"") || !strings.Contains(text, "may be committed") {
		t.Errorf("header missing:\n%s", text)
	}
	// sorted blocks, aligned attributes
	if b, d, s := strings.Index(text, `plugin "bare"`), strings.Index(text, `plugin "docker"`), strings.Index(text, `plugin "skeleton"`); !(b < d && d < s && b > 0) {
		t.Errorf("blocks not sorted:\n%s", text)
	}
	if !strings.Contains(text, `plugin "skeleton" {
  version      = "0.1.0"
  protocol     = 1
  api_versions = ["1.0.0"]
  sha256       = "`+sum('a')+`"
}`) {
		t.Errorf("unexpected block layout:\n%s", text)
	}

	got, err := Read(Path(home))
	if err != nil {
		t.Fatal(err)
	}
	for n, e := range got.Entries {
		e.Line = 0
		if len(e.APIVersions) == 0 {
			e.APIVersions = nil // written as [], read back as an empty slice
		}
		got.Entries[n] = e
	}
	if !reflect.DeepEqual(got.Entries, want.Entries) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got.Entries, want.Entries)
	}
	// Writing what was read gives the same bytes.
	if again, err := Format(got); err != nil || string(again) != text {
		t.Fatalf("not stable (%v):\n%s\n---\n%s", err, text, again)
	}
}

func TestReadMissingIsEmpty(t *testing.T) {
	l, err := Read(filepath.Join(t.TempDir(), FileName))
	if err != nil || len(l.Entries) != 0 {
		t.Fatalf("%+v %v", l, err)
	}
	if _, ok := (*Lock)(nil).Get("x"); ok || (*Lock)(nil).Names() != nil {
		t.Fatal("nil lock has entries")
	}
}

func TestUnknownAttributesTolerated(t *testing.T) {
	src := `
future_setting = true
mirror "x" {}
plugin "test" {
  version   = "1"
  sha256    = "` + strings.ToUpper(sum('d')) + `"
  signature = "zz"
  provenance {
    url = "https://example.com"
  }
}
`
	l, err := Parse([]byte(src), "plugins.lock.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if e := l.Entries["test"]; e.SHA256 != sum('d') || e.Version != "1" || e.Line != 4 {
		t.Fatalf("%+v", e)
	}
}

func TestBrokenIsOneLineWithPosition(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"plugin \"test\" {\n  sha256 = \n}\n", "lock.hcl:2:"},
		{"plugin \"test\" {\n  version = \"1\"\n}\n", "lock.hcl:1:"},
		{"plugin \"test\" {\n  sha256 = \"abc\"\n}\n", "lock.hcl:2:12: Invalid sha256"},
		{"plugin \"Bad/Name\" {\n  sha256 = \"" + sum('a') + "\"\n}\n", "lock.hcl:1:8: Invalid plugin name"},
		{"plugin \"a\" {\n  sha256 = \"" + sum('a') + "\"\n}\nplugin \"a\" {\n  sha256 = \"" + sum('a') + "\"\n}\n", "lock.hcl:4:1: Duplicate plugin block"},
		{"plugin \"a\" {\n  protocol = \"one\"\n  sha256 = \"" + sum('a') + "\"\n}\n", "lock.hcl:2:"},
	} {
		_, err := Parse([]byte(tc.src), "/h/lock.hcl")
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: got %v, want one line containing %q", tc.src, err, tc.want)
		}
	}
}

// TestConcurrentUpdates: many writers at once (each with its own open file,
// as separate processes have), every entry kept.
func TestConcurrentUpdates(t *testing.T) {
	home := t.TempDir()
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- Update(context.Background(), home, func(l *Lock) error {
				name := fmt.Sprintf("p%d", i)
				l.Entries[name] = Entry{Name: name, Version: "1", Protocol: 1, SHA256: sum('e')}
				return nil
			})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	l, err := Read(Path(home))
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Entries) != n {
		t.Fatalf("want %d entries, got %v", n, l.Names())
	}
}

// TestConcurrentProcesses: the same, across real processes (this test
// binary re-executed).
func TestConcurrentProcesses(t *testing.T) {
	if home := os.Getenv("PLUGINLOCK_HELPER_HOME"); home != "" {
		name := os.Getenv("PLUGINLOCK_HELPER_NAME")
		for i := range 20 {
			err := Update(context.Background(), home, func(l *Lock) error {
				n := fmt.Sprintf("%s-%d", name, i)
				l.Entries[n] = Entry{Name: n, SHA256: sum('f')}
				return nil
			})
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
		}
		os.Exit(0)
	}
	home := t.TempDir()
	var cmds []*exec.Cmd
	for _, name := range []string{"a", "b", "c"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestConcurrentProcesses$")
		cmd.Env = append(os.Environ(), "PLUGINLOCK_HELPER_HOME="+home, "PLUGINLOCK_HELPER_NAME="+name)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	for _, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	l, err := Read(Path(home))
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Entries) != 60 {
		t.Fatalf("want 60 entries, got %d: %v", len(l.Entries), l.Names())
	}
}

// TestWithLockAcquiredAsContextEnds: a lock acquired just as the wait
// times out still runs fn and is released; one acquired after the
// caller's context ended does not run fn, and is released too.
func TestWithLockAcquiredAsContextEnds(t *testing.T) {
	home := t.TempDir()
	saved, savedTimeout := tryLock, lockTimeout
	t.Cleanup(func() { tryLock, lockTimeout = saved, savedTimeout })
	tryLock = func(ctx context.Context, fl *flock.Flock) (bool, error) {
		if ok, err := fl.TryLock(); !ok || err != nil {
			return ok, err
		}
		<-ctx.Done() // acquired, and only then the context ends
		return true, nil
	}
	free := func() bool {
		t.Helper()
		other := flock.New(filepath.Join(home, "locks", "plugins.lock"))
		ok, err := other.TryLock()
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			_ = other.Unlock()
		}
		return ok
	}

	lockTimeout = 20 * time.Millisecond
	ran := false
	if err := WithLock(context.Background(), home, func() error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("acquired at the wait's deadline: ran %v, %v", ran, err)
	}
	if !free() {
		t.Fatal("lock still held after WithLock returned")
	}

	lockTimeout = savedTimeout
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	ran = false
	err := WithLock(ctx, home, func() error { ran = true; return nil })
	if err == nil || ran || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("acquired as the caller's context ended: ran %v, %v", ran, err)
	}
	if !free() {
		t.Fatal("lock still held after WithLock failed")
	}
}

// newerLock is a lock file as a newer bot-bottle (or a person) might leave
// it: comments, an unknown top-level attribute and block, unknown
// attributes and a nested block inside a plugin block.
const newerLock = `# This file is maintained by "bot-bottle plugins install"; edit it only to
# remove a plugin.

# pinned by the release team
future_setting = true

mirror "internal" {
  url = "https://mirror.example.com" # trailing comment
}

# docker: the stable build
plugin "docker" {
  version      = "1.0.0"
  protocol     = 1
  api_versions = ["1.0.0"]
  sha256       = "` + "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb" + `"
  signature    = "sig-docker" # kept
  provenance {
    url = "https://example.com/docker"
  }
}

// the skeleton example
plugin "skeleton" {
  version      = "0.1.0"
  protocol     = 1
  api_versions = ["1.0.0"]
  sha256       = "` + "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc" + `"
}

/* trailing notes */
`

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustContain(t *testing.T, text string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(text, w) {
			t.Errorf("lost %q:\n%s", w, text)
		}
	}
}

// TestEditKeepsWhatItDoesNotKnow: installing another plugin, re-installing
// one and removing one keep unknown attributes, blocks and comments.
func TestEditKeepsWhatItDoesNotKnow(t *testing.T) {
	home := t.TempDir()
	writeFile(t, Path(home), newerLock)
	kept := []string{
		"# pinned by the release team\nfuture_setting = true\n",
		"mirror \"internal\" {\n  url = \"https://mirror.example.com\" # trailing comment\n}\n",
		"signature    = \"sig-docker\" # kept\n",
		"  provenance {\n    url = \"https://example.com/docker\"\n  }\n",
		"// the skeleton example\nplugin \"skeleton\" {\n",
		"/* trailing notes */",
		"# This file is maintained",
	}

	// Unchanged: byte for byte.
	if err := Update(context.Background(), home, func(*Lock) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(Path(home)); string(got) != newerLock {
		t.Fatalf("a no-op update changed the file:\n%s", got)
	}

	// Another plugin: inserted in order, before skeleton's comment.
	add := Entry{Name: "local", Version: "0.0.1", Protocol: 1, APIVersions: []string{"1.0.0"}, SHA256: sum('a')}
	if err := Update(context.Background(), home, func(l *Lock) error { l.Entries[add.Name] = add; return nil }); err != nil {
		t.Fatal(err)
	}
	text := string(mustReadFile(t, Path(home)))
	mustContain(t, text, kept...)
	mustContain(t, text, "  provenance {\n    url = \"https://example.com/docker\"\n  }\n}\n\nplugin \"local\" {\n  version      = \"0.0.1\"\n  protocol     = 1\n  api_versions = [\"1.0.0\"]\n  sha256       = \""+sum('a')+"\"\n}\n\n// the skeleton example\n")

	// A re-install of docker: its known attributes change, the rest stays.
	if err := Update(context.Background(), home, func(l *Lock) error {
		e := l.Entries["docker"]
		e.Version, e.Protocol, e.APIVersions, e.SHA256 = "1.1.0", 2, []string{"1.0.0", "1.1.0"}, sum('d')
		l.Entries["docker"] = e
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	text = string(mustReadFile(t, Path(home)))
	mustContain(t, text, kept...)
	mustContain(t, text, "# docker: the stable build\nplugin \"docker\" {\n  version      = \"1.1.0\"\n  protocol     = 2\n  api_versions = [\"1.0.0\", \"1.1.0\"]\n  sha256       = \""+sum('d')+"\"\n")
	l, err := Read(Path(home))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(l.Names(), ","); got != "docker,local,skeleton" || l.Entries["docker"].SHA256 != sum('d') {
		t.Fatalf("entries %v %+v", got, l.Entries["docker"])
	}

	// Removing local takes its block and nothing else; the file is as
	// before it was added, apart from docker's new values.
	before := text
	if err := Update(context.Background(), home, func(l *Lock) error { delete(l.Entries, "local"); return nil }); err != nil {
		t.Fatal(err)
	}
	text = string(mustReadFile(t, Path(home)))
	mustContain(t, text, kept...)
	if strings.Contains(text, `plugin "local"`) || strings.Contains(text, "\n\n\n") {
		t.Fatalf("remove:\n%s", text)
	}
	want := strings.Replace(before, "plugin \"local\" {\n  version      = \"0.0.1\"\n  protocol     = 1\n  api_versions = [\"1.0.0\"]\n  sha256       = \""+sum('a')+"\"\n}\n\n", "", 1)
	if text != want {
		t.Fatalf("remove:\n%s\nwant:\n%s", text, want)
	}
	// Removing a commented block takes its comment along.
	if err := Update(context.Background(), home, func(l *Lock) error { delete(l.Entries, "skeleton"); return nil }); err != nil {
		t.Fatal(err)
	}
	text = string(mustReadFile(t, Path(home)))
	if strings.Contains(text, "skeleton") || !strings.Contains(text, "}\n\n/* trailing notes */") {
		t.Fatalf("remove skeleton:\n%s", text)
	}
	// A plugin that sorts last goes after the last plugin block, not after
	// the trailing comment.
	if err := Update(context.Background(), home, func(l *Lock) error {
		l.Entries["zz"] = Entry{Name: "zz", SHA256: sum('e')}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	text = string(mustReadFile(t, Path(home)))
	mustContain(t, text, kept[:4]...)
	if !strings.Contains(text, "  }\n}\n\nplugin \"zz\" {\n") || !strings.HasSuffix(text, "}\n\n/* trailing notes */\n") {
		t.Fatalf("add last:\n%s", text)
	}
}

// TestInsertOrder: new blocks go before the first that sorts after them,
// or at the end, each separated by one blank line, also in a file whose
// blocks are not separated by blank lines.
func TestInsertOrder(t *testing.T) {
	home := t.TempDir()
	writeFile(t, Path(home), "plugin \"b\" {\n  sha256 = \""+sum('b')+"\"\n}\nplugin \"d\" {\n  sha256 = \""+sum('d')+"\"\n}")
	for _, n := range []string{"e", "a", "c"} {
		if err := Update(context.Background(), home, func(l *Lock) error {
			l.Entries[n] = Entry{Name: n, SHA256: sum(n[0])}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	text := string(mustReadFile(t, Path(home)))
	var order []string
	for _, line := range strings.Split(text, "\n") {
		if name, ok := strings.CutPrefix(line, "plugin \""); ok {
			order = append(order, strings.TrimSuffix(name, "\" {"))
		}
	}
	if strings.Join(order, ",") != "a,b,c,d,e" || strings.Contains(text, "\n\n\n") || strings.HasPrefix(text, "\n") {
		t.Fatalf("order %v:\n%s", order, text)
	}
}

func mustReadFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRestore(t *testing.T) {
	home := t.TempDir()
	l, err := Read(Path(home))
	if err != nil || l.Source() != nil {
		t.Fatalf("%v %v", l.Source(), err)
	}
	l.Entries["a"] = Entry{Name: "a", SHA256: sum('a')}
	if err := Write(Path(home), l); err != nil {
		t.Fatal(err)
	}
	if err := Restore(Path(home), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(Path(home)); !os.IsNotExist(err) {
		t.Fatalf("no file before, one after restore: %v", err)
	}
	writeFile(t, Path(home), newerLock)
	l, err = Read(Path(home))
	if err != nil || string(l.Source()) != newerLock {
		t.Fatalf("source %q %v", l.Source(), err)
	}
	before := l.Source()
	l.Entries["a"] = Entry{Name: "a", SHA256: sum('a')}
	if err := Write(Path(home), l); err != nil {
		t.Fatal(err)
	}
	if err := Restore(Path(home), before); err != nil {
		t.Fatal(err)
	}
	if got := string(mustReadFile(t, Path(home))); got != newerLock {
		t.Fatalf("restored:\n%s", got)
	}
}
