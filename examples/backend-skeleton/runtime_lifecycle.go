package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// launch makes the bottle's directory and starts its init in new
// namespaces. On failure it leaves nothing behind.
func (bt bottle) launch(ctx context.Context, spec sdk.Spec, home string, progress func(sdk.Progress)) (err error) {
	if err := os.MkdirAll(filepath.Dir(bt.dir), 0o700); err != nil {
		return err
	}
	if err := os.Mkdir(bt.dir, 0o700); err != nil {
		// The core stops a bottle before it reuses its identity.
		return err
	}
	var initCmd *exec.Cmd
	defer func() {
		// Launch cleans up after itself; Stop by identity would too.
		if err != nil {
			if initCmd != nil {
				_ = initCmd.Process.Kill()
			}
			_ = os.RemoveAll(bt.dir)
		}
	}()

	cwd := spec.Cwd
	if cwd == "" || spec.CopyCwd {
		cwd = bt.path(dirWork)
		if spec.CopyCwd {
			progress(sdk.Progress{Stage: "copy", Message: "copying " + spec.Cwd})
			err = os.CopyFS(cwd, os.DirFS(spec.Cwd))
		} else {
			err = os.Mkdir(cwd, 0o700)
		}
		if err != nil {
			return fmt.Errorf("project: %w", err)
		}
	}
	if spec.HelperBinary != "" {
		if err = os.Mkdir(bt.path(dirBin), 0o700); err == nil {
			err = os.Symlink(spec.HelperBinary, filepath.Join(bt.path(dirBin), "bottle"))
		}
		if err != nil {
			return fmt.Errorf("helper: %w", err)
		}
	}
	keep := []string{spec.QueueDir, spec.HelperBinary}
	if !spec.CopyCwd {
		keep = append(keep, spec.Cwd)
	}
	if bin, err := exec.LookPath(spec.Command[0]); err == nil {
		if bin, err = filepath.Abs(bin); err == nil {
			keep = append(keep, bin)
		}
	}
	rec := record{Identity: spec.Identity, Home: home, Agent: spec.Agent.Name, Command: spec.Command, Cwd: cwd,
		TTY: spec.TTY, Detach: spec.Detach, Created: time.Now().UTC().Format(time.RFC3339),
		Keep: slices.DeleteFunc(keep, func(p string) bool { return p == "" })}
	if err = bt.writeRecord(rec); err != nil {
		return err
	}
	if err = syscall.Mkfifo(bt.path(fileStdin), 0o600); err != nil {
		return fmt.Errorf("stdin: %w", err)
	}

	progress(sdk.Progress{Stage: "namespaces", Message: "creating user, mount, pid, network, uts and ipc namespaces"})
	initCmd, err = bt.startInit(ctx, agentEnv(spec, bt))
	return err
}

// agentEnv is the agent's whole environment. Not the plugin's: that is the
// core's, with whatever the user exported, and a bottle gets only the
// values its agent definition names (Spec.Env), plus what a host program
// needs and the bottle's own variables.
func agentEnv(spec sdk.Spec, bt bottle) []string {
	var env []string
	for _, k := range []string{"HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/bin:/usr/bin:/bin"
	}
	if spec.HelperBinary != "" {
		path = bt.path(dirBin) + ":" + path
	}
	env = append(env, "PATH="+path)
	if spec.TTY {
		term := os.Getenv("TERM")
		if term == "" || term == "dumb" {
			term = "xterm-256color"
		}
		env = append(env, "TERM="+term)
	}
	env = append(env, sdk.EnvIdentity+"="+spec.Identity)
	if spec.QueueDir != "" {
		// The host path: a host process has no sdk.GuestQueueDir.
		env = append(env, sdk.EnvQueueDir+"="+spec.QueueDir)
	}
	keys := make([]string, 0, len(spec.Env))
	for k := range spec.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+spec.Env[k])
	}
	return env
}

// startInit starts the bottle's init (this binary, see runtime_init.go) in new
// namespaces and waits until it is ready: namespaces set up, files made and,
// with Detach, the agent started. Otherwise the init waits for the first
// Attach to start it.
func (bt bottle) startInit(ctx context.Context, env []string) (*exec.Cmd, error) {
	// The init reports a setup failure on this pipe and closes it when
	// ready, so Launch can say what went wrong instead of leaving a dead
	// bottle behind.
	ready, readyW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer ready.Close()
	uid, gid := os.Getuid(), os.Getgid()
	cmd := &exec.Cmd{
		// The init is this very binary; /proc/self/exe names it even when
		// it was started through a relative path or replaced on disk.
		Path:       "/proc/self/exe",
		Args:       []string{initName, bt.dir},
		Env:        env, // the agent's: the init passes its own environment on
		ExtraFiles: []*os.File{readyW},
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID |
				syscall.CLONE_NEWNET | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC,
			// Root in the bottle is the caller outside it (like
			// `unshare -r`): no privileges, no subordinate id ranges, and
			// the init can still set up its namespaces. Its files on the
			// host are the caller's own.
			UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}},
			GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: gid, Size: 1}},
			GidMappingsEnableSetgroups: false,
			// Its own session: the caller's terminal signals (Ctrl-C in the
			// core's process group) never reach a bottle directly.
			Setsid: true,
		},
	}
	err = cmd.Start()
	readyW.Close()
	if err != nil {
		return nil, fmt.Errorf("start namespaces: %w", withUserNSHint(err))
	}
	// This process reaps the init if it exits first; when this process
	// goes, the init lives on (a detached bottle must).
	go func() { _ = cmd.Wait() }()
	_ = ready.SetReadDeadline(time.Now().Add(30 * time.Second))
	stopRead := context.AfterFunc(ctx, func() { _ = ready.SetReadDeadline(time.Now()) })
	defer stopRead()
	var msg bytes.Buffer
	_, err = msg.ReadFrom(ready)
	switch {
	case msg.Len() > 0:
		return cmd, fmt.Errorf("bottle setup: %s", strings.TrimSpace(msg.String()))
	case ctx.Err() != nil:
		return cmd, ctx.Err()
	case err != nil:
		return cmd, fmt.Errorf("bottle setup: no answer from its init: %w", err)
	}
	return cmd, nil
}

// stop kills the bottle's processes and removes its directory. It is
// repeatable: a bottle already gone is no error. It looks for the init
// even when the directory is gone, since the agent may have moved it.
func (bt bottle) stop(ctx context.Context) ([]string, error) {
	var removed []string
	for _, p := range findInits()[bt.dir] {
		// The init is pid 1 of the bottle's pid namespace: when it dies,
		// the kernel kills every other process in there, however deep.
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
		for p.alive() {
			select {
			case <-ctx.Done():
				return removed, fmt.Errorf("stop %s: init %d still alive: %w", filepath.Base(bt.dir), p.pid, ctx.Err())
			case <-time.After(10 * time.Millisecond):
			}
		}
		removed = append(removed, fmt.Sprintf("process %d (and its pid namespace)", p.pid))
	}
	if _, err := os.Lstat(bt.dir); errors.Is(err, os.ErrNotExist) {
		return removed, nil
	}
	if err := os.RemoveAll(bt.dir); err != nil {
		return removed, fmt.Errorf("stop %s: %w", filepath.Base(bt.dir), err)
	}
	return append(removed, bt.dir), nil
}

// found is one bottle under root, as List reports it.
type found struct {
	bottle
	id        string
	rec       record
	status    string
	resources []string
}

// listBottles finds the bottles under root: its directories, and the live
// inits of bottles under root whose directory is gone.
func listBottles(root string) ([]found, error) {
	entries, err := os.ReadDir(root)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	inits := findInits()
	var out []found
	for _, e := range entries {
		if !e.IsDir() || !validName(e.Name()) {
			continue
		}
		bt := bottle{dir: filepath.Join(root, e.Name())}
		// A bottle whose launch died half way has no record yet; list it
		// anyway, so that the core's prune stops it.
		rec, _ := bt.record()
		res := []string{bt.dir}
		for _, p := range inits[bt.dir] {
			res = append(res, fmt.Sprintf("process %d", p.pid))
		}
		out = append(out, found{bottle: bt, id: e.Name(), rec: rec, status: bt.status(len(inits[bt.dir]) > 0), resources: res})
		delete(inits, bt.dir)
	}
	for _, dir := range slices.Sorted(maps.Keys(inits)) {
		if filepath.Dir(dir) != root || !validName(filepath.Base(dir)) {
			continue
		}
		ps := inits[dir]
		res := []string{}
		for _, p := range ps {
			res = append(res, fmt.Sprintf("process %d (its directory %s is gone)", p.pid, dir))
		}
		out = append(out, found{bottle: bottle{dir: dir}, id: filepath.Base(dir), status: sdk.StatusRunning, resources: res})
	}
	return out, nil
}
