package sdk

import (
	"context"

	"errors"
	"fmt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"io"
	"sync"
	"time"

	pb "github.com/bot-bottle/bot-bottle/sdk/internal/pluginpb"
)

// Client is the core's view of a plugin: it implements Backend and every
// optional interface by calling the plugin over gRPC. Optional calls to a
// plugin without the capability fail with ErrNotSupported.
type Client struct {
	rpc pb.BackendClient
}

var (
	_ Backend       = (*Client)(nil)
	_ Committer     = (*Client)(nil)
	_ Execer        = (*Client)(nil)
	_ Copier        = (*Client)(nil)
	_ EgressUpdater = (*Client)(nil)
)

func (c *Client) Info(ctx context.Context) (Info, error) {
	r, err := c.rpc.Info(ctx, &pb.InfoRequest{})
	if err != nil {
		return Info{}, fromStatus("info", err)
	}
	return Info{Name: r.Name, Version: r.Version, APIVersions: r.ApiVersions,
		Capabilities: capsFromStrings(r.Capabilities), Details: r.Details}, nil
}

func (c *Client) Prepare(ctx context.Context, spec Spec) (Plan, error) {
	r, err := c.rpc.Prepare(ctx, &pb.PrepareRequest{Spec: specToPB(spec)})
	if err != nil {
		return Plan{}, fromStatus("prepare", err)
	}
	plan := Plan{Warnings: r.Warnings, Data: r.Data}
	for _, l := range r.Preflight {
		plan.Preflight = append(plan.Preflight, PreflightLine{Key: l.Key, Value: l.Value})
	}
	return plan, nil
}

func (c *Client) Launch(ctx context.Context, spec Spec, plan Plan, progress func(Progress)) (Handle, error) {
	stream, err := c.rpc.Launch(ctx, &pb.LaunchRequest{Spec: specToPB(spec), PlanData: plan.Data})
	if err != nil {
		return Handle{}, fromStatus("launch", err)
	}
	for {
		ev, err := stream.Recv()
		if err == io.EOF {
			return Handle{}, fmt.Errorf("launch: %w (stream ended without a handle)", ErrPluginGone)
		}
		if err != nil {
			return Handle{}, fromStatus("launch", err)
		}
		switch e := ev.Event.(type) {
		case *pb.LaunchEvent_Progress:
			if progress != nil {
				p := e.Progress
				progress(Progress{Stage: p.Stage, Message: p.Message, ID: p.Id, Current: p.Current, Total: p.Total})
			}
		case *pb.LaunchEvent_Handle:
			return handleFromPB(e.Handle), nil
		}
	}
}

// HeartbeatInterval is how often the core tells an attached plugin it is
// still there.
const HeartbeatInterval = 5 * time.Second

// Attach streams the caller's stdio to the bottle until the agent exits or
// ctx is cancelled (a detach).
func (c *Client) Attach(ctx context.Context, req AttachRequest, s AttachStreams) (ExitStatus, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.rpc.Attach(ctx)
	if err != nil {
		return ExitStatus{}, fromStatus("attach", err)
	}
	var sendMu sync.Mutex
	send := func(in *pb.AttachInput) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(in)
	}
	if err := send(&pb.AttachInput{Input: &pb.AttachInput_Setup{Setup: &pb.AttachSetup{
		Handle: handleToPB(req.Handle), Tty: req.TTY, Size: sizeToPB(req.Size), Stdin: req.Stdin && s.Stdin != nil}}}); err != nil {
		return ExitStatus{}, fromStatus("attach", err)
	}

	if req.Stdin && s.Stdin != nil {
		go func() {
			buf := make([]byte, 32*1024)
			for {
				n, err := s.Stdin.Read(buf)
				if n > 0 {
					if send(&pb.AttachInput{Input: &pb.AttachInput_Stdin{Stdin: append([]byte(nil), buf[:n]...)}}) != nil {
						return
					}
				}
				if err != nil {
					if ctx.Err() == nil {
						_ = send(&pb.AttachInput{Input: &pb.AttachInput_StdinClose{StdinClose: true}})
					}
					return
				}
			}
		}()
	}
	go func() {
		t := time.NewTicker(HeartbeatInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case sz, ok := <-s.Resize:
				if !ok {
					s.Resize = nil
					continue
				}
				_ = send(&pb.AttachInput{Input: &pb.AttachInput_Resize{Resize: sizeToPB(sz)}})
			case sig, ok := <-s.Signals:
				if !ok {
					s.Signals = nil
					continue
				}
				_ = send(&pb.AttachInput{Input: &pb.AttachInput_Signal{Signal: sig}})
			case <-t.C:
				_ = send(&pb.AttachInput{Input: &pb.AttachInput_Heartbeat{Heartbeat: true}})
			}
		}
	}()

	for {
		out, err := stream.Recv()
		if err == io.EOF {
			return ExitStatus{}, fmt.Errorf("attach: %w (stream ended without an exit status)", ErrPluginGone)
		}
		if err != nil {
			// The caller's cancellation or deadline is a detach, even when
			// the plugin saw it first and ended the stream itself.
			if ctx.Err() != nil || isCancel(err) && callerDone(ctx) {
				return ExitStatus{Detached: true}, nil
			}
			return ExitStatus{}, fromStatus("attach", err)
		}
		switch o := out.Output.(type) {
		case *pb.AttachOutput_Stdout:
			if s.Stdout != nil {
				_, _ = s.Stdout.Write(o.Stdout)
			}
		case *pb.AttachOutput_Stderr:
			if s.Stderr != nil {
				_, _ = s.Stderr.Write(o.Stderr)
			}
		case *pb.AttachOutput_Exit:
			return ExitStatus{Code: int(o.Exit.Code), Detached: o.Exit.Detached}, nil
		}
	}
}

func (c *Client) Exec(ctx context.Context, req ExecRequest) (ExecResult, error) {
	r, err := c.rpc.Exec(ctx, &pb.ExecRequest{Handle: handleToPB(req.Handle), Command: req.Command,
		Workdir: req.Workdir, Stdin: req.Stdin, User: req.User})
	if err != nil {
		return ExecResult{}, fromStatus("exec", err)
	}
	return ExecResult{ExitCode: int(r.ExitCode), Stdout: r.Stdout, Stderr: r.Stderr}, nil
}

func (c *Client) CopyIn(ctx context.Context, h Handle, path string, tar []byte) error {
	_, err := c.rpc.CopyIn(ctx, &pb.CopyInRequest{Handle: handleToPB(h), Path: path, Tar: tar})
	return fromStatus("copy in", err)
}

func (c *Client) CopyOut(ctx context.Context, h Handle, path string) ([]byte, error) {
	r, err := c.rpc.CopyOut(ctx, &pb.CopyOutRequest{Handle: handleToPB(h), Path: path})
	if err != nil {
		return nil, fromStatus("copy out", err)
	}
	return r.Tar, nil
}

func (c *Client) Commit(ctx context.Context, h Handle, snapshotDir string) (CommitResult, error) {
	r, err := c.rpc.Commit(ctx, &pb.CommitRequest{Handle: handleToPB(h), SnapshotDir: snapshotDir})
	if err != nil {
		return CommitResult{}, fromStatus("commit", err)
	}
	return CommitResult{Image: r.Image, Notes: r.Notes}, nil
}

func (c *Client) Stop(ctx context.Context, req StopRequest) ([]string, error) {
	pr := &pb.StopRequest{Identity: req.Identity}
	if req.Handle != nil {
		pr.Handle = handleToPB(*req.Handle)
	}
	r, err := c.rpc.Stop(ctx, pr)
	if err != nil {
		return nil, fromStatus("stop", err)
	}
	return r.Removed, nil
}

func (c *Client) List(ctx context.Context) ([]Bottle, error) {
	r, err := c.rpc.List(ctx, &pb.ListRequest{})
	if err != nil {
		return nil, fromStatus("list", err)
	}
	out := make([]Bottle, 0, len(r.Bottles))
	for _, b := range r.Bottles {
		out = append(out, bottleFromPB(b))
	}
	return out, nil
}

func (c *Client) UpdateEgress(ctx context.Context, h Handle, egress []string) error {
	_, err := c.rpc.UpdateEgress(ctx, &pb.UpdateEgressRequest{Handle: handleToPB(h), Egress: egress})
	return fromStatus("update egress", err)
}

// IsNotSupported reports whether err says the backend lacks the operation.
func IsNotSupported(err error) bool { return errors.Is(err, ErrNotSupported) }

func isCancel(err error) bool {
	c := status.Code(err)
	return c == codes.Canceled || c == codes.DeadlineExceeded
}

// callerDone waits briefly for the caller's context to report what the
// stream already knows.
func callerDone(ctx context.Context) bool {
	if _, ok := ctx.Deadline(); !ok {
		return false
	}
	select {
	case <-ctx.Done():
		return true
	case <-time.After(100 * time.Millisecond):
		return ctx.Err() != nil
	}
}
