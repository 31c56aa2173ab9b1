package pluginhost

import "syscall"

// pluginSysProcAttr puts a plugin in its own process group — a Ctrl-C at
// the terminal is for the agent or for bot-bottle, which tears down in
// order; it must not kill the plugin first — and has the kernel kill it when
// the core dies, so that a plugin never goes on changing the engine after a
// kill -9 of its caller (go-plugin's own check only polls).
func pluginSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
