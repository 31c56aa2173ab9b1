// Package buildctx turns a host directory plus a Dockerfile into a Docker
// build context: a tar stream that honours the directory's .dockerignore and
// carries the Dockerfile under a private name, and a content digest that
// ignores timestamps and ownership so that an unchanged agent maps to the
// same cached image.
package buildctx

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// DockerfileName is where the Dockerfile travels inside the context. A
// private name lets the Dockerfile live outside the context directory (a
// per-bottle Dockerfile in the state dir) without colliding with a project's
// own Dockerfile; the generated .dockerignore makes the engine drop it
// before any COPY sees it.
const DockerfileName = ".bot-bottle.Dockerfile"

const ignoreName = ".dockerignore"

// Source is a build context on the host, ready to be digested or streamed.
type Source struct {
	dir        string
	dockerfile []byte
	matcher    *patternmatcher.PatternMatcher
	// ignore is the .dockerignore sent to the engine: the project's own
	// patterns plus the private Dockerfile.
	ignore []byte
}

// Open prepares dir as a build context for dockerfile. It reads
// dir/.dockerignore but no other file yet.
func Open(dir string, dockerfile []byte) (*Source, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("build context: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("build context %s: not a directory", dir)
	}
	var patterns []string
	var original []byte
	hasIgnore := false
	if b, err := os.ReadFile(filepath.Join(dir, ignoreName)); err == nil {
		hasIgnore = true
		original = b
		patterns, err = ignorefile.ReadAll(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("build context %s: read %s: %w", dir, ignoreName, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("build context %s: %w", dir, err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return nil, fmt.Errorf("build context %s: %s: %w", dir, ignoreName, err)
	}
	// The engine keeps .dockerignore in the context unless it matches its
	// own patterns; keep that, except when there was none to begin with.
	dropIgnore := !hasIgnore
	if hasIgnore {
		if m, err := pm.MatchesOrParentMatches(ignoreName); err == nil && m {
			dropIgnore = true
		}
	}
	var ign bytes.Buffer
	ign.Write(original)
	if len(original) > 0 && original[len(original)-1] != '\n' {
		ign.WriteByte('\n')
	}
	ign.WriteString(DockerfileName + "\n")
	if dropIgnore {
		ign.WriteString(ignoreName + "\n")
	}
	return &Source{dir: dir, dockerfile: dockerfile, matcher: pm, ignore: ign.Bytes()}, nil
}

// entry is one file of the context as both the digest and the tar see it.
type entry struct {
	name string // slash-separated, relative to the context root
	info fs.FileInfo
	link string
	path string // host path to read content from; empty for generated files
	data []byte // content of generated files
}

// walk calls fn for every file of the context in a stable order: the
// generated Dockerfile and .dockerignore first, then the directory in lexical
// order minus what .dockerignore excludes.
func (s *Source) walk(ctx context.Context, fn func(entry) error) error {
	for _, g := range []struct {
		name string
		data []byte
	}{{DockerfileName, s.dockerfile}, {ignoreName, s.ignore}} {
		if err := fn(entry{name: g.name, data: g.data, info: genInfo{g.name, int64(len(g.data))}}); err != nil {
			return err
		}
	}
	return filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(s.dir, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		if rel == DockerfileName || rel == ignoreName {
			return nil
		}
		skip, err := s.matcher.MatchesOrParentMatches(rel)
		if err != nil {
			return fmt.Errorf("match %s: %w", rel, err)
		}
		if skip {
			if d.IsDir() && !s.mayIncludeBelow(rel) {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		e := entry{name: rel, info: info, path: p}
		switch {
		case info.Mode().IsRegular(), info.IsDir():
		case info.Mode()&fs.ModeSymlink != 0:
			if e.link, err = os.Readlink(p); err != nil {
				return err
			}
		default:
			// Sockets, devices and pipes have no place in an image.
			return nil
		}
		return fn(e)
	})
}

// mayIncludeBelow reports whether an exclusion pattern (!dir/file) could
// bring back something under the excluded directory dir.
func (s *Source) mayIncludeBelow(dir string) bool {
	if !s.matcher.Exclusions() {
		return false
	}
	for _, p := range s.matcher.Patterns() {
		if p.Exclusion() && strings.HasPrefix(p.String()+"/", dir+"/") {
			return true
		}
	}
	return false
}

// Digest returns a hex sha256 of the Dockerfile and every file of the
// context: names, types, permission bits, link targets and contents, but not
// times or owners, which change without the image changing.
func (s *Source) Digest(ctx context.Context) (string, error) {
	h := sha256.New()
	io.WriteString(h, "bot-bottle build context v1\x00")
	err := s.walk(ctx, func(e entry) error {
		fmt.Fprintf(h, "%s\x00%s\x00%o\x00%s\x00%d\x00", e.name, typeOf(e.info), e.info.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky), e.link, e.info.Size())
		if !e.info.Mode().IsRegular() {
			return nil
		}
		r, err := e.open()
		if err != nil {
			return err
		}
		defer r.Close()
		fh := sha256.New()
		if _, err := io.Copy(fh, r); err != nil {
			return fmt.Errorf("read %s: %w", e.name, err)
		}
		h.Write(fh.Sum(nil))
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("digest build context %s: %w", s.dir, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// WriteTar streams the context as an uncompressed tar to w. Owners are
// zeroed, as the docker CLI does, so that builds do not depend on who ran
// them.
func (s *Source) WriteTar(ctx context.Context, w io.Writer) error {
	tw := tar.NewWriter(w)
	err := s.walk(ctx, func(e entry) error {
		hdr, err := tar.FileInfoHeader(e.info, e.link)
		if err != nil {
			return fmt.Errorf("%s: %w", e.name, err)
		}
		hdr.Name = e.name
		if e.info.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", e.name, err)
		}
		if !e.info.Mode().IsRegular() {
			return nil
		}
		r, err := e.open()
		if err != nil {
			return err
		}
		defer r.Close()
		if n, err := io.Copy(tw, r); err != nil {
			return fmt.Errorf("read %s: %w", e.name, err)
		} else if n != hdr.Size {
			return fmt.Errorf("%s changed size while it was being read", e.name)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("tar build context %s: %w", s.dir, err)
	}
	return tw.Close()
}

func (e entry) open() (io.ReadCloser, error) {
	if e.path == "" {
		return io.NopCloser(bytes.NewReader(e.data)), nil
	}
	return os.Open(e.path)
}

func typeOf(fi fs.FileInfo) string {
	switch {
	case fi.IsDir():
		return "d"
	case fi.Mode()&fs.ModeSymlink != 0:
		return "l"
	default:
		return "f"
	}
}

// genInfo describes a generated file.
type genInfo struct {
	name string
	size int64
}

func (g genInfo) Name() string       { return g.name }
func (g genInfo) Size() int64        { return g.size }
func (g genInfo) Mode() fs.FileMode  { return 0o644 }
func (g genInfo) ModTime() time.Time { return time.Unix(0, 0) }
func (g genInfo) IsDir() bool        { return false }
func (g genInfo) Sys() any           { return nil }
