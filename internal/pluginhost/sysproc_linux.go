package pluginhost

import (
	"os"
	"strconv"
	"syscall"
)

// pluginSysProcAttr puts a plugin in its own process group — a Ctrl-C at
// the terminal is for the agent or for bot-bottle, which tears down in
// order; it must not kill the plugin first — and has the kernel kill it when
// the core dies, so that a plugin never goes on changing the engine after a
// kill -9 of its caller (go-plugin's own check only polls).
func pluginSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// execPathOf is a path that execs exactly the file open as f: the kernel
// resolves it to f's inode whatever becomes of the name it was opened by.
func execPathOf(f *os.File) (string, bool) {
	p := "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
	if _, err := os.Stat(p); err != nil {
		return "", false // no /proc
	}
	return p, true
}

// changeTime is fi's inode change time, which every write moves and no
// user can set back.
func changeTime(fi os.FileInfo) (int64, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Ctim.Nano(), true
}

// inodeOf is the device and inode number of fi, which a rename of another
// file over the name, or a copy in its place, changes.
func inodeOf(fi os.FileInfo) (dev, ino uint64, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return st.Dev, st.Ino, true
}
