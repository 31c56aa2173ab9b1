package pluginhost

import (
	"path/filepath"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/state"
)

// The verification cache lets a start skip hashing a locked or pinned
// binary (12.8 MiB for the docker plugin: about 12 ms, most of a start)
// when the core already hashed that very inode, unchanged since.
//
// After a full hash through the descriptor that is then exec'd matches the
// expected sha256, and the post-exec check found the file unchanged, the
// core records (path, device, inode, size, mtime, ctime, sha256) in
// $BOT_BOTTLE_HOME/state/plugins-verified.json (state.RecordVerifiedBinary).
// A later start fstats the descriptor it opened and, when all of device,
// inode, size, mtime and ctime equal the record for that path and the
// record's sha256 is the sum expected now (so a changed pin or lock entry is
// never satisfied by an old record), execs it without hashing. Anything
// else is a full hash, which records again when it matches.
//
// Why a matching stat means the same bytes:
//   - Every write to a file, and every chmod, chown or utimes (so also an
//     mtime forged with touch or os.Chtimes), sets its ctime to the current
//     time, and no unprivileged user can set ctime to anything else: it is
//     only ever "now" by the kernel's clock, which only root can move.
//   - Replacing the file (rename over it, delete and create, copy in its
//     place) gives the name another inode, or, if an inode number is
//     reused, an inode whose ctime is its creation time, after the hash.
//   - A write in the same timestamp tick as the record's ctime would leave
//     ctime as it was (file times are coarser than the clock: a jiffy, or
//     whole seconds on some filesystems). So a record is made only when the
//     file's ctime is more than racyMargin older than the moment hashing
//     began (git's "racily clean" problem): any write from then on gets a
//     later ctime, which differs from the recorded one.
//
// Root can forge all of this, but root can as well rewrite the lock file;
// and whoever can write the cache file (the home's owner, mode 0600) can
// rewrite the lock file too, so the cache trusts no one the lock does not.
// The post-exec check (verified.unchanged) still runs on every start, so a
// write between the stat and the exec is refused as before.
//
// The cache is a shortcut only: missing, corrupt or unwritable, it costs a
// hash, never an error.
const racyMargin = 2 * time.Second

// verifyCache is the cache as one start sees it.
type verifyCache struct {
	store  *state.Store // nil: no cache (every start hashes)
	now    func() time.Time
	hashed func(path string) // test observer of every full hash, or nil
}

// verifyCache opens the home's cache for a start. A home that cannot be
// opened just means no cache.
func (h *Host) verifyCache() verifyCache {
	c := verifyCache{now: h.now, hashed: h.hashed}
	if c.now == nil {
		c.now = time.Now
	}
	if h.noVerifyCache || h.Home == "" {
		return c
	}
	if s, err := state.Open(h.Home); err == nil {
		c.store = s
	} else if h.Logger != nil {
		h.Logger.Debug("plugin verification cache unavailable; hashing", "error", err)
	}
	return c
}

// fileStamp is what identifies a file's content to the cache.
type fileStamp struct {
	dev, ino       uint64
	size           int64
	mtimeNs, ctime int64
}

func stampOf(v *verified) (fileStamp, bool) {
	dev, ino, ok := inodeOf(v.before)
	ctime, okc := changeTime(v.before)
	if !ok || !okc {
		return fileStamp{}, false
	}
	return fileStamp{dev: dev, ino: ino, size: v.before.Size(), mtimeNs: v.before.ModTime().UnixNano(), ctime: ctime}, true
}

func cacheKey(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return path
}

// lookup reports whether the cache vouches for the file open as v having
// sha256 sum.
func (c verifyCache) lookup(path, sum string, st fileStamp) bool {
	if c.store == nil {
		return false
	}
	r, ok := c.store.VerifiedBinary(cacheKey(path))
	return ok && r.SHA256 == sum && r.Dev == st.dev && r.Ino == st.ino &&
		r.Size == st.size && r.MtimeNs == st.mtimeNs && r.CtimeNs == st.ctime
}

// remember records a full hash that matched, unless the file changed too
// shortly before hashing began for its stat to tell a later write apart.
// It reports whether it recorded.
func (c verifyCache) remember(path, sum string, st fileStamp, hashStart time.Time) (bool, error) {
	if c.store == nil || hashStart.Sub(time.Unix(0, st.ctime)) <= racyMargin {
		return false, nil
	}
	err := c.store.RecordVerifiedBinary(state.VerifiedBinary{
		Path: cacheKey(path), Dev: st.dev, Ino: st.ino, Size: st.size,
		MtimeNs: st.mtimeNs, CtimeNs: st.ctime, SHA256: sum, HashedAt: hashStart.UTC(),
	})
	return err == nil, err
}
