// Package podqueue moves a bottle's request queue between its pod and the
// operator's host. In the pod, the bb-queue container (kube-init, another
// uid than the agent's) is the only writer of the outbox the agent reads,
// and takes the requests out of the inbox the agent writes; on the host,
// the plugin merges them into Spec.QueueDir. Both sides take only regular
// files with a request's name (a token and .json) and a bounded size: the
// agent controls what is in its inbox, and the core's ingest is the one
// judge of what a request says.
package podqueue

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
)

// MaxFile bounds one file, above the core's own request limit, so that the
// core refuses an oversized request with its reason rather than never
// seeing it.
const MaxFile = 1 << 20

// MaxBatch bounds one sync's transfer; what is left waits for the next.
const MaxBatch = 16 << 20

// nameRE is the name the helper gives a finished request (a temp name
// starts with "."), and the host a receipt.
var nameRE = regexp.MustCompile(`^[a-z0-9]{16,64}\.json$`)

// ValidName reports whether name is one a queue file may have.
func ValidName(name string) bool { return nameRE.MatchString(name) }

// Take writes the finished requests in dir to w as a tar, up to MaxBatch:
// regular files with a request's name and at most MaxFile bytes, opened
// without following a link. Anything else is left where it is.
func Take(dir string, w io.Writer) error {
	_, err := take(dir, w)
	return err
}

func take(dir string, w io.Writer) (int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	tw := tar.NewWriter(w)
	total := 0
	for _, e := range ents {
		if !ValidName(e.Name()) || !e.Type().IsRegular() {
			continue
		}
		data, err := readRegular(filepath.Join(dir, e.Name()))
		if err != nil || total+len(data) > MaxBatch {
			continue
		}
		total += len(data)
		if err := tw.WriteHeader(&tar.Header{Name: e.Name(), Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			return n, err
		}
		if _, err := tw.Write(data); err != nil {
			return n, err
		}
		n++
	}
	return n, tw.Close()
}

// readRegular reads a regular file of at most MaxFile bytes; a link, a
// fifo or a bigger file is an error.
func readRegular(p string) ([]byte, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscallNoFollow|syscallNonBlock, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() > MaxFile {
		return nil, fmt.Errorf("%s: not a regular file of at most %d bytes", p, MaxFile)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFile {
		return nil, fmt.Errorf("%s: more than %d bytes", p, MaxFile)
	}
	return data, nil
}

// Drop removes the named requests from dir, once the host has them.
func Drop(dir string, names []string) error {
	for _, n := range names {
		if !ValidName(n) {
			return fmt.Errorf("drop %q: not a queue file's name", n)
		}
		if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// Put writes the files of the tar r into dir, each under a temp name first
// and renamed into place, so that a reader sees a whole receipt or none.
// Entries without a queue file's name are refused.
func Put(r io.Reader, dir string) error {
	return each(r, func(name string, data []byte) error {
		return writeAtomic(dir, name, data, true)
	})
}

// Merge writes the requests of the tar from the pod into the host's
// queue's inbox and returns the names the host now has (to drop in the
// pod). A request already in the inbox, or with a receipt in the outbox
// (the host ingested it: a second sync raced the first's drop), is not
// written again: a name is a token, one request, and the core would refuse
// the copy as a reused token.
func Merge(r io.Reader, queueDir string) ([]string, error) {
	var have []string
	inbox := filepath.Join(queueDir, "inbox")
	err := each(r, func(name string, data []byte) error {
		if _, err := os.Lstat(filepath.Join(queueDir, "outbox", name)); err == nil {
			have = append(have, name)
			return nil
		}
		if err := writeAtomic(inbox, name, data, false); err != nil {
			return err
		}
		have = append(have, name)
		return nil
	})
	return have, err
}

// Outbox is the tar of the receipts in the host's outbox, for Put in the
// pod, and how many it holds.
func Outbox(dir string) ([]byte, int, error) {
	var buf bytes.Buffer
	n, err := take(dir, &buf)
	if err != nil {
		return nil, 0, err
	}
	return buf.Bytes(), n, nil
}

func each(r io.Reader, fn func(name string, data []byte) error) error {
	tr := tar.NewReader(r)
	total := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if h.Typeflag != tar.TypeReg || !ValidName(h.Name) {
			return fmt.Errorf("queue tar: entry %q is not a queue file", h.Name)
		}
		if h.Size > MaxFile || total+int(h.Size) > MaxBatch {
			return fmt.Errorf("queue tar: entry %q is too large", h.Name)
		}
		data, err := io.ReadAll(io.LimitReader(tr, MaxFile+1))
		if err != nil {
			return err
		}
		total += len(data)
		if err := fn(h.Name, data); err != nil {
			return err
		}
	}
}

// writeAtomic puts data at dir/name through a temp name (".tmp-", which
// the core's ingest and Take pass over); without replace an existing file
// stays.
func writeAtomic(dir, name string, data []byte, replace bool) error {
	dst := filepath.Join(dir, name)
	if !replace {
		if _, err := os.Lstat(dst); err == nil {
			return nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	tmp := filepath.Join(dir, ".tmp-sync-"+strconv.Itoa(os.Getpid())+"-"+name)
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}
