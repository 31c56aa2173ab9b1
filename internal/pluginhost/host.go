// Package pluginhost finds backend plugin binaries, installs them, verifies
// them (against plugins.hcl pins and plugins.lock.hcl), starts them over
// go-plugin and turns their failures into clear errors. It is the only code
// in the core that knows plugins are processes.
package pluginhost

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/bot-bottle/bot-bottle/internal/config"
	"github.com/bot-bottle/bot-bottle/internal/pluginlock"
	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/host"
)

// BinaryPrefix starts the file name of every backend plugin.
const BinaryPrefix = "bot-bottle-plugin-"

// ErrNotInstalled is wrapped by Find when no binary of that name exists.
var ErrNotInstalled = errors.New("plugin not installed")

// EnvDevPlugins names development overrides: comma-separated name=/abs/path
// pairs that win over every other source and are never checksum-checked.
const EnvDevPlugins = "BOT_BOTTLE_DEV_PLUGINS"

// Where a plugin binary was found (Found.Source).
const (
	SourceDev        = "dev override"
	SourceConfigPath = "plugins.hcl path"
	SourceHome       = "$BOT_BOTTLE_HOME/plugins"
	SourceExeDir     = "next to bot-bottle"
	SourcePath       = "$PATH"
	SourceInProcess  = "in process" // served by this process: tests only
)

// What is known of a binary's checksum (Found.Checksum).
const (
	ChecksumOK        = "ok"               // matches the plugins.hcl sha256 pin
	ChecksumMismatch  = "mismatch"         // differs from the plugins.hcl pin: refused
	ChecksumNotPinned = "not pinned"       // outside $BOT_BOTTLE_HOME/plugins, no pin
	ChecksumLocked    = "locked"           // matches plugins.lock.hcl
	ChecksumChanged   = "changed"          // differs from plugins.lock.hcl: refused
	ChecksumNotLocked = "not locked"       // in $BOT_BOTTLE_HOME/plugins but not in the lock file
	ChecksumUnchecked = "not checked"      // a development override
	ChecksumAtStart   = "checked at start" // pinned or locked, not hashed yet
)

// SupportedAPIVersions are the sdk API major versions this core can drive.
var supportedAPIMajors = []string{"1"}

// Host finds and starts plugins.
type Host struct {
	Home   string          // BOT_BOTTLE_HOME
	Config *config.Plugins // plugins.hcl
	ExeDir string          // directory of the running bot-bottle binary
	Logger hclog.Logger    // plugin logs appear under Logger.Named(plugin)
	Getenv func(string) string

	// clientConfig is host.ClientConfig; benchmarks measure
	// host.AutoMTLSClientConfig beside it.
	clientConfig func(*exec.Cmd, hclog.Logger) *plugin.ClientConfig
	// noVerifyCache makes every start of a locked or pinned plugin hash it
	// (the benchmark's cold start; Install's candidate, whose name is a
	// temporary one).
	noVerifyCache bool
	// now is the clock the verification cache compares change times with;
	// nil is time.Now. Tests move it.
	now func() time.Time
	// hashed, when set, is told of every full hash a start makes: how
	// tests see whether the cache stood in for one.
	hashed func(path string)
}

// Found is one plugin binary on disk.
type Found struct {
	Name   string `json:"name"`
	Path   string `json:"path"`
	Source string `json:"source"`
	// Pinned is the sha256 plugins.hcl pins, if any; Locked the one
	// plugins.lock.hcl records for a binary in $BOT_BOTTLE_HOME/plugins;
	// Actual is the binary's.
	Pinned   string `json:"sha256_pinned,omitempty"`
	Locked   string `json:"sha256_locked,omitempty"`
	Actual   string `json:"sha256"`
	Checksum string `json:"checksum"` // one of the Checksum* values
}

func (h *Host) getenv(k string) string {
	if h.Getenv != nil {
		return h.Getenv(k)
	}
	return os.Getenv(k)
}

type searchDir struct{ dir, source string }

func (h *Host) searchDirs() []searchDir {
	dirs := []searchDir{{h.pluginsDir(), SourceHome}}
	if h.ExeDir != "" {
		dirs = append(dirs, searchDir{h.ExeDir, SourceExeDir})
	}
	for _, d := range filepath.SplitList(h.getenv("PATH")) {
		if d != "" {
			dirs = append(dirs, searchDir{d, SourcePath})
		}
	}
	return dirs
}

// pluginsDir is $BOT_BOTTLE_HOME/plugins, where install puts binaries.
func (h *Host) pluginsDir() string { return filepath.Join(h.Home, "plugins") }

// readLock reads plugins.lock.hcl (empty when there is none).
func (h *Host) readLock() (*pluginlock.Lock, error) {
	return pluginlock.Read(pluginlock.Path(h.Home))
}

// DevOverrides parses BOT_BOTTLE_DEV_PLUGINS: plugin name → absolute path.
func (h *Host) DevOverrides() (map[string]string, error) {
	return ParseDevOverrides(h.getenv(EnvDevPlugins))
}

// ParseDevOverrides parses a BOT_BOTTLE_DEV_PLUGINS value: comma-separated
// name=/abs/path pairs. Empty items are ignored; anything else malformed is
// a one-line error.
func ParseDevOverrides(v string) (map[string]string, error) {
	out := map[string]string{}
	for item := range strings.SplitSeq(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, path, ok := strings.Cut(item, "=")
		name, path = strings.TrimSpace(name), strings.TrimSpace(path)
		switch {
		case !ok || name == "" || path == "":
			return nil, fmt.Errorf("%s: %q is not name=/absolute/path (e.g. docker=/home/me/src/bot-bottle-plugin-docker)", EnvDevPlugins, item)
		case config.ValidName(name) != nil:
			return nil, fmt.Errorf("%s: %q: %v", EnvDevPlugins, item, config.ValidName(name))
		case !filepath.IsAbs(path):
			return nil, fmt.Errorf("%s: %q: the path must be absolute", EnvDevPlugins, item)
		}
		if prev, dup := out[name]; dup {
			return nil, fmt.Errorf("%s: plugin %q is given twice (%s and %s)", EnvDevPlugins, name, prev, path)
		}
		out[name] = filepath.Clean(path)
	}
	return out, nil
}

func (h *Host) devFound(name, path string) (Found, error) {
	if err := isExecutable(path); err != nil {
		return Found{}, fmt.Errorf("plugin %q: development override %s from %s: %w", name, path, EnvDevPlugins, err)
	}
	return Found{Name: name, Path: path, Source: SourceDev, Checksum: ChecksumUnchecked}, nil
}

// lockedMissing is the error for a locked plugin whose installed binary is
// gone: it is refused rather than replaced by a same-named binary found
// elsewhere, which nobody checked.
func (h *Host) lockedMissing(name, path string, err error) error {
	return fmt.Errorf("plugin %q: %s locks it, but its installed binary %s is unusable (%v); refusing to fall back to another copy. Re-install it: bot-bottle plugins install <path-to-binary>",
		name, pluginlock.FileName, path, unwrapPathError(err))
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Find locates the binary of plugin name: a development override from
// BOT_BOTTLE_DEV_PLUGINS, then path in plugins.hcl, then
// $BOT_BOTTLE_HOME/plugins, then next to bot-bottle, then $PATH. A plugin
// that plugins.lock.hcl locks must be in $BOT_BOTTLE_HOME/plugins.
func (h *Host) Find(name string) (Found, error) {
	dev, err := h.DevOverrides()
	if err != nil {
		return Found{}, err
	}
	if p, ok := dev[name]; ok {
		return h.devFound(name, p)
	}
	block := h.block(name)
	if block.Path != "" {
		if err := isExecutable(block.Path); err != nil {
			return Found{}, fmt.Errorf("plugin %q: path %s from %s: %w", name, block.Path, h.Config.File, err)
		}
		return found(name, block.Path, SourceConfigPath, block.SHA256, ""), nil
	}
	lock, err := h.readLock()
	if err != nil {
		return Found{}, err
	}
	entry, locked := lock.Get(name)
	var looked []string
	for _, d := range h.searchDirs() {
		p := filepath.Join(d.dir, BinaryPrefix+name)
		if d.source == SourceHome && locked {
			if err := isExecutable(p); err != nil {
				return Found{}, h.lockedMissing(name, p, err)
			}
			return found(name, p, d.source, block.SHA256, entry.SHA256), nil
		}
		if isExecutable(p) == nil {
			return found(name, p, d.source, block.SHA256, ""), nil
		}
		if len(looked) == 0 || looked[len(looked)-1] != d.source {
			looked = append(looked, d.source)
		}
	}
	return Found{}, &notFoundError{fmt.Sprintf("plugin %q not found: no executable %s%s in %s (set path in a plugin %q block of plugins.hcl, or install it in %s)",
		name, BinaryPrefix, name, strings.Join(looked, ", "), name, filepath.Join(h.Home, "plugins"))}
}

// Discover lists every plugin binary it can find, the first of each name
// winning, plus development overrides and plugins named in plugins.hcl with
// a path. A locked plugin whose binary is gone, like a broken lock file, is
// an error, and hides same-named binaries elsewhere as it does for Find.
func (h *Host) Discover() ([]Found, []error) {
	seen := map[string]bool{}
	var out []Found
	var errs []error
	dev, err := h.DevOverrides()
	if err != nil {
		errs = append(errs, err)
	}
	for _, n := range sortedNames(dev) {
		seen[n] = true
		f, err := h.devFound(n, dev[n])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, f)
	}
	if h.Config != nil {
		names := make([]string, 0, len(h.Config.Plugins))
		for n, b := range h.Config.Plugins {
			if b.Path != "" {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		for _, n := range names {
			if seen[n] {
				continue
			}
			f, err := h.Find(n)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			seen[n] = true
			out = append(out, f)
		}
	}
	lock, lockErr := h.readLock()
	if lockErr != nil {
		errs = append(errs, lockErr)
	}
	for _, n := range lock.Names() {
		if seen[n] {
			continue
		}
		p := filepath.Join(h.pluginsDir(), BinaryPrefix+n)
		if err := isExecutable(p); err != nil {
			seen[n] = true
			errs = append(errs, h.lockedMissing(n, p, err))
		}
	}
	for _, d := range h.searchDirs() {
		entries, err := os.ReadDir(d.dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			n, ok := strings.CutPrefix(e.Name(), BinaryPrefix)
			if !ok || n == "" || seen[n] {
				continue
			}
			if d.source == SourceHome && lockErr != nil {
				// Unverifiable while the lock file is broken; and no
				// same-named binary elsewhere stands in for it.
				seen[n] = true
				continue
			}
			p := filepath.Join(d.dir, e.Name())
			if isExecutable(p) != nil {
				continue
			}
			seen[n] = true
			var locked string
			if d.source == SourceHome {
				entry, _ := lock.Get(n)
				locked = entry.SHA256
			}
			out = append(out, found(n, p, d.source, h.block(n).SHA256, locked))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, errs
}

func (h *Host) block(name string) config.PluginBlock {
	if h.Config == nil {
		return config.PluginBlock{Name: name}
	}
	return h.Config.Block(name)
}

// found describes a plugin binary without hashing it: hashing costs about
// what starting the plugin does, and the start hashes a pinned or locked
// binary anyway, once, through the descriptor it then execs (openVerified).
// WithChecksum hashes for listings.
func found(name, path, source, pinned, locked string) Found {
	f := Found{Name: name, Path: path, Source: source, Pinned: strings.ToLower(pinned), Locked: locked, Checksum: ChecksumNotPinned}
	if source == SourceHome {
		f.Checksum = ChecksumNotLocked
	}
	if pinned != "" || locked != "" {
		f.Checksum = ChecksumAtStart
	}
	return f
}

// classify sets Checksum from a computed Actual.
func (f *Found) classify() {
	switch {
	case f.Locked == "" && f.Pinned == "":
	case f.Locked != "" && f.Locked != f.Actual:
		f.Checksum = ChecksumChanged
	case f.Pinned != "" && f.Pinned != f.Actual:
		f.Checksum = ChecksumMismatch
	case f.Locked != "":
		f.Checksum = ChecksumLocked
	default:
		f.Checksum = ChecksumOK
	}
}

// expectedSum is the sha256 go-plugin must see right before exec, or "".
func (f Found) expectedSum() string {
	if f.Locked != "" {
		return f.Locked
	}
	return f.Pinned
}

// refusal is why f must not run, or nil: a plugins.hcl pin and a
// plugins.lock.hcl entry that disagree (decided without hashing, so also at
// start), or a computed checksum that differs from either.
func (h *Host) refusal(f Found) error {
	if f.Pinned != "" && f.Locked != "" && f.Pinned != f.Locked {
		return h.pinLockConflictError(f)
	}
	switch f.Checksum {
	case ChecksumMismatch:
		return pinMismatchError(f.Name, f.Path, f.Actual, f.Pinned)
	case ChecksumChanged:
		return changedError(f.Name, f.Path, f.Actual, f.Locked)
	}
	return nil
}

func pinMismatchError(name, path, actual, pinned string) error {
	return fmt.Errorf("plugin %q: checksum mismatch: %s has sha256 %s but plugins.hcl pins %s; refusing to run it", name, path, actual, pinned)
}

func (h *Host) pinLockConflictError(f Found) error {
	return fmt.Errorf("plugin %q: %s pins sha256 %s, but %s locks the installed %s at sha256 %s; refusing to run it. Install the binary you pinned (bot-bottle plugins install <path-to-binary>), or change the pin in %s to the locked sha256",
		f.Name, h.configFile(), f.Pinned, pluginlock.Path(h.Home), f.Path, f.Locked, h.configFile())
}

// configFile names plugins.hcl in messages.
func (h *Host) configFile() string {
	if h.Config == nil || h.Config.File == "" {
		return "plugins.hcl"
	}
	return h.Config.File
}

func changedError(name, path, actual, locked string) error {
	return fmt.Errorf("plugin %q: %s changed since it was installed (sha256 %s, locked %s); refusing to run it. If you meant to change it, re-lock it: bot-bottle plugins install <path-to-new-binary>",
		name, path, actual, locked)
}

func sortedNames(m map[string]string) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (f *Found) hash() error {
	if f.Actual != "" {
		return nil
	}
	sum, err := fileSHA256(f.Path)
	if err != nil {
		return fmt.Errorf("plugin %q: %w", f.Name, err)
	}
	f.Actual = sum
	return nil
}

// WithChecksum returns f with its binary's sha256 filled in and, when it
// is pinned or locked, its Checksum status decided.
func WithChecksum(f Found) (Found, error) {
	if err := f.hash(); err != nil {
		return f, err
	}
	f.classify()
	return f, nil
}

func isExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return errors.New("is a directory")
	}
	if fi.Mode()&0o111 == 0 {
		return errors.New("is not executable")
	}
	return nil
}

// verified is a plugin binary open for exec whose content had the expected
// sha256 when it was read through this descriptor, or whose stat the
// verification cache vouches for (see verifyCache).
type verified struct {
	f      *os.File
	before os.FileInfo
	script bool // "#!": its interpreter opens it by name, so it cannot run from f

	path      string
	sum       string
	cache     verifyCache
	stamp     fileStamp
	stamped   bool      // stamp is known (Linux)
	cached    bool      // the cache stood in for the hash
	hashStart time.Time // when the full hash began
}

// checksumError is a binary whose sha256 is not the expected one.
type checksumError struct{ actual string }

func (e *checksumError) Error() string { return "checksum mismatch: sha256 " + e.actual }
func (e *checksumError) Is(target error) bool {
	return target == plugin.ErrChecksumsDoNotMatch
}

// openVerified opens path and hashes it through the descriptor it will be
// exec'd from: the sha256 is computed once per start, on the bytes that
// run, and no rename or replacement of path after the check can run others.
// When the cache holds a record of this inode, unchanged, with sha256 sum,
// it is not hashed again.
func openVerified(path, sum string, cache verifyCache) (*verified, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	before, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	v := &verified{f: f, before: before, path: path, sum: sum, cache: cache}
	v.stamp, v.stamped = stampOf(v)
	var head [2]byte
	if v.stamped && cache.lookup(path, sum, v.stamp) {
		n, _ := f.ReadAt(head[:], 0)
		v.cached, v.script = true, string(head[:n]) == "#!"
		return v, nil
	}
	v.hashStart = cache.now()
	if cache.hashed != nil {
		cache.hashed(path)
	}
	h := sha256.New()
	n, _ := io.ReadFull(f, head[:])
	h.Write(head[:n])
	if _, err := io.Copy(h, f); err != nil {
		f.Close()
		return nil, fmt.Errorf("hash %s: %w", path, err)
	}
	if actual := hex.EncodeToString(h.Sum(nil)); actual != sum {
		f.Close()
		return nil, &checksumError{actual: actual}
	}
	v.script = string(head[:n]) == "#!"
	return v, nil
}

// remember records a full hash in the cache once the plugin ran and the
// file was found unchanged (the stat it records is then the one of the
// bytes hashed). A cache that cannot be written costs the next start a
// hash, nothing else.
func (v *verified) remember(logger hclog.Logger) {
	if v.cached || !v.stamped {
		return
	}
	if _, err := v.cache.remember(v.path, v.sum, v.stamp, v.hashStart); err != nil && logger != nil {
		logger.Debug("plugin verification cache not written", "error", err)
	}
}

// unchanged fails when the file changed since it was opened (and hashed,
// or vouched for by the verification cache): a write in place through
// another descriptor before the exec (the change time, which no user can
// set back, moves with every write), or its name taken by another file
// (which is not what ran, but someone is changing the plugin under a
// start: refuse rather than guess).
func (v *verified) unchanged() error {
	after, err := v.f.Stat()
	if err != nil {
		return err
	}
	cb, okb := changeTime(v.before)
	ca, oka := changeTime(after)
	if after.Size() != v.before.Size() || !after.ModTime().Equal(v.before.ModTime()) || okb != oka || ca != cb {
		return fmt.Errorf("%s changed while it was being started (written to or replaced); refusing to run it", v.f.Name())
	}
	return nil
}

func (v *verified) Close() {
	if v != nil && v.f != nil {
		v.f.Close()
		v.f = nil
	}
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Plugin is a running plugin process.
type Plugin struct {
	Name    string
	Path    string
	Source  string // Found.Source: where the binary came from
	Info    sdk.Info
	Backend *host.Client
	// Protocol is the go-plugin protocol version negotiated.
	Protocol int
	client   *plugin.Client
	// closeFn and exitedFn stand in for client when the backend is served
	// in this process (tests through backendtest.InProcess).
	closeFn  func()
	exitedFn func() bool
}

// InProcess wraps a backend served in this process (backendtest.InProcess)
// as a Plugin named name, asking it for its Info as Start does. close ends
// it; exited reports whether it is gone.
func InProcess(ctx context.Context, name string, c *host.Client, close func(), exited func() bool) (*Plugin, error) {
	ictx, cancel := context.WithTimeout(ctx, InfoTimeout)
	defer cancel()
	info, err := c.Info(ictx)
	if err != nil {
		return nil, fmt.Errorf("%s plugin: %w", name, err)
	}
	return &Plugin{Name: name, Path: "(in process)", Source: SourceInProcess, Info: info, Backend: c,
		Protocol: sdk.ProtocolVersion, closeFn: close, exitedFn: exited}, nil
}

// Close stops the plugin process and waits for it.
func (p *Plugin) Close() {
	switch {
	case p == nil:
	case p.client != nil:
		p.client.Kill()
	case p.closeFn != nil:
		p.closeFn()
	}
}

// Exited reports whether the plugin process is gone.
func (p *Plugin) Exited() bool {
	if p.client == nil {
		return p.exitedFn != nil && p.exitedFn()
	}
	return p.client.Exited()
}

// Pid is the plugin's process id, or 0.
func (p *Plugin) Pid() int {
	if p.client == nil {
		return 0
	}
	if rc := p.client.ReattachConfig(); rc != nil {
		return rc.Pid
	}
	return 0
}

// Wrap prefixes err with the plugin's name, the way every plugin error
// reaches the user.
func (p *Plugin) Wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s plugin: %w", p.Name, err)
}

// InfoTimeout bounds the handshake and the Info call.
const InfoTimeout = 15 * time.Second

// Start finds, verifies and starts plugin name, and asks it for its Info.
func (h *Host) Start(ctx context.Context, name string) (*Plugin, error) {
	f, err := h.Find(name)
	if err != nil {
		return nil, err
	}
	return h.StartFound(ctx, f)
}

// StartFound starts a plugin found by Find or Discover. A binary whose
// sha256 differs from its lock entry or plugins.hcl pin is refused, as is
// one whose pin and lock entry differ. The sum is computed once, on the
// bytes that are exec'd (see startBinary).
func (h *Host) StartFound(ctx context.Context, f Found) (*Plugin, error) {
	if err := h.refusal(f); err != nil {
		return nil, err
	}
	p, err := h.startBinary(ctx, f.Name, f.Path, f.expectedSum(), h.block(f.Name).Config)
	if err != nil {
		var se *startError
		if !errors.As(err, &se) {
			return nil, err
		}
		switch {
		case se.step == stepStart && errors.Is(se.err, plugin.ErrChecksumsDoNotMatch):
			var ce *checksumError
			actual := ""
			if errors.As(se.err, &ce) {
				actual = ce.actual
			} else {
				actual, _ = fileSHA256(f.Path)
			}
			if f.Locked != "" {
				return nil, changedError(f.Name, f.Path, actual, f.Locked)
			}
			return nil, pinMismatchError(f.Name, f.Path, actual, f.Pinned)
		case se.step == stepStart:
			return nil, fmt.Errorf("%s plugin (%s): start: %w", f.Name, f.Path, se.err)
		default:
			return nil, fmt.Errorf("%s plugin: %w", f.Name, se.err)
		}
	}
	p.Source = f.Source
	return p, nil
}

// The steps of starting a plugin, for errors that say which one failed.
const (
	stepStart = "start" // exec, handshake, gRPC connection
	stepInfo  = "info"  // the Info call
	stepAPI   = "api"   // an API version this core cannot drive
)

type startError struct {
	step string
	err  error
}

func (e *startError) Error() string { return e.err.Error() }
func (e *startError) Unwrap() error { return e.err }

// renamedError is an error whose text names another path than the one
// exec'd; errors.Is still sees its cause.
type renamedError struct {
	msg string
	err error
}

func (e *renamedError) Error() string { return e.msg }
func (e *renamedError) Unwrap() error { return e.err }

// startBinary execs the plugin at path, completes the handshake and asks it
// for its Info. name only labels logs and the Plugin; sum, when set, is the
// sha256 the binary must have: it is hashed through a descriptor that is
// then exec'd (/proc/self/fd/N), so what runs is what was hashed; where
// that cannot be (no /proc, a script), go-plugin's SecureConfig hashes the
// path right before exec. Failures are *startError.
//
// An exec can fail with ETXTBSY for a moment after the binary was written
// (an install's copy): a process forked at the same time by another
// goroutine holds the copy's write descriptor until its own exec closes it
// (golang.org/issue/22315). That is retried, briefly; nothing else is.
func (h *Host) startBinary(ctx context.Context, name, path, sum string, config []byte) (*Plugin, error) {
	delay := 5 * time.Millisecond
	for attempt := 1; ; attempt++ {
		p, err := h.startBinaryOnce(ctx, name, path, sum, config)
		if err == nil || !errors.Is(err, syscall.ETXTBSY) || attempt == textBusyAttempts {
			return p, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(delay):
		}
		delay *= 2
	}
}

// textBusyAttempts bounds the ETXTBSY retries: 5 ms doubling, about 0.3 s
// in all, far longer than a fork-to-exec window.
const textBusyAttempts = 7

func (h *Host) startBinaryOnce(ctx context.Context, name, path, sum string, config []byte) (*Plugin, error) {
	logger := h.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	cmd := exec.Command(path)
	cmd.Env = append(os.Environ(), sdk.EnvLogLevel+"="+logLevelName(logger))
	if id := HomeID(h.Home); id != "" {
		cmd.Env = append(cmd.Env, sdk.EnvHomeID+"="+id)
	}
	if len(config) > 0 {
		cmd.Env = append(cmd.Env, sdk.EnvPluginConfig+"="+string(config))
	}
	cmd.SysProcAttr = pluginSysProcAttr()
	clientConfig := h.clientConfig
	if clientConfig == nil {
		clientConfig = host.ClientConfig
	}
	cfg := clientConfig(cmd, logger.Named(name))
	cfg.StartTimeout = InfoTimeout
	cfg.UnixSocketConfig = &plugin.UnixSocketConfig{TempDir: shortTempDir()}
	var exe *verified
	if sum != "" {
		b, err := hex.DecodeString(sum)
		if err != nil || len(b) != sha256.Size {
			return nil, &startError{stepStart, fmt.Errorf("invalid expected sha256 %q", sum)}
		}
		if exe, err = openVerified(path, sum, h.verifyCache()); err != nil {
			return nil, &startError{stepStart, err}
		}
		defer exe.Close()
		if p, ok := execPathOf(exe.f); ok && !exe.script {
			cmd.Path = p // cmd.Args[0] stays the plugin's path
		} else {
			exe.Close()
			exe = nil
			cfg.SecureConfig = &plugin.SecureConfig{Checksum: b, Hash: sha256.New()}
		}
	}
	pc := plugin.NewClient(cfg)
	client, proto, err := host.Dispense(pc)
	if err != nil {
		pc.Kill()
		if cmd.Path != path && strings.Contains(err.Error(), cmd.Path) {
			// An exec error names what was exec'd; the user knows the path.
			err = &renamedError{strings.ReplaceAll(err.Error(), cmd.Path, path), err}
		}
		return nil, &startError{stepStart, err}
	}
	if exe != nil {
		// The plugin runs now, and the kernel refuses writes to a running
		// executable: unchanged since it was hashed, it ran what was hashed.
		if err := exe.unchanged(); err != nil {
			pc.Kill()
			return nil, &startError{stepStart, err}
		}
		exe.remember(logger)
	}
	p := &Plugin{Name: name, Path: path, Backend: client, Protocol: proto, client: pc}
	ictx, cancel := context.WithTimeout(ctx, InfoTimeout)
	defer cancel()
	info, err := client.Info(ictx)
	if err != nil {
		p.Close()
		return nil, &startError{stepInfo, err}
	}
	if !apiCompatible(info.APIVersions) {
		p.Close()
		return nil, &startError{stepAPI, fmt.Errorf("speaks API %s, this bot-bottle speaks %s.x; rebuild the plugin against a matching sdk",
			strings.Join(info.APIVersions, ", "), strings.Join(supportedAPIMajors, ", "))}
	}
	p.Info = info
	return p, nil
}

func apiCompatible(vs []string) bool {
	for _, v := range vs {
		major, _, _ := strings.Cut(strings.TrimPrefix(v, "v"), ".")
		for _, m := range supportedAPIMajors {
			if major == m {
				return true
			}
		}
	}
	return false
}

func logLevelName(l hclog.Logger) string {
	switch {
	case l.IsTrace():
		return "trace"
	case l.IsDebug():
		return "debug"
	case l.IsInfo():
		return "info"
	case l.IsWarn():
		return "warn"
	}
	return "error"
}

// shortTempDir keeps go-plugin's unix socket path under the 104/108-byte
// limit even when TMPDIR is deep (a classic source of vague start errors).
func shortTempDir() string {
	d := os.TempDir()
	if len(d) > 60 {
		return "/tmp"
	}
	return d
}

type notFoundError struct{ msg string }

func (e *notFoundError) Error() string { return e.msg }
func (e *notFoundError) Unwrap() error { return ErrNotInstalled }

// HomeID is the short, stable id of a bot-bottle home that plugins label
// resources with (sdk.LabelHome).
func HomeID(home string) string {
	if home == "" {
		return ""
	}
	if abs, err := filepath.Abs(home); err == nil {
		home = abs
	}
	sum := sha256.Sum256([]byte(home))
	return hex.EncodeToString(sum[:6])
}
