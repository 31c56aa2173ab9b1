package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The agent is uid 0 of the bottle's user namespace, which is you outside
// it. The init needs that namespace's capabilities to set the bottle up;
// the agent must have none: with them it could, for one, unmount the
// bottle's /proc and see every process of the host.

// Securebits (linux/securebits.h): uid 0 gains no capabilities at exec
// (NOROOT), setuid calls change none (NO_SETUID_FIXUP), none can be raised
// into the ambient set, and each of these is locked for every descendant.
const (
	secbitNoroot                  = 1 << 0
	secbitNorootLocked            = 1 << 1
	secbitNoSetuidFixup           = 1 << 2
	secbitNoSetuidFixupLocked     = 1 << 3
	secbitKeepCapsLocked          = 1 << 5
	secbitNoCapAmbientRaise       = 1 << 6
	secbitNoCapAmbientRaiseLocked = 1 << 7

	agentSecurebits = secbitNoroot | secbitNorootLocked | secbitNoSetuidFixup | secbitNoSetuidFixupLocked |
		secbitKeepCapsLocked | secbitNoCapAmbientRaise | secbitNoCapAmbientRaiseLocked
)

// init keeps the main thread for the main goroutine alone, for good: Go
// then never runs another goroutine on it, and in particular not the one
// that drops its thread's capabilities below. The main thread is what the
// kernel looks at when the agent asks for /proc/1/fd or /proc/1/mem: the
// agent, without capabilities, is refused only while that thread keeps
// its own. (It would get, for one, the init's read-write way into the
// bottle directory.)
func init() { runtime.LockOSThread() }

// startWithoutCapabilities starts cmd with no capabilities that it or
// anything it runs could ever regain, even as uid 0.
//
// Capabilities, securebits and no_new_privs belong to a thread, not to a
// process, and Go runs every goroutine on any of several threads. So the
// drop happens on a goroutine locked to its thread, and cmd is forked from
// that same goroutine (a fork copies the calling thread's credentials).
// The goroutine ends without unlocking, so Go ends that thread with it and
// no other goroutine ever runs on it; the init's other threads keep their
// capabilities, which it needs no more once the agent runs.
func startWithoutCapabilities(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := dropCapabilities(); err != nil {
			errc <- fmt.Errorf("drop capabilities: %w", err)
			return
		}
		errc <- cmd.Start()
	}()
	return <-errc
}

// dropCapabilities empties the calling thread's bounding, ambient,
// inheritable, permitted and effective sets, locks securebits and sets
// no_new_privs. An exec'd program's capabilities are then none at all.
func dropCapabilities() error {
	// Every capability this kernel knows, which may be more than this
	// binary's headers do.
	last := unix.CAP_LAST_CAP
	if data, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil {
			last = n
		}
	}
	for c := 0; c <= last; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			return fmt.Errorf("bounding set, capability %d: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("ambient set: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_SECUREBITS, agentSecurebits, 0, 0, 0); err != nil {
		return fmt.Errorf("securebits: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	// Last: the calls above need CAP_SETPCAP.
	var data [2]unix.CapUserData
	return unix.Capset(&unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}, &data[0])
}
