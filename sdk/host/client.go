package host

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bot-bottle/bot-bottle/sdk"
	pb "github.com/bot-bottle/bot-bottle/sdk/internal/pluginpb"
)

// Client is the core's view of a plugin: it implements sdk.Backend and every
// optional interface by calling the plugin over gRPC. Optional calls to a
// plugin without the capability fail with ErrNotSupported.
type Client struct {
	rpc pb.BackendClient
}

var (
	_ sdk.Backend           = (*Client)(nil)
	_ sdk.Committer         = (*Client)(nil)
	_ sdk.Execer            = (*Client)(nil)
	_ sdk.Copier            = (*Client)(nil)
	_ sdk.EgressUpdater     = (*Client)(nil)
	_ sdk.CredentialRevoker = (*Client)(nil)
	_ sdk.QueueSyncer       = (*Client)(nil)
)

func (c *Client) Info(ctx context.Context) (sdk.Info, error) {
	r, err := c.rpc.Info(ctx, &pb.InfoRequest{})
	if err != nil {
		return sdk.Info{}, fromStatus("info", err)
	}
	return sdk.Info{Name: r.Name, Version: r.Version, APIVersions: r.ApiVersions,
		Capabilities: capsFromStrings(r.Capabilities), Details: r.Details}, nil
}

func (c *Client) Prepare(ctx context.Context, spec sdk.Spec) (sdk.Plan, error) {
	r, err := c.rpc.Prepare(ctx, &pb.PrepareRequest{Spec: specToPB(spec)})
	if err != nil {
		return sdk.Plan{}, fromStatus("prepare", err)
	}
	plan := sdk.Plan{Warnings: r.Warnings, Data: r.Data}
	for _, l := range r.Preflight {
		plan.Preflight = append(plan.Preflight, sdk.PreflightLine{Key: l.Key, Value: l.Value})
	}
	return plan, nil
}

func (c *Client) Launch(ctx context.Context, spec sdk.Spec, plan sdk.Plan, progress func(sdk.Progress)) (sdk.Handle, error) {
	stream, err := c.rpc.Launch(ctx, &pb.LaunchRequest{Spec: specToPB(spec), PlanData: plan.Data})
	if err != nil {
		return sdk.Handle{}, fromStatus("launch", err)
	}
	for {
		ev, err := stream.Recv()
		if err == io.EOF {
			return sdk.Handle{}, fmt.Errorf("launch: %w (stream ended without a handle)", ErrPluginGone)
		}
		if err != nil {
			return sdk.Handle{}, fromStatus("launch", err)
		}
		switch e := ev.Event.(type) {
		case *pb.LaunchEvent_Progress:
			if progress != nil {
				p := e.Progress
				progress(sdk.Progress{Stage: p.Stage, Message: p.Message, ID: p.Id, Current: p.Current, Total: p.Total})
			}
		case *pb.LaunchEvent_Handle:
			return handleFromPB(e.Handle), nil
		}
	}
}

// Attach streams the caller's stdio to the bottle until the agent exits or
// ctx is cancelled (a detach).
func (c *Client) Attach(ctx context.Context, req sdk.AttachRequest, s sdk.AttachStreams) (sdk.ExitStatus, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.rpc.Attach(ctx)
	if err != nil {
		return sdk.ExitStatus{}, fromStatus("attach", err)
	}
	var sendMu sync.Mutex
	send := func(in *pb.AttachInput) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(in)
	}
	if err := send(&pb.AttachInput{Input: &pb.AttachInput_Setup{Setup: &pb.AttachSetup{
		Handle: handleToPB(req.Handle), Tty: req.TTY, Size: sizeToPB(req.Size), Stdin: req.Stdin && s.Stdin != nil}}}); err != nil {
		return sdk.ExitStatus{}, fromStatus("attach", err)
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
			}
		}
	}()

	for {
		out, err := stream.Recv()
		if err == io.EOF {
			return sdk.ExitStatus{}, fmt.Errorf("attach: %w (stream ended without an exit status)", ErrPluginGone)
		}
		if err != nil {
			// The caller's cancellation or deadline is a detach, even when
			// the plugin saw it first and ended the stream itself.
			if ctx.Err() != nil || isCancel(err) && callerDone(ctx) {
				return sdk.ExitStatus{Detached: true}, nil
			}
			return sdk.ExitStatus{}, fromStatus("attach", err)
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
			return sdk.ExitStatus{Code: int(o.Exit.Code), Detached: o.Exit.Detached}, nil
		}
	}
}

func (c *Client) Exec(ctx context.Context, req sdk.ExecRequest) (sdk.ExecResult, error) {
	r, err := c.rpc.Exec(ctx, &pb.ExecRequest{Handle: handleToPB(req.Handle), Command: req.Command,
		Workdir: req.Workdir, Stdin: req.Stdin, User: req.User})
	if err != nil {
		return sdk.ExecResult{}, fromStatus("exec", err)
	}
	return sdk.ExecResult{ExitCode: int(r.ExitCode), Stdout: r.Stdout, Stderr: r.Stderr}, nil
}

func (c *Client) CopyIn(ctx context.Context, h sdk.Handle, path string, tar []byte) error {
	_, err := c.rpc.CopyIn(ctx, &pb.CopyInRequest{Handle: handleToPB(h), Path: path, Tar: tar})
	return fromStatus("copy in", err)
}

func (c *Client) CopyOut(ctx context.Context, h sdk.Handle, path string) ([]byte, error) {
	r, err := c.rpc.CopyOut(ctx, &pb.CopyOutRequest{Handle: handleToPB(h), Path: path})
	if err != nil {
		return nil, fromStatus("copy out", err)
	}
	return r.Tar, nil
}

func (c *Client) Commit(ctx context.Context, h sdk.Handle, snapshotDir string) (sdk.CommitResult, error) {
	r, err := c.rpc.Commit(ctx, &pb.CommitRequest{Handle: handleToPB(h), SnapshotDir: snapshotDir})
	if err != nil {
		return sdk.CommitResult{}, fromStatus("commit", err)
	}
	return sdk.CommitResult{Image: r.Image, Notes: r.Notes}, nil
}

func (c *Client) Stop(ctx context.Context, req sdk.StopRequest) ([]string, error) {
	pr := &pb.StopRequest{Identity: req.Identity, RemoveSnapshots: req.RemoveSnapshots}
	if req.Handle != nil {
		pr.Handle = handleToPB(*req.Handle)
	}
	r, err := c.rpc.Stop(ctx, pr)
	if err != nil {
		return nil, fromStatus("stop", err)
	}
	return r.Removed, nil
}

func (c *Client) List(ctx context.Context) ([]sdk.Bottle, error) {
	r, err := c.rpc.List(ctx, &pb.ListRequest{})
	if err != nil {
		return nil, fromStatus("list", err)
	}
	out := make([]sdk.Bottle, 0, len(r.Bottles))
	for _, b := range r.Bottles {
		out = append(out, bottleFromPB(b))
	}
	return out, nil
}

func (c *Client) UpdateEgress(ctx context.Context, h sdk.Handle, egress []string) error {
	_, err := c.rpc.UpdateEgress(ctx, &pb.UpdateEgressRequest{Handle: handleToPB(h), Egress: egress})
	return fromStatus("update egress", err)
}

func (c *Client) RevokeCredential(ctx context.Context, h sdk.Handle, name string) error {
	_, err := c.rpc.RevokeCredential(ctx, &pb.RevokeCredentialRequest{Handle: handleToPB(h), Name: name})
	return fromStatus("revoke credential", err)
}

func (c *Client) SyncQueue(ctx context.Context, h sdk.Handle, queueDir string) error {
	_, err := c.rpc.SyncQueue(ctx, &pb.SyncQueueRequest{Handle: handleToPB(h), QueueDir: queueDir})
	return fromStatus("sync queue", err)
}

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
