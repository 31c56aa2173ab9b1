package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// setupTimeout bounds an attach's setup, which a detach does not cancel.
const setupTimeout = time.Minute

// Attach connects streams to the bottle's agent until it exits. A container
// that Launch left created is started only after the attach is in place, so
// its first output is not lost. Cancelling ctx is a detach: the agent keeps
// running.
func (b *Backend) Attach(ctx context.Context, req sdk.AttachRequest, streams sdk.AttachStreams) (sdk.ExitStatus, error) {
	st, err := b.attach(ctx, req, streams)
	if err != nil {
		return st, finish(fmt.Errorf("attach %s: %w", req.Handle.Identity, err))
	}
	return st, nil
}

func (b *Backend) attach(ctx context.Context, req sdk.AttachRequest, streams sdk.AttachStreams) (sdk.ExitStatus, error) {
	hd, err := decodeHandle(req.Handle)
	if err != nil {
		return sdk.ExitStatus{}, err
	}
	tm := newSteps()
	defer tm.log(b.log, "attach timing", "identity", req.Handle.Identity)
	// A detach while the attach is set up must leave the agent running: a
	// first start the session cancelled half-way would leave it created. So
	// the setup (inspect, attach, first start) runs to its end, and a detach
	// returns only after it. The attached streams outlive sctx.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), setupTimeout)
	defer cancel()
	c, err := b.engine(sctx)
	if err != nil {
		return sdk.ExitStatus{}, err
	}
	insp, err := c.ContainerInspect(sctx, hd.Container)
	if err != nil {
		return sdk.ExitStatus{}, engineErr(c, "inspect container "+hd.Name, err)
	}
	state := insp.State
	if state == nil {
		return sdk.ExitStatus{}, fmt.Errorf("container %s has no state", hd.Name)
	}
	if state.Status == "exited" || state.Status == "dead" {
		return sdk.ExitStatus{Code: state.ExitCode}, nil
	}
	fresh := state.Status == "created"
	// The container's own setting decides the stream format, whatever the
	// caller believes.
	tty := insp.Config != nil && insp.Config.Tty
	stdout, stderr := streams.Stdout, streams.Stderr
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	withStdin := req.Stdin && streams.Stdin != nil
	// A first attach without input closes the agent's stdin at once, as
	// `docker run` without -i would; a reattach leaves it alone.
	closeStdin := fresh && !withStdin && !tty
	resp, err := c.ContainerAttach(sctx, hd.Container, container.AttachOptions{
		Stream: true, Stdin: withStdin || closeStdin, Stdout: true, Stderr: true,
	})
	if err != nil {
		return sdk.ExitStatus{}, engineErr(c, "attach to "+hd.Name, err)
	}
	defer resp.Close()
	tm.mark("inspect-attach")

	outDone := make(chan error, 1)
	go func() {
		var err error
		if tty {
			_, err = io.Copy(stdout, resp.Reader)
		} else {
			_, err = stdcopy.StdCopy(stdout, stderr, resp.Reader)
		}
		outDone <- err
	}()
	switch {
	case withStdin:
		go func() {
			_, err := io.Copy(resp.Conn, streams.Stdin)
			if err != nil && !errors.Is(err, io.EOF) {
				b.log.Debug("stdin copy ended", "identity", req.Handle.Identity, "error", err)
			}
			// EOF from the user becomes EOF for the agent (StdinOnce).
			_ = resp.CloseWrite()
		}()
	case closeStdin:
		_ = resp.CloseWrite()
	}

	if fresh {
		if err := c.ContainerStart(sctx, hd.Container, container.StartOptions{}); err != nil {
			return sdk.ExitStatus{}, engineErr(c, "start container "+hd.Name, err)
		}
		tm.mark("start")
	}
	done := make(chan struct{})
	defer close(done)
	if tty && req.Size.Rows > 0 && req.Size.Cols > 0 {
		if err := resize(ctx, c, hd.Container, req.Size); err != nil {
			b.log.Debug("initial terminal size not applied", "identity", req.Handle.Identity, "error", err)
		}
	}
	go b.forward(ctx, c, hd.Container, tty, streams, done)

	select {
	case <-ctx.Done():
		return sdk.ExitStatus{Detached: true}, nil
	case err := <-outDone:
		if err != nil && ctx.Err() == nil {
			b.log.Debug("output stream ended", "identity", req.Handle.Identity, "error", err)
		}
	}
	tm.mark("output")
	code, err := waitExit(ctx, c, hd.Container)
	if err != nil {
		if ctx.Err() != nil {
			return sdk.ExitStatus{Detached: true}, nil
		}
		return sdk.ExitStatus{}, engineErr(c, "wait for "+hd.Name, err)
	}
	tm.mark("wait")
	return sdk.ExitStatus{Code: code}, nil
}

// forward passes terminal size changes and signals to the container until
// the attach ends.
func (b *Backend) forward(ctx context.Context, c *client.Client, id string, tty bool, streams sdk.AttachStreams, done <-chan struct{}) {
	rs, sigs := streams.Resize, streams.Signals
	for {
		select {
		case <-ctx.Done():
			return
		case <-done:
			return
		case sz, ok := <-rs:
			if !ok {
				rs = nil
				continue
			}
			if tty {
				if err := resize(ctx, c, id, sz); err != nil {
					b.log.Debug("terminal size not applied", "error", err)
				}
			}
		case sig, ok := <-sigs:
			if !ok {
				sigs = nil
				continue
			}
			if err := c.ContainerKill(ctx, id, sig); err != nil {
				b.log.Debug("signal not delivered", "signal", sig, "error", err)
			}
		}
	}
}

// resize sets the container's terminal size. Right after a start the engine
// may not accept it yet, so it retries briefly.
func resize(ctx context.Context, c *client.Client, id string, sz sdk.TermSize) error {
	opts := container.ResizeOptions{Height: uint(sz.Rows), Width: uint(sz.Cols)}
	var err error
	for i := 0; i < 10; i++ {
		if err = c.ContainerResize(ctx, id, opts); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(i+1) * 10 * time.Millisecond):
		}
	}
	return err
}

// waitExit returns the exit code of a container that is stopping or stopped.
func waitExit(ctx context.Context, c *client.Client, id string) (int, error) {
	wc, ec := c.ContainerWait(ctx, id, container.WaitConditionNotRunning)
	select {
	case w := <-wc:
		if w.Error != nil && w.Error.Message != "" {
			return 0, errors.New(w.Error.Message)
		}
		return int(w.StatusCode), nil
	case err := <-ec:
		return 0, err
	}
}
