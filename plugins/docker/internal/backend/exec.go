package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// Exec runs a one-off command in the running bottle and returns its buffered
// output and exit code.
func (b *Backend) Exec(ctx context.Context, req sdk.ExecRequest) (sdk.ExecResult, error) {
	res, err := b.exec(ctx, req)
	if err != nil {
		return res, finish(fmt.Errorf("exec in %s: %w", req.Handle.Identity, err))
	}
	return res, nil
}

func (b *Backend) exec(ctx context.Context, req sdk.ExecRequest) (sdk.ExecResult, error) {
	if len(req.Command) == 0 {
		return sdk.ExecResult{}, errors.New("no command given")
	}
	hd, err := decodeHandle(req.Handle)
	if err != nil {
		return sdk.ExecResult{}, err
	}
	c, err := b.engine(ctx)
	if err != nil {
		return sdk.ExecResult{}, err
	}
	created, err := c.ContainerExecCreate(ctx, hd.Container, container.ExecOptions{
		Cmd:          req.Command,
		WorkingDir:   req.Workdir,
		User:         req.User,
		AttachStdin:  req.Stdin != nil,
		AttachStdout: true,
		AttachStderr: true,
	})
	if err != nil {
		return sdk.ExecResult{}, engineErr(c, "create exec in "+hd.Name, err)
	}
	resp, err := c.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		return sdk.ExecResult{}, engineErr(c, "attach exec in "+hd.Name, err)
	}
	defer resp.Close()
	if req.Stdin != nil {
		go func() {
			_, _ = resp.Conn.Write(req.Stdin)
			_ = resp.CloseWrite()
		}()
	}
	var out, errb bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &errb, resp.Reader); err != nil && ctx.Err() == nil {
		return sdk.ExecResult{}, fmt.Errorf("read exec output: %w", err)
	}
	// The output ends a moment before the engine records the exit code.
	for {
		ei, err := c.ContainerExecInspect(ctx, created.ID)
		if err != nil {
			return sdk.ExecResult{}, engineErr(c, "inspect exec in "+hd.Name, err)
		}
		if !ei.Running {
			return sdk.ExecResult{ExitCode: ei.ExitCode, Stdout: out.Bytes(), Stderr: errb.Bytes()}, nil
		}
		select {
		case <-ctx.Done():
			return sdk.ExecResult{}, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}
