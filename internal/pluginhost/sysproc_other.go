//go:build !linux

package pluginhost

import "syscall"

// pluginSysProcAttr puts a plugin in its own process group (see the Linux
// version); without Pdeathsig a plugin notices a dead core by polling.
func pluginSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
