package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"

	"github.com/bot-bottle/bot-bottle/plugins/smolmachines/internal/smolvm"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// drainTimeout bounds how long output is read after the exec process ended
// (a guest child may keep the pty or pipes open).
const drainTimeout = 2 * time.Second

// Attach runs the agent through `machine exec` and streams it: under a pty
// the plugin owns for a TTY (smolvm uses raw mode only when its stdin is a
// terminal), else with --stream and pipes.
func (b *Backend) Attach(ctx context.Context, req sdk.AttachRequest, streams sdk.AttachStreams) (_ sdk.ExitStatus, err error) {
	defer markNotFound(&err)
	d, err := decodeHandle(req.Handle)
	if err != nil {
		return sdk.ExitStatus{}, err
	}
	cli, err := b.cliFor(req.Handle.Identity, d)
	if err != nil {
		return sdk.ExitStatus{}, err
	}
	if err := cli.CheckRunning(ctx, d.Machine); err != nil {
		return sdk.ExitStatus{}, fmt.Errorf("attach %s: %w", req.Handle.Identity, err)
	}
	if d.Detached {
		return b.follow(ctx, cli, d, streams)
	}
	args := []string{"machine", "exec", "--name", d.Machine}
	tty := req.TTY
	if tty {
		term := os.Getenv("TERM")
		if term == "" || term == "dumb" {
			term = "xterm-256color"
		}
		args = append(args, "-it", "-w", d.Workdir, "-e", "TERM="+term)
	} else {
		args = append(args, "--stream")
		if req.Stdin && streams.Stdin != nil {
			args = append(args, "-i")
		}
		args = append(args, "-w", d.Workdir)
	}
	args = append(args, execEnvArgs(d)...)
	args = append(append(args, "--"), d.Command...)
	// Not CommandContext: a cancelled ctx is a detach, handled below.
	cmd := cli.Command(context.WithoutCancel(ctx), args...)
	var st sdk.ExitStatus
	if tty {
		st, err = runPTY(ctx, cmd, req.Size, streams)
	} else {
		st, err = runPipes(ctx, cmd, req.Stdin, streams)
	}
	if err != nil || st.Detached {
		return st, err
	}
	if st.Code == 1 {
		// Exit 1 is smolvm's as well as the guest's.
		if serr := cli.CheckRunning(context.WithoutCancel(ctx), d.Machine); serr != nil {
			return sdk.ExitStatus{}, fmt.Errorf("attach %s: smolvm exec failed: %w", req.Handle.Identity, serr)
		}
	}
	return st, nil
}

func runPTY(ctx context.Context, cmd *exec.Cmd, size sdk.TermSize, streams sdk.AttachStreams) (sdk.ExitStatus, error) {
	ws := &pty.Winsize{Rows: size.Rows, Cols: size.Cols}
	if ws.Rows == 0 || ws.Cols == 0 {
		ws = &pty.Winsize{Rows: 24, Cols: 80}
	}
	ptmx, err := pty.StartWithSize(cmd, ws)
	if err != nil {
		return sdk.ExitStatus{}, fmt.Errorf("start smolvm exec under a pty: %w", err)
	}
	defer ptmx.Close()
	outDone := make(chan struct{})
	go func() {
		defer close(outDone)
		if streams.Stdout != nil {
			_, _ = io.Copy(streams.Stdout, ptmx)
		} else {
			_, _ = io.Copy(io.Discard, ptmx)
		}
	}()
	if streams.Stdin != nil {
		go func() { _, _ = io.Copy(ptmx, streams.Stdin) }()
	}
	resize := func(s sdk.TermSize) {
		if s.Rows > 0 && s.Cols > 0 {
			_ = pty.Setsize(ptmx, &pty.Winsize{Rows: s.Rows, Cols: s.Cols})
		}
	}
	return supervise(ctx, cmd, streams, resize, func() {
		select {
		case <-outDone:
		case <-time.After(drainTimeout):
		}
	})
}

func runPipes(ctx context.Context, cmd *exec.Cmd, wantStdin bool, streams sdk.AttachStreams) (sdk.ExitStatus, error) {
	// os.Pipe rather than cmd.StdoutPipe: Wait must not wait for copies
	// that a guest child holding the pipe could keep open.
	outR, outW, err := os.Pipe()
	if err != nil {
		return sdk.ExitStatus{}, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return sdk.ExitStatus{}, err
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	var inR, inW *os.File
	if wantStdin && streams.Stdin != nil {
		if inR, inW, err = os.Pipe(); err != nil {
			return sdk.ExitStatus{}, err
		}
		cmd.Stdin = inR
	}
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if inR != nil {
		inR.Close()
	}
	if err != nil {
		outR.Close()
		errR.Close()
		if inW != nil {
			inW.Close()
		}
		return sdk.ExitStatus{}, fmt.Errorf("start smolvm exec: %w", err)
	}
	var wg sync.WaitGroup
	copyOut := func(dst io.Writer, r io.Reader) {
		defer wg.Done()
		if dst == nil {
			dst = io.Discard
		}
		_, _ = io.Copy(dst, r)
	}
	wg.Add(2)
	go copyOut(streams.Stdout, outR)
	go copyOut(streams.Stderr, errR)
	if inW != nil {
		go func() {
			_, _ = io.Copy(inW, streams.Stdin)
			inW.Close()
		}()
	}
	outDone := make(chan struct{})
	go func() { wg.Wait(); close(outDone) }()
	st, err := supervise(ctx, cmd, streams, nil, func() {
		select {
		case <-outDone:
		case <-time.After(drainTimeout):
		}
	})
	outR.Close()
	errR.Close()
	if inW != nil {
		inW.Close()
	}
	return st, err
}

// supervise waits for the exec process while forwarding resizes and
// signals. A cancelled ctx is a detach: the client process is ended and the
// caller is told the session detached.
func supervise(ctx context.Context, cmd *exec.Cmd, streams sdk.AttachStreams, resize func(sdk.TermSize), drain func()) (sdk.ExitStatus, error) {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	resizeCh, sigCh := streams.Resize, streams.Signals
	for {
		select {
		case err := <-done:
			drain()
			return exitStatus(err)
		case s, ok := <-resizeCh:
			if !ok {
				resizeCh = nil
				continue
			}
			if resize != nil {
				resize(s)
			}
		case name, ok := <-sigCh:
			if !ok {
				sigCh = nil
				continue
			}
			if sig, known := signalByName[name]; known {
				_ = cmd.Process.Signal(sig)
			}
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(2 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
			return sdk.ExitStatus{Detached: true}, nil
		}
	}
}

func exitStatus(err error) (sdk.ExitStatus, error) {
	if err == nil {
		return sdk.ExitStatus{Code: 0}, nil
	}
	var xe *exec.ExitError
	if errors.As(err, &xe) {
		if ws, ok := xe.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return sdk.ExitStatus{Code: 128 + int(ws.Signal())}, nil
		}
		return sdk.ExitStatus{Code: xe.ExitCode()}, nil
	}
	return sdk.ExitStatus{}, fmt.Errorf("smolvm exec: %w", err)
}

var signalByName = map[string]syscall.Signal{
	"INT": syscall.SIGINT, "TERM": syscall.SIGTERM, "HUP": syscall.SIGHUP, "QUIT": syscall.SIGQUIT,
	"KILL": syscall.SIGKILL, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2, "WINCH": syscall.SIGWINCH,
}

// follow attaches to an agent that Launch started detached: it streams the
// agent's output file until the agent's exit code appears. Input cannot
// reach a detached process.
func (b *Backend) follow(ctx context.Context, cli *smolvm.CLI, d handleData, streams sdk.AttachStreams) (sdk.ExitStatus, error) {
	if streams.Stderr != nil {
		_, _ = io.WriteString(streams.Stderr, "bot-bottle: the agent was started detached; following its output (input is not forwarded)\r\n")
	}
	cmd := cli.Command(context.WithoutCancel(ctx), "machine", "exec", "--name", d.Machine, "--stream", "--", "sh", "-c",
		`d=$1; while [ ! -f "$d/output" ]; do sleep 0.2; done; tail -n +1 -f "$d/output" & t=$!; `+
			`while [ ! -f "$d/exit" ]; do sleep 0.2; done; sleep 0.3; kill $t 2>/dev/null; exit "$(cat "$d/exit")"`,
		"bot-bottle-follow", guestAgentDir)
	return runPipes(ctx, cmd, false, streams)
}
