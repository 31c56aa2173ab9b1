package backend

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/docker/docker/client"
	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// setidBits are S_ISUID|S_ISGID: a file with either runs with its owner's
// or group's rights for whoever runs it.
const setidBits = 0o6000

// Open flags that create a file: O_CREAT and __O_TMPFILE (O_TMPFILE is
// __O_TMPFILE|O_DIRECTORY). Linux values, the same on every architecture
// the engine's default profile lists but alpha, parisc and sparc, which it
// does not run on.
const createFlags = 0o100 | 0o20000000

// modeArg is where a file-creating or mode-changing call takes its mode,
// and for open and openat where their flags are (noFlags: none to look at).
var modeArg = []struct {
	name        string
	flags, mode uint
}{
	{"chmod", noFlags, 1},
	{"fchmod", noFlags, 1},
	{"fchmodat", noFlags, 2},
	{"fchmodat2", noFlags, 2},
	{"creat", noFlags, 1},
	{"mkdir", noFlags, 1},
	{"mkdirat", noFlags, 2},
	{"mknod", noFlags, 1},
	{"mknodat", noFlags, 2},
	{"open", 1, 2},
	{"openat", 2, 3},
}

const noFlags = ^uint(0)

// engineFeatures is what the engine offers that the bottle's hardening uses.
type engineFeatures struct {
	// init: the engine has an init binary (docker-init) for HostConfig.Init.
	init bool
	// seccomp: the engine applies seccomp profiles.
	seccomp bool
	// runtimes: the OCI runtimes registered with the engine.
	runtimes []string
}

func probeEngine(ctx context.Context, c *client.Client) (engineFeatures, error) {
	info, err := c.Info(ctx)
	if err != nil {
		return engineFeatures{}, engineErr(c, "engine info", err)
	}
	f := engineFeatures{init: info.InitBinary != ""}
	for n := range info.Runtimes {
		f.runtimes = append(f.runtimes, n)
	}
	sort.Strings(f.runtimes)
	for _, o := range info.SecurityOptions {
		if strings.Contains(o, "name=seccomp") && !strings.Contains(o, "profile=unconfined") {
			f.seccomp = true
		}
	}
	return f, nil
}

// noSetidProfile is the engine's default seccomp profile, as moby ships it,
// with every call that sets a file's mode allowed only without the setuid
// and setgid bits: a bottle cannot plant a file that runs with its owner's
// rights for whoever runs it — in a bind-mounted project, the host's. The
// engine takes a custom profile only whole, hence the copy of its default.
func noSetidProfile() ([]byte, error) {
	p := seccomp.DefaultProfile()
	guarded := map[string]bool{"openat2": true}
	for _, m := range modeArg {
		guarded[m.name] = true
	}
	for _, s := range p.Syscalls {
		if s.Action != specs.ActAllow || len(s.Args) > 0 {
			continue
		}
		s.Names = slices.DeleteFunc(s.Names, func(n string) bool { return guarded[n] })
	}
	masked := func(index uint, mask uint64) specs.LinuxSeccompArg {
		return specs.LinuxSeccompArg{Index: index, Value: mask, ValueTwo: 0, Op: specs.OpMaskedEqual}
	}
	rule := func(name string, act specs.LinuxSeccompAction, args ...specs.LinuxSeccompArg) *seccomp.Syscall {
		return &seccomp.Syscall{LinuxSyscall: specs.LinuxSyscall{Names: []string{name}, Action: act, Args: args}}
	}
	for _, m := range modeArg {
		p.Syscalls = append(p.Syscalls, rule(m.name, specs.ActAllow, masked(m.mode, setidBits)))
		if m.flags != noFlags {
			// Without a create flag the mode is not used, whatever it holds.
			p.Syscalls = append(p.Syscalls, rule(m.name, specs.ActAllow, masked(m.flags, createFlags)))
		}
	}
	// openat2's mode sits in a struct seccomp cannot read; its callers
	// fall back to openat on ENOSYS.
	errno := uint(unix.ENOSYS)
	o2 := rule("openat2", specs.ActErrno)
	o2.ErrnoRet = &errno
	p.Syscalls = append(p.Syscalls, o2)
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("seccomp profile: %w", err)
	}
	return b, nil
}
