package main

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/creack/pty"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// poll is how often Attach looks for new output and for the agent's end.
// Polling files keeps the template simple; inotify would save the wakeups.
const poll = 50 * time.Millisecond

// attach connects the caller to the agent through the bottle's files: the
// user's input into the stdin FIFO, the logs out. Opening the FIFO starts an
// agent that waits for its first Attach. The agent never depends on the
// caller: it writes to files, not to this process, so a detach (ctx
// cancelled), this plugin process exiting and a later Attach from another
// one all leave it running.
func (bt bottle) attach(ctx context.Context, req sdk.AttachRequest, s sdk.AttachStreams) (sdk.ExitStatus, error) {
	rec, err := bt.record()
	if err != nil {
		return sdk.ExitStatus{}, err
	}
	// The init, found once (it is not in any file: see runtime_proc.go).
	p, found := bt.findInit()
	alive := func() bool { return found && p.alive() }
	done := make(chan struct{})
	defer close(done)
	if rec.TTY {
		// Sized before the agent starts: its first look at its terminal
		// must be right.
		if req.Size.Rows > 0 && req.Size.Cols > 0 {
			bt.resize(req.Size)
		}
		go func() {
			for {
				select {
				case sz, ok := <-s.Resize:
					if !ok {
						return
					}
					bt.resize(sz)
				case <-done:
					return
				}
			}
		}()
	}
	go func() {
		for {
			select {
			case name, ok := <-s.Signals:
				if !ok {
					return
				}
				if sig, known := forwarded[strings.TrimPrefix(name, "SIG")]; known {
					if alive() {
						_ = syscall.Kill(p.pid, sig) // the init passes it on
					}
				}
			case <-done:
				return
			}
		}
	}()

	in, err := bt.openStdin(ctx, alive)
	if err != nil {
		return sdk.ExitStatus{}, err
	}
	if in != nil {
		defer in.Close()
		go func() {
			if req.Stdin && s.Stdin != nil {
				_, _ = io.Copy(in, s.Stdin)
			}
			// The end of the user's input. Without a terminal the agent
			// sees it as its own; with one, closing changes nothing.
			in.Close()
		}()
	}
	return bt.follow(ctx, alive, rec.TTY, orDiscard(s.Stdout), orDiscard(s.Stderr))
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// openStdin opens the writing end of the bottle's stdin FIFO, or returns
// nil when nobody reads it any more (a detached bottle without a terminal,
// or an agent that closed its input). Until the agent starts, the init may
// not be blocked on the other end yet: try again until it is.
func (bt bottle) openStdin(ctx context.Context, alive func() bool) (*os.File, error) {
	for {
		// Non-blocking: a blocking open would wait forever on a bottle
		// that takes no input.
		f, err := os.OpenFile(bt.path(fileStdin), os.O_WRONLY|syscall.O_NONBLOCK, 0)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.ENXIO) {
			return nil, err
		}
		if bt.exists(fileStarted) || bt.exists(fileExit) || !alive() {
			return nil, nil
		}
		select {
		case <-ctx.Done():
			return nil, nil // follow reports the detach
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// resize sets the size of the bottle's terminal through its device; the
// kernel tells the agent (SIGWINCH).
func (bt bottle) resize(sz sdk.TermSize) {
	data, err := os.ReadFile(bt.path(fileTTY))
	if err != nil {
		return
	}
	dev, ok := ptsDevice(string(data))
	if !ok {
		return
	}
	f, err := os.OpenFile(dev, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return
	}
	defer f.Close()
	_ = pty.Setsize(f, &pty.Winsize{Rows: sz.Rows, Cols: sz.Cols})
}

// ptsDevice checks the tty file's content before Attach opens it: only ever
// a terminal, /dev/pts/<n>, because the file is in a directory a user (and
// the agent) can write, and opening some devices does things.
func ptsDevice(s string) (string, bool) {
	dev := filepath.Clean(strings.TrimSpace(s))
	n := strings.TrimPrefix(dev, "/dev/pts/")
	if n == dev || n == "" || strings.Trim(n, "0123456789") != "" {
		return "", false
	}
	return dev, true
}

// follow copies the agent's logs to the caller from their start (nothing is
// lost, and a second Attach replays like `docker logs -f`) until the
// bottle's init has exited, returning the agent's code, or the caller
// detaches.
func (bt bottle) follow(ctx context.Context, alive func() bool, tty bool, stdout, stderr io.Writer) (sdk.ExitStatus, error) {
	out, err := os.Open(bt.path(fileStdout))
	if err != nil {
		return sdk.ExitStatus{}, err
	}
	defer out.Close()
	var errLog *os.File
	if !tty {
		if errLog, err = os.Open(bt.path(fileStderr)); err != nil {
			return sdk.ExitStatus{}, err
		}
		defer errLog.Close()
	}
	copyNew := func() {
		_, _ = io.Copy(stdout, out)
		if errLog != nil {
			_, _ = io.Copy(stderr, errLog)
		}
	}
	for {
		// The init writes the exit file after the agent's last output,
		// then exits: once it is gone, the logs and the exit file are
		// complete. An exit file alone proves nothing (the agent can
		// forge one, see runtime_proc.go), so the kernel decides the end.
		running := alive()
		copyNew()
		if !running {
			code, ok := bt.exitCode()
			if !ok {
				// Killed (by Stop) without a word: report it as
				// SIGKILL, as a shell would.
				code = 128 + int(syscall.SIGKILL)
			}
			return sdk.ExitStatus{Code: code}, nil
		}
		select {
		case <-ctx.Done():
			return sdk.ExitStatus{Detached: true}, nil
		case <-time.After(poll):
		}
	}
}
