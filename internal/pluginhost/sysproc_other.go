//go:build !linux

package pluginhost

import (
	"os"
	"syscall"
)

// pluginSysProcAttr puts a plugin in its own process group (see the Linux
// version); without Pdeathsig a plugin notices a dead core by polling.
func pluginSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// execPathOf has no equivalent here: the checksum is go-plugin's, on the
// path, right before exec.
func execPathOf(*os.File) (string, bool) { return "", false }

// changeTime is not read here: execPathOf never verifies a descriptor.
func changeTime(os.FileInfo) (int64, bool) { return 0, false }

// inodeOf is not read here: nothing is exec'd from a descriptor, so
// nothing is cached (see verifyCache).
func inodeOf(os.FileInfo) (dev, ino uint64, ok bool) { return 0, 0, false }
