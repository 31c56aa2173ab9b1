package sdk

import (
	"context"
	"errors"
	"io"
	"sync"

	pb "github.com/bot-bottle/bot-bottle/sdk/internal/pluginpb"
)

// grpcServer adapts a Backend to the generated gRPC service.
type grpcServer struct {
	pb.UnimplementedBackendServer
	impl Backend
}

func (s *grpcServer) Info(ctx context.Context, _ *pb.InfoRequest) (*pb.InfoResponse, error) {
	info, err := s.impl.Info(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	apis := info.APIVersions
	if len(apis) == 0 {
		apis = []string{APIVersion}
	}
	return &pb.InfoResponse{Name: info.Name, Version: info.Version, ApiVersions: apis,
		Capabilities: capsToStrings(info.Capabilities), Details: info.Details}, nil
}

func (s *grpcServer) Prepare(ctx context.Context, req *pb.PrepareRequest) (*pb.PrepareResponse, error) {
	plan, err := s.impl.Prepare(ctx, specFromPB(req.Spec))
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &pb.PrepareResponse{Warnings: plan.Warnings, Data: plan.Data}
	for _, l := range plan.Preflight {
		resp.Preflight = append(resp.Preflight, &pb.PreflightLine{Key: l.Key, Value: l.Value})
	}
	return resp, nil
}

func (s *grpcServer) Launch(req *pb.LaunchRequest, stream pb.Backend_LaunchServer) error {
	var mu sync.Mutex
	progress := func(p Progress) {
		mu.Lock()
		defer mu.Unlock()
		// A failed send means the core is gone; Launch sees ctx cancelled.
		_ = stream.Send(&pb.LaunchEvent{Event: &pb.LaunchEvent_Progress{Progress: &pb.Progress{
			Stage: p.Stage, Message: p.Message, Id: p.ID, Current: p.Current, Total: p.Total}}})
	}
	h, err := s.impl.Launch(stream.Context(), specFromPB(req.Spec), Plan{Data: req.PlanData}, progress)
	if err != nil {
		return toStatus(err)
	}
	mu.Lock()
	defer mu.Unlock()
	return stream.Send(&pb.LaunchEvent{Event: &pb.LaunchEvent_Handle{Handle: handleToPB(h)}})
}

// Attach runs the backend's Attach with streams fed by the gRPC stream. The
// first message must be the setup.
func (s *grpcServer) Attach(stream pb.Backend_AttachServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	setup := first.GetSetup()
	if setup == nil {
		return toStatus(errors.New("attach: first message must be setup"))
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()

	stdinR, stdinW := io.Pipe()
	resize := make(chan TermSize, 8)
	signals := make(chan string, 8)
	go func() {
		for {
			in, err := stream.Recv()
			if err != nil {
				// The core went away or closed its side: that is a detach.
				// The backend learns it before its stdin ends, so that one
				// reading stdin to its end can tell a detach from the user
				// closing the agent's input.
				cancel()
				stdinW.CloseWithError(io.EOF)
				return
			}
			switch v := in.Input.(type) {
			case *pb.AttachInput_Stdin:
				if _, err := stdinW.Write(v.Stdin); err != nil {
					continue
				}
			case *pb.AttachInput_StdinClose:
				stdinW.Close()
			case *pb.AttachInput_Resize:
				select {
				case resize <- sizeFromPB(v.Resize):
				default:
				}
			case *pb.AttachInput_Signal:
				select {
				case signals <- v.Signal:
				default:
				}
			}
		}
	}()

	var sendMu sync.Mutex
	send := func(out *pb.AttachOutput) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(out)
	}
	streams := AttachStreams{
		Stdout: writerFunc(func(p []byte) error {
			return send(&pb.AttachOutput{Output: &pb.AttachOutput_Stdout{Stdout: append([]byte(nil), p...)}})
		}),
		Stderr: writerFunc(func(p []byte) error {
			return send(&pb.AttachOutput{Output: &pb.AttachOutput_Stderr{Stderr: append([]byte(nil), p...)}})
		}),
		Resize:  resize,
		Signals: signals,
	}
	if setup.Stdin {
		streams.Stdin = stdinR
	}
	req := AttachRequest{Handle: handleFromPB(setup.Handle), TTY: setup.Tty, Size: sizeFromPB(setup.Size), Stdin: setup.Stdin}
	st, err := s.impl.Attach(ctx, req, streams)
	if err != nil {
		return toStatus(err)
	}
	return send(&pb.AttachOutput{Output: &pb.AttachOutput_Exit{Exit: &pb.ExitStatus{Code: int32(st.Code), Detached: st.Detached}}})
}

func (s *grpcServer) Exec(ctx context.Context, req *pb.ExecRequest) (*pb.ExecResponse, error) {
	e, ok := s.impl.(Execer)
	if !ok {
		return nil, toStatus(ErrNotSupported)
	}
	res, err := e.Exec(ctx, ExecRequest{Handle: handleFromPB(req.Handle), Command: req.Command,
		Workdir: req.Workdir, Stdin: req.Stdin, User: req.User})
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.ExecResponse{ExitCode: int32(res.ExitCode), Stdout: res.Stdout, Stderr: res.Stderr}, nil
}

func (s *grpcServer) CopyIn(ctx context.Context, req *pb.CopyInRequest) (*pb.CopyInResponse, error) {
	c, ok := s.impl.(Copier)
	if !ok {
		return nil, toStatus(ErrNotSupported)
	}
	if err := c.CopyIn(ctx, handleFromPB(req.Handle), req.Path, req.Tar); err != nil {
		return nil, toStatus(err)
	}
	return &pb.CopyInResponse{}, nil
}

func (s *grpcServer) CopyOut(ctx context.Context, req *pb.CopyOutRequest) (*pb.CopyOutResponse, error) {
	c, ok := s.impl.(Copier)
	if !ok {
		return nil, toStatus(ErrNotSupported)
	}
	tar, err := c.CopyOut(ctx, handleFromPB(req.Handle), req.Path)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.CopyOutResponse{Tar: tar}, nil
}

func (s *grpcServer) Commit(ctx context.Context, req *pb.CommitRequest) (*pb.CommitResponse, error) {
	c, ok := s.impl.(Committer)
	if !ok {
		return nil, toStatus(ErrNotSupported)
	}
	res, err := c.Commit(ctx, handleFromPB(req.Handle), req.SnapshotDir)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.CommitResponse{Image: res.Image, Notes: res.Notes}, nil
}

func (s *grpcServer) Stop(ctx context.Context, req *pb.StopRequest) (*pb.StopResponse, error) {
	sr := StopRequest{Identity: req.Identity, RemoveSnapshots: req.RemoveSnapshots}
	if req.Handle != nil {
		h := handleFromPB(req.Handle)
		sr.Handle = &h
	}
	removed, err := s.impl.Stop(ctx, sr)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.StopResponse{Removed: removed}, nil
}

func (s *grpcServer) List(ctx context.Context, _ *pb.ListRequest) (*pb.ListResponse, error) {
	bs, err := s.impl.List(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &pb.ListResponse{}
	for _, b := range bs {
		resp.Bottles = append(resp.Bottles, bottleToPB(b))
	}
	return resp, nil
}

func (s *grpcServer) UpdateEgress(ctx context.Context, req *pb.UpdateEgressRequest) (*pb.UpdateEgressResponse, error) {
	u, ok := s.impl.(EgressUpdater)
	if !ok {
		return nil, toStatus(ErrNotSupported)
	}
	if err := u.UpdateEgress(ctx, handleFromPB(req.Handle), req.Egress); err != nil {
		return nil, toStatus(err)
	}
	return &pb.UpdateEgressResponse{}, nil
}

func (s *grpcServer) RevokeCredential(ctx context.Context, req *pb.RevokeCredentialRequest) (*pb.RevokeCredentialResponse, error) {
	r, ok := s.impl.(CredentialRevoker)
	if !ok {
		return nil, toStatus(ErrNotSupported)
	}
	if err := r.RevokeCredential(ctx, handleFromPB(req.Handle), req.Name); err != nil {
		return nil, toStatus(err)
	}
	return &pb.RevokeCredentialResponse{}, nil
}

func (s *grpcServer) SyncQueue(ctx context.Context, req *pb.SyncQueueRequest) (*pb.SyncQueueResponse, error) {
	q, ok := s.impl.(QueueSyncer)
	if !ok {
		return nil, toStatus(ErrNotSupported)
	}
	if err := q.SyncQueue(ctx, handleFromPB(req.Handle), req.QueueDir); err != nil {
		return nil, toStatus(err)
	}
	return &pb.SyncQueueResponse{}, nil
}

type writerFunc func([]byte) error

func (f writerFunc) Write(p []byte) (int, error) {
	// gRPC messages are bounded; split large writes.
	const chunk = 1 << 20
	n := 0
	for len(p) > 0 {
		c := p
		if len(c) > chunk {
			c = c[:chunk]
		}
		if err := f(c); err != nil {
			return n, err
		}
		n += len(c)
		p = p[len(c):]
	}
	return n, nil
}
