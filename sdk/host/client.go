package host

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

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

// detachGrace bounds how long a detach waits for the plugin to end the
// session after the core closed its side. A plugin may be in the middle of
// the agent's first start when the operator detaches; returning before it
// finished would let the core list the bottle as not yet running (and prune
// or report it so). A plugin that is not starting answers at once; one that
// never answers costs the operator this long, then its stream is cancelled.
const detachGrace = 5 * time.Second

// Attach streams the caller's stdio to the bottle until the agent exits or
// ctx is cancelled (a detach). A detach closes the core's side of the
// stream, which the plugin sees as the detach, and returns Detached once
// the plugin ended the session (within detachGrace): so the bottle is
// running, not half started, when Attach returns. The stream itself runs
// on a context ctx does not cancel, or the plugin would see the detach as
// the core going away and the core would not wait for it.
func (c *Client) Attach(ctx context.Context, req sdk.AttachRequest, s sdk.AttachStreams) (sdk.ExitStatus, error) {
	sctx, cancelStream := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelStream()
	stream, err := c.rpc.Attach(sctx)
	if err != nil {
		return sdk.ExitStatus{}, fromStatus("attach", err)
	}
	var (
		sendMu     sync.Mutex
		sendClosed bool
	)
	send := func(in *pb.AttachInput) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		if sendClosed {
			return io.ErrClosedPipe
		}
		return stream.Send(in)
	}
	if err := send(&pb.AttachInput{Input: &pb.AttachInput_Setup{Setup: &pb.AttachSetup{
		Handle: handleToPB(req.Handle), Tty: req.TTY, Size: sizeToPB(req.Size), Stdin: req.Stdin && s.Stdin != nil}}}); err != nil {
		return sdk.ExitStatus{}, fromStatus("attach", err)
	}

	// The caller's cancel is the detach: close our side, give the plugin
	// detachGrace to finish, then cancel the stream.
	returned := make(chan struct{})
	defer close(returned)
	go func() {
		select {
		case <-returned:
			return
		case <-ctx.Done():
		}
		sendMu.Lock()
		sendClosed = true
		_ = stream.CloseSend()
		sendMu.Unlock()
		t := time.NewTimer(detachGrace)
		defer t.Stop()
		select {
		case <-returned:
		case <-t.C:
			cancelStream()
		}
	}()

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
					// A reader that ends because the user detached is not
					// the user closing the agent's stdin.
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
			case <-returned:
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
		// Once the caller detached, whatever ends the stream ends a
		// detach: the plugin's answer to it, its error, or our cancel
		// after detachGrace. An exit it reports then may be the detach's
		// own doing (an SDK before this one closed the agent's stdin
		// before it told the backend), so it is not taken for the agent's;
		// List says what became of the bottle. Output that follows a detach
		// is not the caller's any more.
		if ctx.Err() != nil {
			if err != nil || out.GetExit() != nil {
				return sdk.ExitStatus{Detached: true}, nil
			}
			continue
		}
		if err == io.EOF {
			return sdk.ExitStatus{}, fmt.Errorf("attach: %w (stream ended without an exit status)", ErrPluginGone)
		}
		if err != nil {
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
