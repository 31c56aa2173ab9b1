// Package tarball writes a directory tree into a tar stream the way build
// contexts and copy-ins want it: regular files, directories and symlinks
// (never followed), owned by root, anything else skipped.
package tarball

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// AddDir writes dir's contents to tw, names relative to dir. The caller
// closes tw (and may add more entries first).
func AddDir(tw *tar.Writer, dir string) error {
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		case fi.IsDir(), fi.Mode().IsRegular():
		default:
			return nil // sockets, devices, pipes: not content
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			h.Name += "/"
		}
		h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return fmt.Errorf("archive %s: %w", dir, err)
	}
	return nil
}

// WriteDir writes dir's contents to w as a complete tar stream.
func WriteDir(w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	if err := AddDir(tw, dir); err != nil {
		return err
	}
	return tw.Close()
}
