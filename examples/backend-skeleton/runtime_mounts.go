package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The bottle shares this host's filesystem, as you: a fresh network
// namespace stops the agent from connecting anywhere over the network, not
// from connecting to a Unix socket it finds on disk (the Docker daemon's,
// your systemd user bus and its systemd-run, ssh-agent, gpg-agent, X11).
// Those mostly live under /run and /tmp. So the init, which still has its
// namespace's capabilities, covers those with empty, private tmpfs mounts
// before the agent runs, and covers the bottles' root too, so that an agent
// cannot read another bottle's logs or type into its stdin FIFO. What the
// agent needs from under them is bound back in place. Mounts made here
// stay in the bottle's mount namespace, and the agent, without
// capabilities (runtime_caps.go), cannot undo them.

// privateDirs are covered with an empty tmpfs in every bottle.
var privateDirs = []string{"/tmp", "/run", "/dev/shm"}

// hostDirs covers privateDirs and the bottles' root, binding keep (paths the
// agent needs: its bottle directory, project, queue, helper and binary)
// back in place, and returns what it covered. The bottle directory itself
// is made read-only, but for its work/ (the agent's working directory when
// it has no project).
func hideHostDirs(bt bottle, keep []string) ([]string, error) {
	keep = append(slices.Clone(keep), bt.dir)
	var keeps []string
	for _, k := range keep {
		if k == "" {
			continue
		}
		// Compare and bind real paths: /var/run is /run.
		if r, err := filepath.EvalSymlinks(k); err == nil {
			keeps = append(keeps, r)
		}
	}
	var covered []string
	for _, dir := range append(slices.Clone(privateDirs), filepath.Dir(bt.dir)) {
		real, err := filepath.EvalSymlinks(dir)
		if err != nil {
			continue // this host has none
		}
		if err := cover(real, keeps); err != nil {
			return covered, fmt.Errorf("hide %s: %w", dir, err)
		}
		covered = append(covered, dir)
	}
	if err := readOnly(bt.dir, bt.path(dirWork)); err != nil {
		return covered, fmt.Errorf("bottle directory read-only: %w", err)
	}
	return covered, nil
}

// cover mounts an empty tmpfs on dir and binds back the paths of keep that
// are inside it.
func cover(dir string, keep []string) error {
	var inside []string
	for _, k := range keep {
		if within(k, dir) {
			inside = append(inside, k)
		}
	}
	// Bind only the outermost: one inside another comes with it.
	inside = slices.DeleteFunc(inside, func(k string) bool {
		return slices.ContainsFunc(inside, func(o string) bool { return o != k && within(k, o) })
	})
	// Hold each on the mount it is on now, before the tmpfs hides it.
	held, err := hold(slices.Compact(slices.Sorted(slices.Values(inside))))
	if err != nil {
		return err
	}
	defer release(held)
	mode := "mode=755"
	if dir == "/tmp" || dir == "/dev/shm" {
		mode = "mode=1777"
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, mode); err != nil {
		return err
	}
	return bindBack(held)
}

// readOnly makes dir read-only for the agent, binding its rw subdirectory
// back read-write when there is one.
func readOnly(dir, rw string) error {
	var held []heldPath
	if _, err := os.Lstat(rw); err == nil {
		if held, err = hold([]string{rw}); err != nil {
			return err
		}
		defer release(held)
	}
	if err := unix.Mount(dir, dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	// A remount must keep the flags the mount was locked with when the
	// bottle's namespaces were made (nosuid, nodev, noexec, atime), or
	// the kernel refuses it.
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return err
	}
	flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY)
	for st1, ms := range map[int64]uintptr{
		unix.ST_NOSUID: unix.MS_NOSUID, unix.ST_NODEV: unix.MS_NODEV, unix.ST_NOEXEC: unix.MS_NOEXEC,
		unix.ST_NOATIME: unix.MS_NOATIME, unix.ST_NODIRATIME: unix.MS_NODIRATIME, unix.ST_RELATIME: unix.MS_RELATIME,
	} {
		if int64(st.Flags)&st1 != 0 {
			flags |= ms
		}
	}
	if err := unix.Mount("", dir, "", flags, ""); err != nil {
		return err
	}
	return bindBack(held)
}

// heldPath is a path and an O_PATH descriptor of it, opened before a mount
// covers it: binding /proc/self/fd/<fd> brings it back.
type heldPath struct {
	path string
	fd   int
	dir  bool
}

func hold(paths []string) ([]heldPath, error) {
	var held []heldPath
	for _, p := range paths {
		fd, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
		if err != nil {
			release(held)
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			release(held)
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		held = append(held, heldPath{path: p, fd: fd, dir: st.Mode&unix.S_IFMT == unix.S_IFDIR})
	}
	return held, nil
}

func release(held []heldPath) {
	for _, h := range held {
		unix.Close(h.fd)
	}
}

// bindBack binds each held path where it was, making a mount point for it
// in what now covers it.
func bindBack(held []heldPath) error {
	for _, h := range held {
		var err error
		if h.dir {
			err = os.MkdirAll(h.path, 0o755)
		} else if err = os.MkdirAll(filepath.Dir(h.path), 0o755); err == nil {
			var f *os.File
			if f, err = os.OpenFile(h.path, os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
				err = f.Close()
			}
		}
		if err == nil {
			err = unix.Mount("/proc/self/fd/"+strconv.Itoa(h.fd), h.path, "", unix.MS_BIND|unix.MS_REC, "")
		}
		if err != nil {
			return fmt.Errorf("bind %s back: %w", h.path, err)
		}
	}
	return nil
}

// within reports whether path is dir or inside it.
func within(path, dir string) bool {
	return path == dir || dir == "/" || strings.HasPrefix(path, dir+"/")
}
