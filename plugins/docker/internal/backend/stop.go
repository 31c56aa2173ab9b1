package backend

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// settleDelay is how long a Stop without a handle waits for creations that
// a dead launch had already sent to the engine.
const settleDelay = 300 * time.Millisecond

// Stop removes the bottle's containers (agent and egress proxy), networks,
// rules volume and per-bottle images, found by the handle and by the
// identity label, so that a launch that never returned a handle is cleaned
// up too. Snapshots are removed only when the request says the bottle is
// removed for good (RemoveSnapshots). Stopping a bottle that is already gone
// succeeds.
func (b *Backend) Stop(ctx context.Context, req sdk.StopRequest) ([]string, error) {
	removed, err := b.stop(ctx, req)
	return removed, finish(err)
}

func (b *Backend) stop(ctx context.Context, req sdk.StopRequest) ([]string, error) {
	identity := req.Identity
	var hd handleData
	if req.Handle != nil {
		if identity == "" {
			identity = req.Handle.Identity
		}
		d, err := decodeHandle(*req.Handle)
		if err != nil {
			return nil, fmt.Errorf("stop %s: %w", identity, err)
		}
		hd = d
	}
	if identity == "" {
		return nil, errors.New("stop: neither a handle nor an identity given")
	}
	if err := checkIdentity(identity); err != nil {
		return nil, fmt.Errorf("stop: %w", err)
	}
	if err := b.waitLaunches(ctx, identity); err != nil {
		return nil, fmt.Errorf("stop %s: waiting for its launch to end: %w", identity, err)
	}
	c, err := b.engine(ctx)
	if err != nil {
		return nil, fmt.Errorf("stop %s: %w", identity, err)
	}
	f := homeFilter(filters.NewArgs(filters.Arg("label", sdk.LabelIdentity+"="+identity)))
	removed, err := removeMatching(ctx, c, f, true)
	if err != nil {
		return removed, fmt.Errorf("stop %s: %w", identity, err)
	}
	if req.Handle == nil {
		// No handle means the launch never finished, most likely because its
		// plugin died. A create it had sent may still land on the engine
		// after the pass above: look again until a pass finds nothing.
		for pass := 0; pass < 5; pass++ {
			select {
			case <-ctx.Done():
				return removed, fmt.Errorf("stop %s: %w", identity, ctx.Err())
			case <-time.After(settleDelay):
			}
			more, err := removeMatching(ctx, c, f, true)
			removed = append(removed, more...)
			if err != nil {
				return removed, fmt.Errorf("stop %s: %w", identity, err)
			}
			if len(more) == 0 {
				break
			}
		}
	}
	// What the handle names but lost its labels (or was never labelled by an
	// older plugin) goes too; gone already is fine. Containers first: a
	// network or volume in use cannot go.
	for _, ct := range [][2]string{{hd.Container, hd.Name}, {hd.Proxy, hd.ProxyName}} {
		if ct[0] == "" {
			continue
		}
		if err := c.ContainerRemove(ctx, ct[0], container.RemoveOptions{Force: true, RemoveVolumes: true}); err == nil {
			removed = append(removed, "container "+ct[1])
		} else if !isNotFound(err) {
			return removed, fmt.Errorf("stop %s: %w", identity, engineErr(c, "remove container "+ct[1], err))
		}
	}
	for _, n := range [][2]string{{hd.Network, hd.NetworkName}, {hd.Outbound, hd.OutboundName}} {
		if n[0] == "" {
			continue
		}
		if err := removeNetwork(ctx, c, n[0]); err == nil {
			removed = append(removed, "network "+n[1])
		} else if !isNotFound(err) {
			return removed, fmt.Errorf("stop %s: %w", identity, engineErr(c, "remove network "+n[1], err))
		}
	}
	if hd.Volume != "" {
		// Not forced: a forced remove of a missing volume succeeds, and
		// would count a volume removed above twice.
		if err := c.VolumeRemove(ctx, hd.Volume, false); err == nil {
			removed = append(removed, "volume "+hd.Volume)
		} else if !isNotFound(err) {
			return removed, fmt.Errorf("stop %s: %w", identity, engineErr(c, "remove volume "+hd.Volume, err))
		}
	}
	for _, id := range hd.Images {
		ii, err := c.ImageInspect(ctx, id)
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return removed, fmt.Errorf("stop %s: %w", identity, engineErr(c, "inspect image "+id, err))
		}
		if ii.Config == nil || ii.Config.Labels[LabelKind] != KindDerived {
			continue
		}
		if _, err := c.ImageRemove(ctx, id, image.RemoveOptions{Force: true, PruneChildren: true}); err == nil {
			removed = append(removed, "image "+shortID(id))
		} else if !isNotFound(err) {
			return removed, fmt.Errorf("stop %s: %w", identity, engineErr(c, "remove image "+id, err))
		}
	}
	if req.RemoveSnapshots {
		more, err := removeSnapshots(ctx, c, identity)
		removed = append(removed, more...)
		if err != nil {
			return removed, fmt.Errorf("stop %s: %w", identity, err)
		}
	}
	if len(removed) > 0 {
		b.log.Info("stopped bottle", "identity", identity, "removed", strings.Join(removed, ", "))
	}
	return removed, nil
}

// removeMatching removes the containers, networks, volumes and (with
// images) the per-bottle images that match f. Snapshots and cached agent
// and proxy images are kept whatever f says.
func removeMatching(ctx context.Context, c *client.Client, f filters.Args, images bool) ([]string, error) {
	removed, err := removeContainers(ctx, c, f)
	if err != nil {
		return removed, err
	}
	ns, err := c.NetworkList(ctx, network.ListOptions{Filters: f})
	if err != nil {
		return removed, engineErr(c, "list networks", err)
	}
	for _, n := range ns {
		err := removeNetwork(ctx, c, n.ID)
		if err != nil && !isNotFound(err) {
			return removed, engineErr(c, "remove network "+n.Name, err)
		}
		if err == nil {
			removed = append(removed, "network "+n.Name)
		}
	}
	vs, err := c.VolumeList(ctx, volume.ListOptions{Filters: f})
	if err != nil {
		return removed, engineErr(c, "list volumes", err)
	}
	for _, v := range vs.Volumes {
		err := c.VolumeRemove(ctx, v.Name, true)
		// A create that a dead launch had sent can land after the container
		// pass above: remove what now uses the volume, and try again.
		for try := 0; err != nil && strings.Contains(err.Error(), "volume is in use") && try < 5; try++ {
			more, cerr := removeContainers(ctx, c, f)
			removed = append(removed, more...)
			if cerr != nil {
				return removed, cerr
			}
			if len(more) == 0 {
				select {
				case <-ctx.Done():
					return removed, ctx.Err()
				case <-time.After(settleDelay):
				}
			}
			err = c.VolumeRemove(ctx, v.Name, true)
		}
		if err != nil && !isNotFound(err) {
			return removed, engineErr(c, "remove volume "+v.Name, err)
		}
		if err == nil {
			removed = append(removed, "volume "+v.Name)
		}
	}
	if !images {
		return removed, nil
	}
	is, err := c.ImageList(ctx, image.ListOptions{All: true, Filters: f})
	if err != nil {
		return removed, engineErr(c, "list images", err)
	}
	for _, im := range is {
		if k := im.Labels[LabelKind]; k != KindDerived && k != KindCommitTmp {
			continue
		}
		name := shortID(im.ID)
		if len(im.RepoTags) > 0 {
			name = im.RepoTags[0]
		}
		_, err := c.ImageRemove(ctx, im.ID, image.RemoveOptions{Force: true, PruneChildren: true})
		if err != nil && !isNotFound(err) {
			return removed, engineErr(c, "remove image "+name, err)
		}
		if err == nil {
			removed = append(removed, "image "+name)
		}
	}
	return removed, nil
}

// removeContainers removes the containers that match f.
func removeContainers(ctx context.Context, c *client.Client, f filters.Args) ([]string, error) {
	var removed []string
	cs, err := c.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return removed, engineErr(c, "list containers", err)
	}
	for _, ct := range cs {
		err := c.ContainerRemove(ctx, ct.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
		if err != nil && !isNotFound(err) {
			return removed, engineErr(c, "remove container "+containerName(ct), err)
		}
		if err == nil {
			removed = append(removed, "container "+containerName(ct))
		}
	}
	return removed, nil
}

// snapshotFilter matches the snapshots of identity in this home.
func snapshotFilter(identity string) filters.Args {
	return homeFilter(filters.NewArgs(filters.Arg("label", sdk.LabelIdentity+"="+identity),
		filters.Arg("label", LabelKind+"="+KindSnapshot)))
}

// removeSnapshots removes every snapshot of identity in this home, with
// the images of ours built on top of one (a per-bottle Dockerfile FROM the
// snapshot is cached under its content digest, not its identity).
func removeSnapshots(ctx context.Context, c *client.Client, identity string) ([]string, error) {
	is, err := c.ImageList(ctx, image.ListOptions{Filters: snapshotFilter(identity)})
	if err != nil {
		return nil, engineErr(c, "list snapshots", err)
	}
	if len(is) == 0 {
		return nil, nil
	}
	all, err := c.ImageList(ctx, image.ListOptions{All: true})
	if err != nil {
		return nil, engineErr(c, "list images", err)
	}
	children := map[string][]image.Summary{}
	for _, im := range all {
		if im.ParentID != "" {
			children[im.ParentID] = append(children[im.ParentID], im)
		}
	}
	var removed []string
	var remove func(im image.Summary, what string) error
	remove = func(im image.Summary, what string) error {
		for _, ch := range children[im.ID] {
			if ch.Labels[sdk.LabelManaged] != "true" {
				continue // not ours: the engine's refusal below says so
			}
			if err := remove(ch, "image"); err != nil {
				return err
			}
		}
		name := imageName(im)
		_, err := c.ImageRemove(ctx, im.ID, image.RemoveOptions{Force: true, PruneChildren: true})
		if err != nil && !isNotFound(err) {
			return engineErr(c, "remove "+what+" "+name, err)
		}
		if err == nil {
			removed = append(removed, what+" "+name)
		}
		return nil
	}
	for _, im := range is {
		if err := remove(im, "snapshot"); err != nil {
			return removed, err
		}
	}
	return removed, nil
}

func containerName(ct container.Summary) string {
	if len(ct.Names) > 0 {
		return strings.TrimPrefix(ct.Names[0], "/")
	}
	return shortID(ct.ID)
}

func shortID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// removeNetwork removes a network, waiting a little for the engine to let go
// of the endpoints of containers just removed: it releases a killed
// container's network after the remove call returns.
func removeNetwork(ctx context.Context, c *client.Client, id string) error {
	for try := 0; ; try++ {
		err := c.NetworkRemove(ctx, id)
		if err == nil || try == 24 || !strings.Contains(err.Error(), "active endpoints") {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}
