package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// initName is argv[0] of a bottle's init: main recognizes it, and `ps` on
// the host shows which processes are bottles.
const initName = "bot-bottle-skeleton-init"

// forwarded are the signals the init passes on to the agent (Attach turns
// AttachStreams.Signals into these, sent to the init). As pid 1 of its
// namespace, the init would otherwise ignore them.
var forwarded = map[string]syscall.Signal{
	"INT": syscall.SIGINT, "TERM": syscall.SIGTERM, "HUP": syscall.SIGHUP,
	"QUIT": syscall.SIGQUIT, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2,
}

// runInit is the bottle's init: pid 1 of the bottle's fresh namespaces,
// started by Launch. It sets the namespaces up, starts the agent (at once
// with Detach, else when the first Attach connects), keeps its terminal,
// reaps orphans, records the exit code and exits; the kernel then kills
// whatever else is left in the pid namespace. It outlives the plugin
// process that started it, which is what lets a bottle run detached.
func runInit(args []string) int {
	// fd 3 is the ready pipe (see startInit). The agent must not inherit
	// it, or Launch would wait for the agent instead of the init.
	syscall.CloseOnExec(3)
	ready := os.NewFile(3, "ready")
	if os.Getpid() != 1 || len(args) != 1 {
		// Run by hand outside a new bottle, setting the hostname or
		// mounting /proc would change the host's.
		fmt.Fprintln(os.Stderr, "bot-bottle-plugin-skeleton: the bottle init only runs inside a new bottle")
		return 2
	}
	bt := bottle{dir: args[0]}
	a, err := setup(bt)
	if err != nil {
		fmt.Fprint(ready, withUserNSHint(err))
		return 1
	}
	return a.run(bt, ready)
}

// agent is the agent process's ends, as the init prepares them.
type agent struct {
	rec                   record
	stdin, stdout, stderr *os.File
	tty                   *os.File // the terminal's master side, with a TTY
	log                   *os.File // where the terminal's output goes
	relayDone             chan struct{}
	sigs                  chan os.Signal
	// dir is the init's own way into the bottle directory, opened before
	// it became read-only: the init writes started and exit through it.
	dir *os.File
}

// setup does everything that can fail before the agent runs, so that
// Launch reports it.
func setup(bt bottle) (*agent, error) {
	rec, err := bt.record()
	if err != nil {
		return nil, err
	}
	if err := syscall.Sethostname([]byte(rec.Identity)); err != nil {
		return nil, fmt.Errorf("set hostname: %w", err)
	}
	// Mounts made in here stay in here.
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return nil, fmt.Errorf("make mounts private: %w", err)
	}
	// A /proc of the bottle's own pid namespace: the agent sees its own
	// processes only.
	if err := syscall.Mount("proc", "/proc", "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
		return nil, fmt.Errorf("mount /proc: %w", err)
	}
	if err := loopbackUp(); err != nil {
		return nil, fmt.Errorf("loopback: %w", err)
	}
	a, err := ends(bt, rec)
	if err != nil {
		return nil, err
	}
	if a.dir, err = os.Open(bt.dir); err != nil {
		return nil, err
	}
	// Last, so that the init could still write the bottle's files.
	if _, err := hideHostDirs(bt, rec.Keep); err != nil {
		return nil, err
	}
	return a, nil
}

// ends makes the agent's stdin, stdout and stderr, and its terminal.
func ends(bt bottle, rec record) (a *agent, err error) {
	a = &agent{rec: rec}
	create := func(name string) (*os.File, error) {
		return os.OpenFile(bt.path(name), os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	}
	if rec.TTY {
		master, slave, err := pty.Open()
		if err != nil {
			return nil, fmt.Errorf("terminal: %w", err)
		}
		// Attach resizes the terminal through its device.
		if err := writeAtomic(bt.path(fileTTY), []byte(slave.Name())); err != nil {
			return nil, err
		}
		a.tty, a.stdin, a.stdout, a.stderr = master, slave, slave, slave
		a.log, err = create(fileStdout)
		return a, err
	}
	// Without a terminal the agent writes its logs itself: nothing to copy.
	if a.stdout, err = create(fileStdout); err != nil {
		return nil, err
	}
	if a.stderr, err = create(fileStderr); err != nil {
		return nil, err
	}
	if rec.Detach {
		// Nobody is there to type: like `docker run -d` without -i.
		a.stdin, err = os.Open(os.DevNull)
	}
	return a, err
}

// loopbackUp brings up the new network namespace's only interface, which
// starts down: agents' test servers can listen on 127.0.0.1, and nothing
// outside is reachable.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// run starts the agent and waits for it. Launch returns when the init
// closes ready: once the agent runs when detached (so that a List right
// after says running), else before the init waits for the first Attach.
func (a *agent) run(bt bottle, ready *os.File) int {
	// Handled from now on: Go's default for SIGINT, SIGTERM and SIGHUP
	// would end the init, and with it the bottle.
	a.sigs = make(chan os.Signal, 64)
	notify := []os.Signal{syscall.SIGCHLD}
	for _, s := range forwarded {
		notify = append(notify, s)
	}
	signal.Notify(a.sigs, notify...)

	var gate *os.File
	if !a.rec.Detach {
		ready.Close()
		// Opening the FIFO blocks until the first Attach opens its other
		// end: that is how the agent waits for its first Attach, so that
		// none of its output is lost.
		f, err := os.OpenFile(bt.path(fileStdin), os.O_RDONLY, 0)
		if err != nil {
			return a.finish(bt, nil, err)
		}
		gate = f
	}
	if a.tty != nil {
		// With a terminal, attaches come and go: the init holds the FIFO
		// open for reading and writing, so that one Attach closing it is
		// no end of input, and the next finds a reader. Ctrl-D travels as
		// a byte.
		keep, err := os.OpenFile(bt.path(fileStdin), os.O_RDWR, 0)
		if gate != nil {
			gate.Close()
		}
		if err != nil {
			return a.finish(bt, nil, err)
		}
		go func() { _, _ = io.Copy(a.tty, keep) }()
		a.relayDone = make(chan struct{})
		go func() { _, _ = io.Copy(a.log, a.tty); close(a.relayDone) }()
	} else if gate != nil {
		// Without one, the agent reads the FIFO itself: the first Attach
		// closing it (the end of the user's input, or a detach) is the end
		// of the agent's input.
		a.stdin = gate
	}

	cmd := exec.Command(a.rec.Command[0], a.rec.Command[1:]...)
	cmd.Dir = a.rec.Cwd
	cmd.Stdin, cmd.Stdout, cmd.Stderr = a.stdin, a.stdout, a.stderr
	// With a terminal, it becomes the agent's controlling terminal (fd 0),
	// so that Ctrl-C and resizes reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: a.tty != nil}
	// Root in the bottle, without a single capability.
	err := startWithoutCapabilities(cmd)
	if err == nil {
		_ = writeAtomicAt(a.dir, fileStarted, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"))
	}
	if a.rec.Detach {
		ready.Close()
	}
	return a.finish(bt, cmd, err)
}

// finish takes the agent from its start to the bottle's exit file. When it
// could not start, it says why and exits like a shell would (127: no such
// command, 126: cannot run it).
func (a *agent) finish(bt bottle, cmd *exec.Cmd, err error) int {
	code := 0
	if err != nil {
		fmt.Fprintf(a.stderr, "bot-bottle-plugin-skeleton: %v\n", err)
		code = 126
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			code = 127
		}
	}
	// Only the agent holds its ends now, so that its terminal hangs up
	// (and the copy to the log ends) when it and its children are done.
	for _, f := range []*os.File{a.stdin, a.stdout, a.stderr} {
		if f != nil {
			f.Close()
		}
	}
	if err == nil {
		code = reap(cmd.Process.Pid, a.sigs)
	}
	if a.relayDone != nil {
		// Copy what the agent wrote before it exited. Background processes
		// that keep the terminal open die with the init: do not wait long.
		select {
		case <-a.relayDone:
		case <-time.After(2 * time.Second):
		}
	}
	_ = writeAtomicAt(a.dir, fileExit, []byte(strconv.Itoa(code)+"\n"))
	return code
}

// reap waits for the agent, reaping every child on the way (as pid 1, the
// init inherits each orphan in the bottle: without this, zombies pile up)
// and forwarding signals to the agent. It returns the agent's exit code.
func reap(agentPid int, sigs <-chan os.Signal) int {
	for {
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
			if pid == agentPid {
				if ws.Signaled() {
					return 128 + int(ws.Signal())
				}
				return ws.ExitStatus()
			}
		}
		if sig := <-sigs; sig != syscall.SIGCHLD {
			_ = syscall.Kill(agentPid, sig.(syscall.Signal))
		}
	}
}
