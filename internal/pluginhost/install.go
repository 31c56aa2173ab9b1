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
	"path/filepath"
	"sort"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/bot-bottle/bot-bottle/internal/config"
	"github.com/bot-bottle/bot-bottle/internal/pluginlock"
)

// Installed is what Install put in place.
type Installed struct {
	pluginlock.Entry
	Path string `json:"path"`
	// Notes are things the user should know, e.g. that another source of
	// the same name wins over the installed copy.
	Notes []string `json:"notes,omitempty"`
}

// Install copies the plugin binary at src into $BOT_BOTTLE_HOME/plugins as
// bot-bottle-plugin-<Info.Name> and records it in plugins.lock.hcl.
//
// The copy goes to a temp file in the plugins directory (fsynced, hashed
// while it is written), which is started the way every plugin is and asked
// for its Info; only a working plugin with a valid name is renamed into
// place, and the rename and the lock entry happen under the lock file's
// lock, so concurrent installs neither lose entries nor mix a binary of one
// with the entry of another. A binary that differs from a plugins.hcl
// sha256 pin for its name is refused. A failed install leaves no binary and
// no entry; a failed re-install leaves the previous binary and entry as
// they were.
func (h *Host) Install(ctx context.Context, src string) (Installed, error) {
	fail := func(format string, args ...any) (Installed, error) {
		return Installed{}, fmt.Errorf("install %s: "+format, append([]any{src}, args...)...)
	}
	in, err := os.Open(src)
	if err != nil {
		return fail("%v", unwrapPathError(err))
	}
	defer in.Close()
	if fi, err := in.Stat(); err != nil {
		return fail("%v", err)
	} else if !fi.Mode().IsRegular() {
		return fail("not a regular file")
	}

	dir := h.pluginsDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail("%v", err)
	}
	// No BinaryPrefix: discovery never sees a half-installed plugin.
	tmp, err := os.CreateTemp(dir, ".installing-*")
	if err != nil {
		return fail("%v", err)
	}
	tmpPath := tmp.Name()
	placed := false
	defer func() {
		if !placed {
			_ = os.Remove(tmpPath)
		}
	}()
	sumWriter := sha256.New()
	_, err = io.Copy(io.MultiWriter(tmp, sumWriter), in)
	if err == nil {
		err = tmp.Chmod(0o755)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fail("copy into %s: %v", dir, err)
	}
	sum := hex.EncodeToString(sumWriter.Sum(nil))

	// Started from the copy, with its hash checked again at exec: what
	// answered is exactly what gets installed.
	// A candidate that is no plugin makes go-plugin log its exit at error
	// level; the one-line error below says it better, so logs are only
	// kept when the user asked for debug output.
	quiet := *h
	quiet.noVerifyCache = true // a temporary name, and a file changed just now
	if h.Logger == nil || !h.Logger.IsDebug() {
		quiet.Logger = hclog.NewNullLogger()
	}
	p, err := quiet.startBinary(ctx, "install", tmpPath, sum, nil)
	if err != nil {
		msg := strings.ReplaceAll(firstLine(err.Error()), tmpPath, src)
		var se *startError
		if errors.As(err, &se) && se.step == stepInfo {
			return fail("the plugin started but its Info call failed: %s", msg)
		}
		if errors.As(err, &se) && se.step == stepAPI {
			return fail("the plugin %s", msg)
		}
		return fail("not a working bot-bottle plugin (%s)", msg)
	}
	info, proto := p.Info, p.Protocol
	p.Close()
	if err := config.ValidName(info.Name); err != nil {
		return fail("the plugin calls itself %q, which cannot name a plugin: %v", info.Name, err)
	}

	// A plugins.hcl pin for this name applies to the installed copy (unless
	// the block names a path, which wins over it): a binary that differs
	// from it would be locked and then refused at every start.
	if b := h.block(info.Name); b.SHA256 != "" && b.Path == "" && !strings.EqualFold(b.SHA256, sum) {
		return fail("its sha256 %s differs from the one %s pins for plugin %q (%s); refusing to install it. Install the binary you pinned, or change or remove that pin first",
			sum, h.configFile(), info.Name, strings.ToLower(b.SHA256))
	}

	final := filepath.Join(dir, BinaryPrefix+info.Name)
	entry := pluginlock.Entry{Name: info.Name, Version: info.Version, Protocol: proto, APIVersions: info.APIVersions, SHA256: sum}
	err = pluginlock.WithLock(ctx, h.Home, func() error {
		lockPath := pluginlock.Path(h.Home)
		lock, err := pluginlock.Read(lockPath)
		if err != nil {
			return err
		}
		// The previous install, if any, stays reachable under a second
		// name until the new binary and its entry are both in place, so
		// that a failure puts it back as it was: a failed re-install never
		// leaves no binary, or a binary its entry does not match.
		prev := filepath.Join(dir, ".previous-"+BinaryPrefix+info.Name)
		hadPrev, err := keepPrevious(final, prev)
		if err != nil {
			return fmt.Errorf("keep the previous %s: %w", final, err)
		}
		restore := func() {
			if hadPrev {
				_ = os.Rename(prev, final)
			} else {
				_ = os.Remove(final)
			}
			_ = pluginlock.SyncDir(dir)
		}
		if err := os.Rename(tmpPath, final); err != nil {
			if hadPrev {
				_ = os.Remove(prev)
			}
			return err
		}
		placed = true
		if err := pluginlock.SyncDir(dir); err != nil {
			restore()
			return err
		}
		before := lock.Source()
		lock.Entries[info.Name] = entry
		if err := writeLock(lockPath, lock); err != nil {
			// The lock file as it was (a write that failed after its
			// rename changed it), and the binary it describes.
			_ = pluginlock.Restore(lockPath, before)
			restore()
			return err
		}
		if hadPrev {
			_ = os.Remove(prev)
		}
		return nil
	})
	if err != nil {
		return fail("%v", err)
	}

	out := Installed{Entry: entry, Path: final}
	if dev, _ := h.DevOverrides(); dev[info.Name] != "" {
		out.Notes = append(out.Notes, fmt.Sprintf("%s overrides plugin %q with %s; unset it to use the installed copy", EnvDevPlugins, info.Name, dev[info.Name]))
	}
	if b := h.block(info.Name); b.Path != "" {
		out.Notes = append(out.Notes, fmt.Sprintf("%s names path %s for plugin %q, which wins over the installed copy; remove that path to use it", h.Config.File, b.Path, info.Name))
	}
	return out, nil
}

// writeLock writes the lock file; a test makes it fail.
var writeLock = pluginlock.Write

// keepPrevious makes prev a second name of the file at final (a hard link,
// else a copy), replacing a prev left by an install that crashed; false
// when there is no final.
func keepPrevious(final, prev string) (bool, error) {
	if err := os.Remove(prev); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	fi, err := os.Lstat(final)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := os.Link(final, prev); err == nil {
		return true, nil
	}
	if !fi.Mode().IsRegular() {
		return false, fmt.Errorf("%s is not a regular file", final)
	}
	if err := copyFile(final, prev, fi.Mode().Perm()); err != nil {
		_ = os.Remove(prev)
		return false, err
	}
	return true, nil
}

func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// Check is the state of one plugin in $BOT_BOTTLE_HOME/plugins against
// plugins.lock.hcl, as `bot-bottle plugins verify` reports it.
type Check struct {
	Name    string `json:"name"`
	Path    string `json:"path"`
	Status  string `json:"status"` // one of the Verify* values
	Version string `json:"version,omitempty"`
	SHA256  string `json:"sha256,omitempty"`
	Locked  string `json:"sha256_locked,omitempty"`
	// Problem says what is wrong and how to fix it; "" when ok.
	Problem string `json:"problem,omitempty"`
}

// Check statuses.
const (
	VerifyOK        = "ok"
	VerifyChanged   = "changed"
	VerifyMissing   = "missing"
	VerifyNotLocked = "not locked"
)

// Verify checks every plugin binary in $BOT_BOTTLE_HOME/plugins and every
// plugins.lock.hcl entry against each other, sorted by name. The error is
// for a lock file or plugins directory that cannot be read.
func (h *Host) Verify() ([]Check, error) {
	lock, err := h.readLock()
	if err != nil {
		return nil, err
	}
	dir := h.pluginsDir()
	names := map[string]bool{}
	for _, n := range lock.Names() {
		names[n] = true
	}
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	for _, e := range entries {
		if n, ok := strings.CutPrefix(e.Name(), BinaryPrefix); ok && n != "" && !e.IsDir() {
			names[n] = true
		}
	}
	out := make([]Check, 0, len(names))
	for _, n := range sortedKeys(names) {
		c := Check{Name: n, Path: filepath.Join(dir, BinaryPrefix+n)}
		entry, locked := lock.Get(n)
		c.Locked, c.Version = entry.SHA256, entry.Version
		var sum string
		err := isExecutable(c.Path)
		if err == nil {
			sum, err = fileSHA256(c.Path)
		}
		switch {
		case err != nil && locked:
			c.Status = VerifyMissing
			c.Problem = fmt.Sprintf("locked in %s but %s is unusable (%v); re-install it: bot-bottle plugins install <path-to-binary>", pluginlock.FileName, c.Path, unwrapPathError(err))
		case err != nil:
			c.Status = VerifyNotLocked
			c.Problem = fmt.Sprintf("not in %s, and unusable (%v); remove it, or install a working binary: bot-bottle plugins install <path-to-binary>", pluginlock.FileName, unwrapPathError(err))
		case !locked:
			c.Status, c.SHA256 = VerifyNotLocked, sum
			c.Problem = fmt.Sprintf("not in %s, so nothing checks it before it runs; lock it: bot-bottle plugins install %s", pluginlock.FileName, c.Path)
		case sum != entry.SHA256:
			c.Status, c.SHA256 = VerifyChanged, sum
			c.Problem = fmt.Sprintf("changed since it was installed (sha256 %s, locked %s); bot-bottle refuses to run it. If you meant to change it, re-lock it: bot-bottle plugins install <path-to-new-binary>", sum, entry.SHA256)
		default:
			c.Status, c.SHA256 = VerifyOK, sum
		}
		out = append(out, c)
	}
	return out, nil
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// firstLine is s up to its first line break, without a dangling ": ".
func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimRight(strings.TrimSpace(s), ":")
}
