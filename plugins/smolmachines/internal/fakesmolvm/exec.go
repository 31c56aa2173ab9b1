package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

var execFlags = []flagSpec{
	// exec has only the long --name: there is no -n.
	{long: "name", value: true},
	{long: "stream"},
	{long: "interactive", short: 'i'},
	{long: "tty", short: 't'},
	{long: "workdir", short: 'w', value: true},
	{long: "env", short: 'e', value: true, multi: true},
	{long: "detach", short: 'd'},
	{long: "timeout", value: true},
	{long: "secret-env", value: true, multi: true},
	{long: "secret-file", value: true, multi: true},
}

// guestFS maps guest paths of one machine onto host paths: mounts onto
// their host directories, everything else under the machine's rootfs dir.
type guestFS struct {
	rootfs string
	mounts []mount
}

func newGuestFS(st *store, m *machine) guestFS {
	ms := append([]mount(nil), m.Mounts...)
	sort.Slice(ms, func(i, j int) bool { return len(ms[i].Guest) > len(ms[j].Guest) })
	return guestFS{rootfs: st.rootfs(m.Name), mounts: ms}
}

// host returns the host path for guest path p and whether it is on a mount.
func (g guestFS) host(p string) (string, bool) {
	p = filepath.Clean(p)
	for _, m := range g.mounts {
		if p == m.Guest {
			return m.Host, true
		}
		if rest, ok := strings.CutPrefix(p, m.Guest+"/"); ok {
			return filepath.Join(m.Host, rest), true
		}
	}
	return filepath.Join(g.rootfs, p), false
}

// guestPath is the PATH inside the guest: the guest's own bin dirs first,
// then the host's (standing in for the image's binaries).
func (g guestFS) guestPath() string {
	var dirs []string
	for _, d := range []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		h, _ := g.host(d)
		dirs = append(dirs, h)
	}
	return strings.Join(dirs, ":") + ":" + os.Getenv("PATH")
}

// command resolves argv[0] the way the guest would see it.
func (g guestFS) command(argv0, path string) (string, error) {
	if strings.Contains(argv0, "/") {
		if h, onMount := g.host(argv0); onMount {
			return h, nil
		} else if _, err := os.Stat(h); err == nil {
			return h, nil
		}
		// Not in the guest's own files: the image's binary, which the
		// host stands in for.
		if _, err := os.Stat(argv0); err == nil {
			return argv0, nil
		}
		return "", fmt.Errorf("%s: no such file or directory", argv0)
	}
	for _, d := range filepath.SplitList(path) {
		c := filepath.Join(d, argv0)
		if fi, err := os.Stat(c); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return c, nil
		}
	}
	return "", fmt.Errorf("%s: command not found", argv0)
}

// hostArgs rewrites absolute guest paths in args to host paths.
func (g guestFS) hostArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if filepath.IsAbs(a) {
			a, _ = g.host(a)
		}
		out[i] = a
	}
	return out
}

// cmdExec is ExecCmd (src/cli/machine.rs:2626, run at :2678).
func cmdExec(st *store, args []string) error {
	p, err := parseTrailing(args, execFlags)
	if err != nil {
		return err
	}
	for _, other := range []string{"interactive", "tty", "stream"} {
		if err := p.conflicts("detach", other); err != nil {
			return err
		}
	}
	if len(p.rest) == 0 {
		return usagef("the following required arguments were not provided:\n  <COMMAND>...")
	}
	name, _ := nameOf(p)
	var timeout time.Duration
	if v := p.get("timeout"); v != "" {
		if timeout, err = time.ParseDuration(v); err != nil {
			return usagef("invalid value '%s' for '--timeout <DURATION>': invalid duration", v)
		}
		if timeout <= 0 {
			return usagef("invalid value '%s' for '--timeout <DURATION>': timeout must be greater than 0 (e.g., 5sec, 30s)", v)
		}
	}
	if len(p.vals["secret-file"]) > 0 {
		return runtimef("the fake smolvm does not implement --secret-file")
	}
	m, err := st.load(name)
	if err != nil {
		return err
	}
	if m.State != "running" {
		return errNotRunning(name)
	}
	secrets, err := secretEnv(m)
	if err != nil {
		return err
	}
	adhoc, err := secretEnv(&machine{SecretEnv: p.vals["secret-env"]})
	if err != nil {
		return err
	}
	secrets = append(secrets, adhoc...)
	g := newGuestFS(st, m)
	env := []string{"PATH=" + g.guestPath(), "HOME=" + mustHost(g, "/root"), "HOSTNAME=" + name}
	for _, e := range append(append(append([]string{}, m.Env...), secrets...), p.vals["env"]...) {
		k, v, ok := strings.Cut(e, "=")
		if !ok || !envName.MatchString(k) {
			return runtimef("invalid environment variable '%s': expected KEY=VALUE", e)
		}
		env = append(env, k+"="+v)
	}
	guestPATH := g.guestPath()
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			guestPATH = v
		}
	}
	bin, err := g.command(p.rest[0], guestPATH)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return exitCode(127)
	}
	wd := p.get("workdir")
	if wd == "" {
		wd = m.Workdir
	}
	if wd == "" {
		wd = "/"
	}
	if !filepath.IsAbs(wd) {
		return runtimef("workdir '%s' must be an absolute path", wd)
	}
	hostWD, onMount := g.host(wd)
	if !onMount {
		if err := os.MkdirAll(hostWD, 0o755); err != nil {
			return err
		}
	} else if _, err := os.Stat(hostWD); err != nil {
		return runtimef("workdir '%s' does not exist in the guest", wd)
	}

	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	cmd := exec.Command(bin, g.hostArgs(p.rest[1:])...)
	cmd.Args[0] = p.rest[0]
	cmd.Env = env
	cmd.Dir = hostWD

	if p.has("detach") {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			return runtimef("exec: %v", err)
		}
		if err := addGuestPID(st, name, cmd.Process.Pid); err != nil {
			return err
		}
		fmt.Println(cmd.Process.Pid)
		_ = cmd.Process.Release()
		return nil
	}

	tty := p.has("tty")
	interactive := p.has("interactive") || tty
	var outBuf, errBuf bytes.Buffer
	if interactive {
		cmd.Stdin = os.Stdin
	}
	switch {
	case tty || p.has("stream"):
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	default:
		// Without --stream, smolvm prints the output when the command ends.
		cmd.Stdout, cmd.Stderr = &outBuf, &errBuf
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGWINCH)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return runtimef("exec: %v", err)
	}
	_ = addGuestPID(st, name, cmd.Process.Pid)
	defer func() { _ = removeGuestPID(st, name, cmd.Process.Pid) }()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var waitErr error
	timedOut := false
loop:
	for {
		select {
		case waitErr = <-done:
			break loop
		case s := <-sigs:
			// On a tty the terminal already signalled the guest, which
			// shares our process group.
			if tty && (s == syscall.SIGINT || s == syscall.SIGQUIT || s == syscall.SIGWINCH) {
				continue
			}
			if s != syscall.SIGWINCH {
				_ = cmd.Process.Signal(s)
			}
		case <-ctx.Done():
			timedOut = true
			_ = cmd.Process.Kill()
			waitErr = <-done
			break loop
		}
	}
	_, _ = io.Copy(os.Stdout, &outBuf)
	_, _ = io.Copy(os.Stderr, &errBuf)
	if timedOut {
		return exitCode(124)
	}
	var xe *exec.ExitError
	if errors.As(waitErr, &xe) {
		if ws, ok := xe.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return exitCode(128 + int(ws.Signal()))
		}
		return exitCode(xe.ExitCode())
	}
	if waitErr != nil {
		return runtimef("exec: %v", waitErr)
	}
	return nil
}

func mustHost(g guestFS, p string) string {
	h, _ := g.host(p)
	return h
}

func addGuestPID(st *store, name string, pid int) error {
	return st.withMachine(name, func(m *machine) error {
		m.GuestPIDs = append(m.GuestPIDs, pid)
		return st.save(m)
	})
}

func removeGuestPID(st *store, name string, pid int) error {
	unlock, err := st.lock()
	if err != nil {
		return err
	}
	defer unlock()
	m, err := st.load(name)
	if err != nil {
		return nil // deleted meanwhile
	}
	kept := m.GuestPIDs[:0]
	for _, p := range m.GuestPIDs {
		if p != pid {
			kept = append(kept, p)
		}
	}
	m.GuestPIDs = kept
	return st.save(m)
}

// cmdCp is CpCmd (src/cli/machine.rs:4886, run at :4923): SRC is split at
// its first ':' when it has one (a download), else DST (an upload).
func cmdCp(st *store, args []string) error {
	p, err := parseFlags(args, []flagSpec{{long: "mode", value: true}, {long: "uid", value: true}, {long: "gid", value: true}}, 2)
	if err != nil {
		return err
	}
	if len(p.pos) != 2 {
		return usagef("the following required arguments were not provided:\n  <SRC>\n  <DST>")
	}
	src, dst := p.pos[0], p.pos[1]
	var name, gpath, local string
	upload := false
	if n, gp, ok := strings.Cut(src, ":"); ok {
		name, gpath, local = n, gp, dst
	} else if n, gp, ok := strings.Cut(dst, ":"); ok {
		name, gpath, local, upload = n, gp, src, true
	} else {
		return configErr("cp", "one of SRC or DST must use machine:path syntax (e.g., myvm:/workspace/file)")
	}
	if !upload && (p.has("mode") || p.has("uid") || p.has("gid")) {
		return configErr("cp", "--mode/--uid/--gid apply to uploads only (host -> machine)")
	}
	m, err := st.load(name)
	if err != nil {
		return err
	}
	if m.State != "running" {
		return errNotRunning(name)
	}
	hostSide, _ := newGuestFS(st, m).host(gpath)
	from, to := local, hostSide
	if !upload {
		from, to = hostSide, local
	}
	fi, err := os.Stat(from)
	if err != nil {
		if upload {
			return agentErr("read local file", "%s: No such file or directory (os error 2)", local)
		}
		return agentErr("read file", "%s: No such file or directory", gpath)
	}
	if !fi.Mode().IsRegular() {
		return agentErr("read file", "%s is not a regular file", from)
	}
	if fi.Size() > 4<<30 {
		return agentErr("file transfer", "file is larger than the 4 GiB transfer limit")
	}
	if _, err := os.Stat(filepath.Dir(to)); err != nil {
		return agentErr("write file", "destination directory of '%s' does not exist", to)
	}
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, fi.Mode().Perm())
	if err != nil {
		return agentErr("write file", "%v", err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return agentErr("write file", "%v", err)
	}
	verb := "Downloading"
	if upload {
		verb = "Uploading"
	}
	fmt.Fprintf(os.Stderr, "%s %s -> %s: %d bytes\n", verb, src, dst, fi.Size())
	return out.Close()
}
