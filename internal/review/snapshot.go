package review

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// maxFile bounds one worktree file taken into a snapshot.
const maxFile = 256 << 20

// readHead reads the commit the clone's HEAD names, as data: .git must be
// a real directory (a .git file or link planted in its place is not
// followed), its object store must be the clone's own (no alternates the
// agent added), and HEAD a branch of refs/heads or a commit id.
func readHead(clone string) (string, error) {
	gd := filepath.Join(clone, ".git")
	fi, err := os.Lstat(gd)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrHostile, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("%w: its .git is not a directory (a .git file or link is not followed)", ErrHostile)
	}
	root, err := os.OpenRoot(gd)
	if err != nil {
		return "", err
	}
	defer root.Close()
	if ofi, err := root.Lstat("objects"); err != nil || !ofi.IsDir() {
		return "", fmt.Errorf("%w: .git/objects is not a directory", ErrHostile)
	}
	if _, err := root.Lstat("objects/info/alternates"); err == nil {
		return "", fmt.Errorf("%w: .git/objects/info/alternates borrows objects from elsewhere", ErrHostile)
	}
	head, err := readSmall(root, "HEAD")
	if err != nil {
		return "", fmt.Errorf("%w: HEAD: %v", ErrHostile, err)
	}
	ref, isRef := strings.CutPrefix(head, "ref: ")
	if !isRef {
		return commitID(head)
	}
	if !validRef(ref) {
		return "", fmt.Errorf("%w: HEAD names %q", ErrHostile, ref)
	}
	if v, err := readSmall(root, ref); err == nil {
		return commitID(v)
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("%w: %s: %v", ErrHostile, ref, err)
	}
	packed, err := readSmall(root, "packed-refs")
	if err != nil {
		return "", fmt.Errorf("%w: HEAD names %s, which has no commit", ErrHostile, ref)
	}
	for _, line := range strings.Split(packed, "\n") {
		if id, name, ok := strings.Cut(line, " "); ok && name == ref {
			return commitID(id)
		}
	}
	return "", fmt.Errorf("%w: HEAD names %s, which has no commit", ErrHostile, ref)
}

func readSmall(root *os.Root, name string) (string, error) {
	fi, err := root.Lstat(name)
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", errors.New("not a regular file")
	}
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	return strings.TrimSpace(string(b)), err
}

func commitID(s string) (string, error) {
	if (len(s) != 40 && len(s) != 64) || strings.Trim(s, "0123456789abcdef") != "" {
		return "", fmt.Errorf("%w: %q is not a commit id", ErrHostile, s)
	}
	return s, nil
}

// validRef is the subset of git's ref grammar the core reads a branch by:
// under refs/heads/, no empty, dot-led or .lock component, no "..", and
// nothing but printable ASCII without git's special characters.
func validRef(ref string) bool {
	if !strings.HasPrefix(ref, "refs/heads/") || strings.Contains(ref, "..") || strings.HasSuffix(ref, ".lock") {
		return false
	}
	for _, c := range strings.Split(ref, "/") {
		if c == "" || strings.HasPrefix(c, ".") {
			return false
		}
	}
	for _, r := range ref {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`~^:?*[\`, r) {
			return false
		}
	}
	return true
}

// commitWorktree writes the clone's worktree as a commit on head in
// core.git and returns it. The worktree is read as data through os.Root (a
// link never leads out of it); which files count is git's: the tracked
// ones of head and the untracked ones its .gitignore files leave, listed by
// the core's git with a core-owned index. No filter, textconv or attribute
// of the clone applies: the bytes on disk are the content. Paths with a
// .git component and nested repositories are left out, as git itself
// would never check them out; gitlinks (submodules) stay as head has them.
func (b Bottle) commitWorktree(ctx context.Context, head string) (string, error) {
	index := filepath.Join(b.coreDir(), "snapshot.index")
	_ = os.Remove(index)
	defer os.Remove(index)
	withIndex := func(args ...string) gitCmd {
		g := b.core(args...)
		g.env = []string{"GIT_INDEX_FILE=" + index}
		return g
	}
	if _, err := withIndex("read-tree", head).run(ctx); err != nil {
		return "", err
	}
	staged, err := withIndex("ls-files", "-z", "--stage").run(ctx)
	if err != nil {
		return "", err
	}
	clone := b.CloneDir()
	lsOthers := withIndex("--work-tree="+clone, "ls-files", "-z", "--others", "--exclude-standard")
	lsOthers.dir = clone
	others, err := lsOthers.run(ctx)
	if err != nil {
		return "", err
	}
	root, err := os.OpenRoot(clone)
	if err != nil {
		return "", err
	}
	defer root.Close()

	// Dated as head is: the same work on the same head is the same commit
	// at every fetch, so a merged snapshot stays merged.
	when, err := b.core("log", "-1", "--format=%ct", head).run(ctx)
	if err != nil {
		return "", err
	}
	pr, pw := io.Pipe()
	imp := b.core("fast-import", "--quiet", "--force", "--done")
	imp.stdin = pr
	done := make(chan error, 1)
	go func() {
		_, err := imp.run(ctx)
		pr.CloseWithError(errors.New("fast-import ended"))
		done <- err
	}()
	werr := b.writeStream(bufio.NewWriterSize(pw, 1<<16), root, head, trim(when), staged, others)
	pw.CloseWithError(werr)
	if err := <-done; err != nil {
		return "", err
	}
	if werr != nil {
		return "", werr
	}
	out, err := b.core("rev-parse", "--verify", "refs/bot-bottle/work^{commit}").run(ctx)
	if err != nil {
		return "", err
	}
	return trim(out), nil
}

func (b Bottle) writeStream(w *bufio.Writer, root *os.Root, head, when string, staged, others []byte) error {
	who := fmt.Sprintf("bot-bottle %s <%s@bot-bottle.invalid> %s +0000", b.Identity, b.Identity, when)
	msg := "bot-bottle: uncommitted work in " + b.Identity + "\n"
	fmt.Fprintf(w, "commit refs/bot-bottle/work\nauthor %s\ncommitter %s\ndata %d\n%s\nfrom %s\ndeleteall\n", who, who, len(msg), msg, head)
	seen := map[string]bool{}
	for _, entry := range bytes.Split(staged, []byte{0}) {
		// "<mode> <id> <stage>\t<path>"
		meta, path, ok := bytes.Cut(entry, []byte{'\t'})
		if !ok {
			continue
		}
		p := string(path)
		if seen[p] || !takenPath(p) {
			continue
		}
		seen[p] = true
		f := strings.Fields(string(meta))
		if len(f) == 3 && f[0] == "160000" {
			fmt.Fprintf(w, "M 160000 %s %s\n", f[1], quote(p))
			continue
		}
		var was headEntry
		if len(f) == 3 {
			was = headEntry{mode: f[0], id: f[1]}
		}
		if err := writeFile(w, root, p, was); err != nil {
			return err
		}
	}
	for _, path := range bytes.Split(others, []byte{0}) {
		p := string(path)
		if p == "" || strings.HasSuffix(p, "/") || seen[p] || !takenPath(p) {
			continue
		}
		seen[p] = true
		if err := writeFile(w, root, p, headEntry{}); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "\ndone\n")
	return w.Flush()
}

// takenPath refuses what git never checks out: a .git component (any case).
func takenPath(p string) bool {
	for _, c := range strings.Split(p, "/") {
		if strings.EqualFold(c, ".git") || c == "" || c == "." || c == ".." {
			return false
		}
	}
	return true
}

// headEntry is a path's mode and object id in head.
type headEntry struct{ mode, id string }

// blobID is git's SHA-1 object id of a blob with content data.
func blobID(data []byte) string {
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(data))
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil))
}

// writeFile adds p's content to the stream as it is on disk: a regular
// file or a symlink (its target as text, never followed); anything else
// (gone, a directory, a device) is left out, i.e. deleted. Content that
// head already has (was) is named by its id, not written again.
func writeFile(w *bufio.Writer, root *os.Root, p string, was headEntry) error {
	fi, err := root.Lstat(p)
	if err != nil {
		return nil
	}
	var data []byte
	mode := "100644"
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		target, err := root.Readlink(p)
		if err != nil {
			return nil
		}
		mode, data = "120000", []byte(target)
	case fi.Mode().IsRegular():
		f, err := root.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
		if err != nil {
			return nil
		}
		st, err := f.Stat()
		if err != nil || !st.Mode().IsRegular() {
			f.Close()
			return nil
		}
		data, err = io.ReadAll(io.LimitReader(f, maxFile+1))
		f.Close()
		if err != nil {
			return fmt.Errorf("read %s: %w", p, err)
		}
		if len(data) > maxFile {
			return fmt.Errorf("%s is larger than %d bytes", p, maxFile)
		}
		if st.Mode()&0o100 != 0 {
			mode = "100755"
		}
	default:
		return nil
	}
	if was.mode == mode && len(was.id) == 40 && blobID(data) == was.id {
		fmt.Fprintf(w, "M %s %s %s\n", mode, was.id, quote(p))
		return nil
	}
	fmt.Fprintf(w, "M %s inline %s\ndata %d\n", mode, quote(p), len(data))
	w.Write(data)
	return w.WriteByte('\n')
}

// quote writes a path as fast-import's C-style quoted string.
func quote(p string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == '\n':
			b.WriteString(`\n`)
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&b, `\%03o`, c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
