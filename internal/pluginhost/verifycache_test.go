package pluginhost

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/pluginlock"
	"github.com/bot-bottle/bot-bottle/internal/state"
)

// cacheHome is a home with the test plugin installed (locked), counting
// the full hashes its starts make.
type cacheHome struct {
	t      *testing.T
	h      *Host
	path   string // the installed binary
	sum    string // its locked sha256
	hashes int
	store  *state.Store
}

func newCacheHome(t *testing.T, src string) *cacheHome {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the cache needs exec from a descriptor (Linux's /proc/self/fd)")
	}
	c := &cacheHome{t: t, h: newHost(t, "", nil)}
	in, err := c.h.Install(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	c.path, c.sum = in.Path, in.SHA256
	c.h.hashed = func(p string) {
		if p != c.path {
			t.Errorf("hashed %s, want %s", p, c.path)
		}
		c.hashes++
	}
	if c.store, err = state.Open(c.h.Home); err != nil {
		t.Fatal(err)
	}
	return c
}

// installedLongAgo sets the clock an hour ahead: the binary's last change
// is then well before any hash, as it is for a plugin installed earlier.
func (c *cacheHome) installedLongAgo() {
	c.h.now = func() time.Time { return time.Now().Add(time.Hour) }
}

// start starts the plugin and says whether it hashed it; err is the start's.
func (c *cacheHome) start() (hashed bool, err error) {
	c.t.Helper()
	before := c.hashes
	p, err := c.h.Start(context.Background(), "test")
	if err == nil {
		if p.Info.Name != "test" {
			c.t.Errorf("info %+v", p.Info)
		}
		p.Close()
	}
	return c.hashes > before, err
}

func (c *cacheHome) wantStart(wantHash bool, why string) {
	c.t.Helper()
	hashed, err := c.start()
	if err != nil {
		c.t.Fatalf("%s: %v", why, err)
	}
	if hashed != wantHash {
		c.t.Fatalf("%s: hashed = %v, want %v", why, hashed, wantHash)
	}
}

func (c *cacheHome) record() (state.VerifiedBinary, bool) {
	return c.store.VerifiedBinary(cacheKey(c.path))
}

func stat(t *testing.T, p string) (os.FileInfo, uint64, int64) {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	_, ino, ok := inodeOf(fi)
	ctime, okc := changeTime(fi)
	if !ok || !okc {
		t.Fatal("no inode or change time")
	}
	return fi, ino, ctime
}

// tick lets the clock that stamps file times move past the last change, so
// the next change shows in them (as it would for a plugin installed
// earlier).
func tick() { time.Sleep(50 * time.Millisecond) }

func TestVerifyCache(t *testing.T) {
	src := buildTestPlugin(t, t.TempDir())

	t.Run("cached start skips the hash", func(t *testing.T) {
		c := newCacheHome(t, src)
		if _, err := os.Lstat(c.store.VerifiedBinariesPath()); !os.IsNotExist(err) {
			t.Fatalf("install recorded its temporary copy: %v", err)
		}
		c.installedLongAgo()
		c.wantStart(true, "first start")
		r, ok := c.record()
		if !ok || r.SHA256 != c.sum {
			t.Fatalf("no record of the hash: %+v %v", r, ok)
		}
		c.wantStart(false, "second start")
		c.wantStart(false, "third start")
		// Without the cache the same start hashes.
		off := *c.h
		off.noVerifyCache = true
		c.h = &off
		c.wantStart(true, "cache off")
	})

	t.Run("rewritten in place with a forged mtime", func(t *testing.T) {
		c := newCacheHome(t, src)
		c.installedLongAgo()
		c.wantStart(true, "first start")
		c.wantStart(false, "cached start")
		fi, ino, ctime := stat(t, c.path)
		data, err := os.ReadFile(c.path)
		if err != nil {
			t.Fatal(err)
		}
		tick()
		off := int64(len(data) / 2)
		w, err := os.OpenFile(c.path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.WriteAt([]byte{data[off] ^ 0xff}, off); err != nil {
			t.Fatal(err)
		}
		w.Close()
		if err := os.Chtimes(c.path, time.Time{}, fi.ModTime()); err != nil {
			t.Fatal(err)
		}
		fi2, ino2, ctime2 := stat(t, c.path)
		if fi2.Size() != fi.Size() || !fi2.ModTime().Equal(fi.ModTime()) || ino2 != ino || ctime2 == ctime {
			t.Fatalf("the forgery is not what the test means: size %d→%d mtime %v→%v ino %d→%d ctime %d→%d",
				fi.Size(), fi2.Size(), fi.ModTime(), fi2.ModTime(), ino, ino2, ctime, ctime2)
		}
		hashed, err := c.start()
		if !hashed || err == nil || !strings.Contains(err.Error(), "changed since it was installed") {
			t.Fatalf("rewritten binary: hashed %v, err %v; want hashed and refused", hashed, err)
		}
		// The same bytes put back (mtime forged again): still re-hashed,
		// since ctime moved, then accepted and recorded anew.
		tick()
		if err := os.WriteFile(c.path, data, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(c.path, time.Time{}, fi.ModTime()); err != nil {
			t.Fatal(err)
		}
		c.wantStart(true, "restored bytes")
		c.wantStart(false, "restored bytes, cached")
	})

	t.Run("swapped for another inode", func(t *testing.T) {
		c := newCacheHome(t, src)
		c.installedLongAgo()
		c.wantStart(true, "first start")
		fi, ino, _ := stat(t, c.path)
		// The same bytes, size and mtime under the name, in a new inode.
		tmp := filepath.Join(filepath.Dir(c.path), "swap")
		copyTo(t, c.path, tmp)
		if err := os.Chtimes(tmp, time.Time{}, fi.ModTime()); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, c.path); err != nil {
			t.Fatal(err)
		}
		if _, ino2, _ := stat(t, c.path); ino2 == ino {
			t.Fatal("the swap kept the inode")
		}
		c.wantStart(true, "swapped file")
		r, _ := c.record()
		if _, ino2, _ := stat(t, c.path); r.Ino != ino2 {
			t.Fatalf("record not updated to the new inode: %+v", r)
		}
		c.wantStart(false, "swapped file, cached")
	})

	t.Run("corrupt cache is ignored and rewritten", func(t *testing.T) {
		c := newCacheHome(t, src)
		c.installedLongAgo()
		c.wantStart(true, "first start")
		if err := os.WriteFile(c.store.VerifiedBinariesPath(), []byte(`{"version":1,"binaries":[{"path":`), 0o600); err != nil {
			t.Fatal(err)
		}
		c.wantStart(true, "corrupt cache")
		if r, ok := c.record(); !ok || r.SHA256 != c.sum {
			t.Fatalf("corrupt cache not rewritten: %+v %v", r, ok)
		}
		c.wantStart(false, "rewritten cache")
	})

	t.Run("a changed pin is not satisfied by an old record", func(t *testing.T) {
		c := newCacheHome(t, src)
		c.installedLongAgo()
		c.wantStart(true, "first start")
		c.wantStart(false, "cached start")
		lockPath := pluginlock.Path(c.h.Home)
		lock, err := os.ReadFile(lockPath)
		if err != nil {
			t.Fatal(err)
		}
		other := strings.Repeat("ab", 32)
		if !strings.Contains(string(lock), c.sum) {
			t.Fatalf("lock file does not hold %s:\n%s", c.sum, lock)
		}
		if err := os.WriteFile(lockPath, []byte(strings.ReplaceAll(string(lock), c.sum, other)), 0o644); err != nil {
			t.Fatal(err)
		}
		hashed, err := c.start()
		if !hashed || err == nil || !strings.Contains(err.Error(), "changed since it was installed") {
			t.Fatalf("start against a changed lock entry: hashed %v, err %v; want hashed and refused", hashed, err)
		}
	})

	t.Run("a file changed just before hashing is not cached", func(t *testing.T) {
		c := newCacheHome(t, src)
		_, _, ctime := stat(t, c.path)
		changed := time.Unix(0, ctime)
		// The hash begins within racyMargin of the file's last change:
		// a write in the same tick would not show in its stat.
		c.h.now = func() time.Time { return changed.Add(racyMargin - time.Millisecond) }
		c.wantStart(true, "racy start")
		if r, ok := c.record(); ok {
			t.Fatalf("racy hash recorded: %+v", r)
		}
		c.wantStart(true, "racy start again")
		c.h.now = func() time.Time { return changed.Add(racyMargin) }
		c.wantStart(true, "exactly at the margin")
		if r, ok := c.record(); ok {
			t.Fatalf("hash at the margin recorded: %+v", r)
		}
		// Past the margin it is.
		c.h.now = func() time.Time { return changed.Add(racyMargin + time.Millisecond) }
		c.wantStart(true, "past the margin")
		c.wantStart(false, "past the margin, cached")
	})

	// The post-exec check still guards a cached start: a write after the
	// stat the cache vouched for is noticed.
	t.Run("a cached open still notices a write", func(t *testing.T) {
		c := newCacheHome(t, src)
		c.installedLongAgo()
		c.wantStart(true, "first start")
		v, err := openVerified(c.path, c.sum, c.h.verifyCache())
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		if !v.cached || v.script {
			t.Fatalf("cached %v script %v", v.cached, v.script)
		}
		tick()
		w, err := os.OpenFile(c.path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.WriteAt([]byte{0x7f}, 0); err != nil { // the same byte: only the write shows
			t.Fatal(err)
		}
		w.Close()
		if err := v.unchanged(); err == nil {
			t.Fatal("a write after a cached open went unnoticed")
		}
	})
}
