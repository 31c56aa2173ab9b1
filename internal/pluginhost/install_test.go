package pluginhost

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/config"
	"github.com/bot-bottle/bot-bottle/internal/pluginlock"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// buildNamed builds internal/namedplugin calling itself name and speaking
// API api.
func buildNamed(tb testing.TB, dir, name, api string) string {
	tb.Helper()
	bin := filepath.Join(dir, "build-"+strings.NewReplacer("/", "_", " ", "_").Replace(name)+"-"+api)
	ld := "-X main.name=" + name + " -X main.api=" + api
	if out, err := exec.Command("go", "build", "-ldflags", ld, "-o", bin, "./internal/namedplugin").CombinedOutput(); err != nil {
		tb.Fatalf("build named plugin: %v\n%s", err, out)
	}
	return bin
}

func lockOf(t *testing.T, h *Host) *pluginlock.Lock {
	t.Helper()
	l, err := pluginlock.Read(pluginlock.Path(h.Home))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func pluginsDirNames(t *testing.T, h *Host) []string {
	t.Helper()
	entries, err := os.ReadDir(h.pluginsDir())
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestInstallLockAndRefuse(t *testing.T) {
	exeDir := t.TempDir()
	src := buildTestPlugin(t, exeDir) // also the fallback next to bot-bottle
	h := newHost(t, exeDir, nil)
	ctx := context.Background()

	in, err := h.Install(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := fileSHA256(src)
	if in.Name != "test" || in.Protocol != sdk.ProtocolVersion || in.SHA256 != want || in.Path != filepath.Join(h.Home, "plugins", BinaryPrefix+"test") {
		t.Fatalf("installed %+v", in)
	}
	if e, ok := lockOf(t, h).Get("test"); !ok || e.SHA256 != want || e.Version != in.Version || len(e.APIVersions) != 1 {
		t.Fatalf("lock entry %+v %v", e, ok)
	}
	f, err := h.Find("test")
	if err != nil || f.Source != SourceHome || f.Checksum != ChecksumAtStart || f.Locked != want || f.Actual != "" {
		t.Fatalf("find (which leaves the hashing to the start): %+v %v", f, err)
	}
	if hf, err := WithChecksum(f); err != nil || hf.Checksum != ChecksumLocked || hf.Actual != want {
		t.Fatalf("with checksum: %+v %v", hf, err)
	}
	p, err := h.StartFound(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()

	// Changed after install: refused by Find+StartFound, with the fix.
	other := buildNamed(t, t.TempDir(), "test", "1.0.0")
	data, _ := os.ReadFile(other)
	if err := os.WriteFile(in.Path, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Start(ctx, "test"); err == nil || !strings.Contains(err.Error(), "changed since it was installed") ||
		!strings.Contains(err.Error(), "locked "+want) || !strings.Contains(err.Error(), "bot-bottle plugins install") {
		t.Fatalf("changed binary: %v", err)
	}
	// Changed between Find and exec: SecureConfig catches it.
	if err := os.WriteFile(in.Path, mustRead(t, src), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err = h.Find("test")
	if err != nil || f.Checksum != ChecksumAtStart {
		t.Fatalf("restored: %+v %v", f, err)
	}
	replace(t, in.Path, data)
	if _, err := h.StartFound(ctx, f); err == nil || !strings.Contains(err.Error(), "changed since it was installed") {
		t.Fatalf("swap before exec: %v", err)
	}

	checks, err := h.Verify()
	if err != nil || len(checks) != 1 || checks[0].Status != VerifyChanged {
		t.Fatalf("verify changed: %+v %v", checks, err)
	}

	// Missing: refused, no fallback to the copy next to bot-bottle.
	if err := os.Remove(in.Path); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Find("test"); err == nil || !strings.Contains(err.Error(), "refusing to fall back") {
		t.Fatalf("missing: %v", err)
	}
	found, errs := h.Discover()
	if len(found) != 0 || len(errs) != 1 {
		t.Fatalf("discover with a missing locked binary: %+v %v", found, errs)
	}
	if checks, _ := h.Verify(); len(checks) != 1 || checks[0].Status != VerifyMissing {
		t.Fatalf("verify missing: %+v", checks)
	}

	// Re-install: fine again.
	if _, err := h.Install(ctx, src); err != nil {
		t.Fatal(err)
	}
	if checks, _ := h.Verify(); len(checks) != 1 || checks[0].Status != VerifyOK {
		t.Fatalf("verify after re-install: %+v", checks)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// replace swaps path's content by rename, as an attacker or an upgrade
// would (writing into a file that may be executing fails with ETXTBSY).
func replace(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestInstallFailuresLeaveNothing(t *testing.T) {
	dir := t.TempDir()
	h := newHost(t, "", nil)
	ctx := context.Background()
	text := filepath.Join(dir, "text")
	if err := os.WriteFile(text, []byte("hello\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "script")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho not a plugin\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ src, want string }{
		{text, "not a working bot-bottle plugin (fork/exec " + text + ": exec format error)"},
		{script, "not a working bot-bottle plugin"},
		{filepath.Join(dir, "nothere"), "no such file or directory"},
		{dir, "not a regular file"},
		{buildNamed(t, dir, "Bad_Name", "1.0.0"), `calls itself "Bad_Name"`},
		{buildNamed(t, dir, "future", "9.0.0"), "speaks API 9.0.0"},
	} {
		_, err := h.Install(ctx, tc.src)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), ".installing-") {
			t.Errorf("install %s: got %v, want one line with %q", tc.src, err, tc.want)
		}
		if names := pluginsDirNames(t, h); len(names) != 0 {
			t.Errorf("install %s left %v", tc.src, names)
		}
		if _, err := os.Stat(pluginlock.Path(h.Home)); !os.IsNotExist(err) {
			t.Errorf("install %s wrote a lock file", tc.src)
		}
	}
}

// TestConcurrentInstalls: plugins of different names installed at once
// keep both entries, and both binaries match their entries.
func TestConcurrentInstalls(t *testing.T) {
	dir := t.TempDir()
	names := []string{"alpha", "beta", "gamma"}
	srcs := map[string]string{}
	for _, n := range names {
		srcs[n] = buildNamed(t, dir, n, "1.0.0")
	}
	h := newHost(t, "", nil)
	ctx := context.Background()
	for round := range 3 {
		var wg sync.WaitGroup
		errs := make(chan error, len(names))
		for _, n := range names {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := h.Install(ctx, srcs[n])
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		l := lockOf(t, h)
		if got := l.Names(); strings.Join(got, ",") != strings.Join(names, ",") {
			t.Fatalf("round %d: entries %v", round, got)
		}
		checks, err := h.Verify()
		if err != nil || len(checks) != len(names) {
			t.Fatalf("verify: %+v %v", checks, err)
		}
		for _, c := range checks {
			if c.Status != VerifyOK {
				t.Fatalf("round %d: %+v", round, c)
			}
		}
		if got := pluginsDirNames(t, h); len(got) != len(names) {
			t.Fatalf("round %d: plugins dir %v", round, got)
		}
	}
}

func TestDevOverrides(t *testing.T) {
	for _, tc := range []struct{ in, err string }{
		{"", ""},
		{" a=/x/y , b=/z ,", ""},
		{"a", "is not name=/absolute/path"},
		{"a=", "is not name=/absolute/path"},
		{"=/x", "is not name=/absolute/path"},
		{"a=rel/x", "the path must be absolute"},
		{"A=/x", "invalid name"},
		{"a=/x,a=/y", `plugin "a" is given twice`},
	} {
		m, err := ParseDevOverrides(tc.in)
		if tc.err == "" {
			if err != nil {
				t.Errorf("%q: %v", tc.in, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.HasPrefix(err.Error(), EnvDevPlugins+": ") {
			t.Errorf("%q: got %v %v, want %q", tc.in, m, err, tc.err)
		}
	}

	// An override wins over a locked install and is not checked.
	exeDir := t.TempDir()
	src := buildTestPlugin(t, exeDir)
	dev := buildNamed(t, t.TempDir(), "test", "1.0.0")
	h := newHost(t, exeDir, nil)
	if _, err := h.Install(context.Background(), src); err != nil {
		t.Fatal(err)
	}
	h.Getenv = func(k string) string {
		if k == EnvDevPlugins {
			return "test=" + dev
		}
		return ""
	}
	p, err := h.Start(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Source != SourceDev || p.Path != dev || p.Info.Version != "0.0.1" {
		t.Fatalf("dev override: %+v", p)
	}
	found, errs := h.Discover()
	if len(errs) != 0 || len(found) != 1 || found[0].Source != SourceDev || found[0].Checksum != ChecksumUnchecked {
		t.Fatalf("discover: %+v %v", found, errs)
	}
}

// TestInstallKeepsUnknownLockContent: a lock file with content this
// bot-bottle does not know (a newer one wrote it, or a person) keeps it
// through an install of another plugin and a re-install of the same one.
func TestInstallKeepsUnknownLockContent(t *testing.T) {
	dir := t.TempDir()
	src := buildTestPlugin(t, dir)
	other := buildNamed(t, dir, "alpha", "1.0.0")
	h := newHost(t, "", nil)
	ctx := context.Background()
	lockFile := pluginlock.Path(h.Home)
	start := `# reviewed by the release team
future_setting = "x"

mirror "internal" {
  url = "https://mirror.example.com"
}

# the test backend
plugin "test" {
  version      = "0.0.0"
  protocol     = 1
  api_versions = ["1.0.0"]
  sha256       = "` + strings.Repeat("0", 64) + `"
  signature    = "sig" # from a newer bot-bottle
}
`
	if err := os.WriteFile(lockFile, []byte(start), 0o644); err != nil {
		t.Fatal(err)
	}
	kept := []string{"# reviewed by the release team\nfuture_setting = \"x\"\n", "mirror \"internal\" {\n  url = \"https://mirror.example.com\"\n}\n",
		"# the test backend\nplugin \"test\" {\n", "  signature    = \"sig\" # from a newer bot-bottle\n"}
	check := func(step string) string {
		t.Helper()
		text := string(mustRead(t, lockFile))
		for _, k := range kept {
			if !strings.Contains(text, k) {
				t.Fatalf("%s lost %q:\n%s", step, k, text)
			}
		}
		return text
	}

	in, err := h.Install(ctx, other)
	if err != nil {
		t.Fatal(err)
	}
	text := check("install of another plugin")
	if !strings.Contains(text, "plugin \"alpha\" {\n") || !strings.Contains(text, `"`+in.SHA256+`"`) || strings.Index(text, `plugin "alpha"`) > strings.Index(text, "# the test backend") {
		t.Fatalf("alpha entry:\n%s", text)
	}

	in, err = h.Install(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	text = check("re-install")
	if !strings.Contains(text, "  sha256       = \""+in.SHA256+"\"\n  signature") || strings.Contains(text, strings.Repeat("0", 64)) {
		t.Fatalf("test entry not updated in place:\n%s", text)
	}
	if checks, err := h.Verify(); err != nil || len(checks) != 2 || checks[0].Status != VerifyOK || checks[1].Status != VerifyOK {
		t.Fatalf("verify: %+v %v", checks, err)
	}
}

// TestFailedReinstallKeepsPrevious: when the lock file cannot be written,
// a re-install leaves the previous binary and lock file exactly as they
// were (it used to delete the binary), and a first install leaves neither
// binary nor entry. The failure is injected (permissions do not stop root);
// once it fails before the lock file is replaced, once after.
func TestFailedReinstallKeepsPrevious(t *testing.T) {
	dir := t.TempDir()
	src := buildTestPlugin(t, dir)
	newer := buildNamed(t, dir, "test", "1.0.0")
	fresh := buildNamed(t, dir, "alpha", "1.0.0")
	h := newHost(t, "", nil)
	ctx := context.Background()
	in, err := h.Install(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	binBefore := mustRead(t, in.Path)
	lockBefore := mustRead(t, pluginlock.Path(h.Home))

	t.Cleanup(func() { writeLock = pluginlock.Write })
	for _, tc := range []struct {
		name  string
		write func(string, *pluginlock.Lock) error
	}{
		{"before the rename", func(string, *pluginlock.Lock) error { return errors.New("disk full") }},
		{"after the rename", func(p string, l *pluginlock.Lock) error {
			if err := pluginlock.Write(p, l); err != nil {
				return err
			}
			return errors.New("fsync: input/output error")
		}},
	} {
		writeLock = tc.write
		_, err := h.Install(ctx, newer)
		if err == nil || !strings.HasPrefix(err.Error(), "install "+newer+": ") {
			t.Fatalf("%s: re-install: %v", tc.name, err)
		}
		if got := mustRead(t, in.Path); !bytes.Equal(got, binBefore) {
			t.Fatalf("%s: the installed binary changed", tc.name)
		}
		if got := mustRead(t, pluginlock.Path(h.Home)); !bytes.Equal(got, lockBefore) {
			t.Fatalf("%s: the lock file changed:\n%s", tc.name, got)
		}
		if names := pluginsDirNames(t, h); strings.Join(names, ",") != BinaryPrefix+"test" {
			t.Fatalf("%s: plugins dir %v", tc.name, names)
		}
		if checks, err := h.Verify(); err != nil || len(checks) != 1 || checks[0].Status != VerifyOK {
			t.Fatalf("%s: verify %+v %v", tc.name, checks, err)
		}
		p, err := h.Start(ctx, "test")
		if err != nil {
			t.Fatalf("%s: start the previous install: %v", tc.name, err)
		}
		p.Close()

		if _, err := h.Install(ctx, fresh); err == nil {
			t.Fatalf("%s: first install of alpha did not fail", tc.name)
		}
		if names := pluginsDirNames(t, h); strings.Join(names, ",") != BinaryPrefix+"test" {
			t.Fatalf("%s: first install left %v", tc.name, names)
		}
		if got := mustRead(t, pluginlock.Path(h.Home)); !bytes.Equal(got, lockBefore) {
			t.Fatalf("%s: first install changed the lock file:\n%s", tc.name, got)
		}
	}

	// A hidden copy left by a crashed install does not get in the way.
	if err := os.WriteFile(filepath.Join(h.pluginsDir(), ".previous-"+BinaryPrefix+"test"), []byte("stale"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeLock = pluginlock.Write
	if in, err = h.Install(ctx, newer); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, in.Path); !bytes.Equal(got, mustRead(t, newer)) {
		t.Fatal("re-install did not replace the binary")
	}
	if names := pluginsDirNames(t, h); strings.Join(names, ",") != BinaryPrefix+"test" {
		t.Fatalf("plugins dir after re-install %v", names)
	}
}

// TestPinAndLockDisagree: a plugins.hcl sha256 pin that differs from the
// lock entry of the installed plugin is refused at start (before anything
// is hashed), naming both files and the fix; plugins install refuses a
// binary that differs from the pin for its name, unless the pin is for a
// path of its own.
func TestPinAndLockDisagree(t *testing.T) {
	dir := t.TempDir()
	src := buildTestPlugin(t, dir)
	newer := buildNamed(t, dir, "test", "1.0.0")
	cfg := &config.Plugins{File: "/cfg/plugins.hcl", Plugins: map[string]config.PluginBlock{}}
	h := newHost(t, "", cfg)
	ctx := context.Background()
	in, err := h.Install(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	newerSum, _ := fileSHA256(newer)

	// Pinned to another binary, with the locked one installed.
	cfg.Plugins["test"] = config.PluginBlock{Name: "test", SHA256: newerSum}
	f, err := h.Find("test")
	if err != nil || f.Pinned != newerSum || f.Locked != in.SHA256 {
		t.Fatalf("find: %+v %v", f, err)
	}
	_, err = h.StartFound(ctx, f)
	want := `plugin "test": /cfg/plugins.hcl pins sha256 ` + newerSum + `, but ` + pluginlock.Path(h.Home) + ` locks the installed ` + in.Path + ` at sha256 ` + in.SHA256 +
		`; refusing to run it. Install the binary you pinned (bot-bottle plugins install <path-to-binary>), or change the pin in /cfg/plugins.hcl to the locked sha256`
	if err == nil || err.Error() != want {
		t.Fatalf("start with pin ≠ lock:\n got %v\nwant %s", err, want)
	}
	if hf, _ := WithChecksum(f); hf.Checksum != ChecksumMismatch {
		t.Fatalf("listing: %+v", hf)
	}

	// Installing a binary other than the pinned one: refused, nothing
	// changes.
	cfg.Plugins["test"] = config.PluginBlock{Name: "test", SHA256: strings.Repeat("ab", 32)}
	lockBefore, binBefore := mustRead(t, pluginlock.Path(h.Home)), mustRead(t, in.Path)
	_, err = h.Install(ctx, newer)
	if err == nil || !strings.Contains(err.Error(), "its sha256 "+newerSum+" differs from the one /cfg/plugins.hcl pins for plugin \"test\" ("+strings.Repeat("ab", 32)+"); refusing to install it") {
		t.Fatalf("install against the pin: %v", err)
	}
	if !bytes.Equal(mustRead(t, pluginlock.Path(h.Home)), lockBefore) || !bytes.Equal(mustRead(t, in.Path), binBefore) ||
		strings.Join(pluginsDirNames(t, h), ",") != BinaryPrefix+"test" {
		t.Fatal("a refused install changed something")
	}

	// Installing the pinned binary fixes both.
	cfg.Plugins["test"] = config.PluginBlock{Name: "test", SHA256: newerSum}
	if _, err := h.Install(ctx, newer); err != nil {
		t.Fatal(err)
	}
	p, err := h.Start(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	p.Close()

	// A pin for a path of its own does not apply to the installed copy.
	cfg.Plugins["test"] = config.PluginBlock{Name: "test", Path: newer, SHA256: newerSum}
	in, err = h.Install(ctx, src)
	if err != nil || len(in.Notes) != 1 || !strings.Contains(in.Notes[0], "wins over the installed copy") {
		t.Fatalf("install with a pinned path: %+v %v", in, err)
	}
}

// TestStartWhileBriefWriter: a binary some process still holds open for
// writing cannot be exec'd (ETXTBSY); when the writer lets go a moment
// later — a fork that inherited an install's copy, until its own exec —
// the start goes through instead of failing the install.
func TestStartWhileBriefWriter(t *testing.T) {
	bin := buildNamed(t, t.TempDir(), "busy", "1.0.0")
	w, err := os.OpenFile(bin, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	released := make(chan struct{})
	time.AfterFunc(40*time.Millisecond, func() { w.Close(); close(released) })
	h := newHost(t, "", nil)
	p, err := h.startBinary(context.Background(), "busy", bin, "", nil)
	<-released
	if err != nil {
		t.Fatalf("start while a writer held the binary for 40 ms: %v", err)
	}
	p.Close()

	// A writer that does not let go is an error that says so.
	w, err = os.OpenFile(bin, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := h.startBinary(context.Background(), "busy", bin, "", nil); !errors.Is(err, syscall.ETXTBSY) || !strings.Contains(err.Error(), "text file busy") {
		t.Fatalf("start while a writer holds the binary: %v, want text file busy", err)
	}
}
