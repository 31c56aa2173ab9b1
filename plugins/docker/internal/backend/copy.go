package backend

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/docker/docker/api/types/container"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// CopyIn extracts a tar archive into the bottle at path (a directory that
// must exist). Files belong to the container's user, so that the agent can
// keep writing what is restored for it.
func (b *Backend) CopyIn(ctx context.Context, h sdk.Handle, path string, archive []byte) error {
	hd, err := decodeHandle(h)
	if err != nil {
		return finish(fmt.Errorf("copy into %s: %w", h.Identity, err))
	}
	c, err := b.engine(ctx)
	if err != nil {
		return finish(fmt.Errorf("copy into %s: %w", h.Identity, err))
	}
	insp, err := c.ContainerInspect(ctx, hd.Container)
	if err != nil {
		return finish(fmt.Errorf("copy into %s: %w", h.Identity, engineErr(c, "inspect container "+hd.Name, err)))
	}
	if insp.Config != nil && insp.Config.User != "" {
		o, err := containerOwner(ctx, c, hd.Container, insp.Config.User)
		if err != nil {
			b.log.Warn("copied files stay owned by root", "identity", h.Identity, "error", err)
		} else if archive, err = chownTar(archive, o); err != nil {
			return finish(fmt.Errorf("copy into %s: %w", h.Identity, err))
		}
	}
	err = c.CopyToContainer(ctx, hd.Container, path, bytes.NewReader(archive), container.CopyToContainerOptions{})
	if err != nil {
		return finish(fmt.Errorf("copy into %s: %w", h.Identity, engineErr(c, "copy to "+path, err)))
	}
	return nil
}

// CopyOut returns path from inside the bottle as a tar archive. A missing
// path is an error wrapping sdk.ErrNotFound.
func (b *Backend) CopyOut(ctx context.Context, h sdk.Handle, path string) ([]byte, error) {
	hd, err := decodeHandle(h)
	if err != nil {
		return nil, finish(fmt.Errorf("copy out of %s: %w", h.Identity, err))
	}
	c, err := b.engine(ctx)
	if err != nil {
		return nil, finish(fmt.Errorf("copy out of %s: %w", h.Identity, err))
	}
	rc, _, err := c.CopyFromContainer(ctx, hd.Container, path)
	if err != nil {
		return nil, finish(fmt.Errorf("copy out of %s: %w", h.Identity, engineErr(c, "copy from "+path, err)))
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return nil, finish(fmt.Errorf("copy out of %s: read %s: %w", h.Identity, path, err))
	}
	return data, nil
}
