package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Unprivileged user namespaces are what let the skeleton run without
// privileges, and some hosts refuse them. The refusal shows up as a bare
// "operation not permitted" (creating the namespaces, or mounting /proc
// inside them), so Launch says what is the likely cause.

// withUserNSHint adds the likely cause to an error that looks like a
// refusal of the bottle's namespaces.
func withUserNSHint(err error) error {
	if err == nil || !(errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.ENOSPC)) {
		return err
	}
	return &hinted{err: err, hint: userNSHint("/proc/sys")}
}

type hinted struct {
	err  error
	hint string
}

func (h *hinted) Error() string { return h.err.Error() + " (likely cause: " + h.hint + ")" }
func (h *hinted) Unwrap() error { return h.err }

// userNSHint names what on this host most likely refuses unprivileged user
// namespaces, from the sysctls under procSys.
func userNSHint(procSys string) string {
	read := func(name string) string {
		data, _ := os.ReadFile(filepath.Join(procSys, name))
		return strings.TrimSpace(string(data))
	}
	switch {
	case read("kernel/apparmor_restrict_unprivileged_userns") == "1":
		return "AppArmor restricts unprivileged user namespaces (sysctl kernel.apparmor_restrict_unprivileged_userns=1, the default since Ubuntu 23.10): " +
			"give this plugin's binary an AppArmor profile that allows userns, or set the sysctl to 0"
	case read("kernel/unprivileged_userns_clone") == "0":
		return "unprivileged user namespaces are disabled (sysctl kernel.unprivileged_userns_clone=0)"
	case read("user/max_user_namespaces") == "0":
		return "user namespaces are disabled (sysctl user.max_user_namespaces=0)"
	}
	return "user namespaces are not available to this process (inside a container, or refused by a seccomp filter)"
}
