//go:build unix

package state

import "syscall"

// oNoFollow makes opening a lock file fail rather than follow a symlink.
const oNoFollow = syscall.O_NOFOLLOW
