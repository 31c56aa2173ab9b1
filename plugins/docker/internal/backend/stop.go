package backend

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
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
	tm := newSteps()
	if err := b.waitLaunches(ctx, identity); err != nil {
		return nil, fmt.Errorf("stop %s: waiting for its launch to end: %w", identity, err)
	}
	c, err := b.engine(ctx)
	if err != nil {
		return nil, fmt.Errorf("stop %s: %w", identity, err)
	}
	if removed, ok, err := stopIdleShared(ctx, c, identity); ok {
		return removed, err
	}
	f := homeFilter(filters.NewArgs(filters.Arg("label", sdk.LabelIdentity+"="+identity)))
	// The home's shared proxy is not the bottle's, nor is the pooled
	// network it lent the bottle: the agent's container goes, then the
	// proxy forgets the bottle, which hands the network back; if it was the
	// last bottle the proxy served, servedNobody decides whether the proxy
	// stays for the next start (keep_egress_proxy).
	proxy := ""
	if hd.Shared {
		proxy = hd.Proxy
		hd.Proxy, hd.Network, hd.NetworkName = "", "", ""
	}
	// What the handle names goes too, labels or not (an older plugin did
	// not label everything); gone already is fine.
	removed, err := removeMatching(ctx, c, f, true, hd)
	if err != nil {
		return removed, fmt.Errorf("stop %s: %w", identity, err)
	}
	// Its containers are gone: nothing mounts its CA files any more.
	if err := removeCAFiles(identity, ""); err != nil {
		return removed, fmt.Errorf("stop %s: %w", identity, err)
	}
	tm.mark("remove")
	switch {
	case proxy != "":
		forgot, left, err := forgetBottle(ctx, c, proxy, identity)
		if err != nil {
			return removed, fmt.Errorf("stop %s: %w", identity, err)
		}
		tm.mark("forget")
		if forgot && left == 0 {
			more, err := servedNobody(ctx, c, proxy, b.keepProxy())
			removed = append(removed, more...)
			if err != nil {
				return removed, fmt.Errorf("stop %s: %w", identity, err)
			}
		}
	case req.Handle == nil:
		more, err := letGoEverywhere(ctx, c, identity)
		removed = append(removed, more...)
		if err != nil {
			return removed, fmt.Errorf("stop %s: %w", identity, err)
		}
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
			more, err := removeMatching(ctx, c, f, true, handleData{})
			removed = append(removed, more...)
			if err != nil {
				return removed, fmt.Errorf("stop %s: %w", identity, err)
			}
			if len(more) == 0 {
				break
			}
		}
	}
	if req.RemoveSnapshots {
		more, err := removeSnapshots(ctx, c, identity)
		removed = append(removed, more...)
		if err != nil {
			return removed, fmt.Errorf("stop %s: %w", identity, err)
		}
	}
	tm.mark("rest")
	tm.log(b.log, "stop timing", "identity", identity)
	if len(removed) > 0 {
		b.log.Info("stopped bottle", "identity", identity, "removed", strings.Join(removed, ", "))
	}
	return removed, nil
}

// found is one resource a removal pass found, by id and by the name it is
// reported under.
type found struct{ id, name string }

// collector gathers what concurrent removals removed and their first error.
type collector struct {
	mu      sync.Mutex
	removed []string
	errs    []error
}

func (k *collector) add(what string, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err != nil {
		k.errs = append(k.errs, err)
	} else if what != "" {
		k.removed = append(k.removed, what)
	}
}

// each runs fn for every item at once and waits for all of them.
func each[T any](items []T, fn func(T)) {
	var wg sync.WaitGroup
	for _, it := range items {
		wg.Add(1)
		go func() { defer wg.Done(); fn(it) }()
	}
	wg.Wait()
}

// removeMatching removes the containers, networks, volumes and (with
// images) the per-bottle images that match f, and those hd names. Snapshots
// and cached agent and proxy images are kept whatever f says.
//
// Removals run at once, in two steps: every container first (a network or
// volume in use cannot go, nor an image a running container uses), then
// every network, volume and image. The listings run at once beforehand.
func removeMatching(ctx context.Context, c *client.Client, f filters.Args, images bool, hd handleData) ([]string, error) {
	var (
		cs      []container.Summary
		ns      []network.Summary
		vs      volume.ListResponse
		is      []image.Summary
		listErr [4]error
		wg      sync.WaitGroup
	)
	wg.Add(3)
	go func() {
		defer wg.Done()
		cs, listErr[0] = c.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	}()
	go func() { defer wg.Done(); ns, listErr[1] = c.NetworkList(ctx, network.ListOptions{Filters: f}) }()
	go func() { defer wg.Done(); vs, listErr[2] = c.VolumeList(ctx, volume.ListOptions{Filters: f}) }()
	if images {
		wg.Add(1)
		go func() { defer wg.Done(); is, listErr[3] = c.ImageList(ctx, image.ListOptions{All: true, Filters: f}) }()
	}
	wg.Wait()
	for i, what := range []string{"list containers", "list networks", "list volumes", "list images"} {
		if listErr[i] != nil {
			return nil, engineErr(c, what, listErr[i])
		}
	}

	k := &collector{}
	var cts []found
	seen := map[string]bool{}
	for _, ct := range cs {
		seen[ct.ID] = true
		cts = append(cts, found{ct.ID, containerName(ct)})
	}
	for _, ct := range []found{{hd.Container, hd.Name}, {hd.Proxy, hd.ProxyName}} {
		if ct.id != "" && !seen[ct.id] {
			cts = append(cts, ct)
		}
	}
	each(cts, func(ct found) { k.add(removeContainer(ctx, c, ct)) })
	// In a stable order for whoever prints it: containers, then the rest.
	sort.Strings(k.removed)
	nc := len(k.removed)
	if len(k.errs) > 0 {
		return k.removed, errors.Join(k.errs...)
	}

	var nets []found
	for _, n := range ns {
		seen[n.ID] = true
		nets = append(nets, found{n.ID, n.Name})
	}
	for _, n := range []found{{hd.Network, hd.NetworkName}, {hd.Outbound, hd.OutboundName}} {
		if n.id != "" && !seen[n.id] {
			nets = append(nets, n)
		}
	}
	var vols []string
	for _, v := range vs.Volumes {
		seen[v.Name] = true
		vols = append(vols, v.Name)
	}
	// Not forced for the handle's own: a forced remove of a missing volume
	// succeeds, and would count it removed when it was not there.
	var handleVols []string
	if hd.Volume != "" && !seen[hd.Volume] {
		handleVols = append(handleVols, hd.Volume)
	}
	var imgs []found
	for _, im := range is {
		if k := im.Labels[LabelKind]; k != KindDerived && k != KindCommitTmp {
			continue
		}
		seen[im.ID] = true
		name := shortID(im.ID)
		if len(im.RepoTags) > 0 {
			name = im.RepoTags[0]
		}
		imgs = append(imgs, found{im.ID, name})
	}
	var handleImgs []string
	for _, id := range hd.Images {
		if !seen[id] {
			handleImgs = append(handleImgs, id)
		}
	}

	wg.Add(5)
	go func() {
		defer wg.Done()
		each(nets, func(n found) {
			k.add(dropNetwork(ctx, c, n.id, n.name))
		})
	}()
	go func() {
		defer wg.Done()
		each(vols, func(v string) { k.add(removeVolume(ctx, c, f, v, k)) })
	}()
	go func() {
		defer wg.Done()
		each(handleVols, func(v string) {
			err := c.VolumeRemove(ctx, v, false)
			switch {
			case err == nil:
				k.add("volume "+v, nil)
			case !isNotFound(err):
				k.add("", engineErr(c, "remove volume "+v, err))
			}
		})
	}()
	go func() {
		defer wg.Done()
		each(imgs, func(im found) {
			_, err := c.ImageRemove(ctx, im.id, image.RemoveOptions{Force: true, PruneChildren: true})
			switch {
			case err == nil:
				k.add("image "+im.name, nil)
			case !isNotFound(err):
				k.add("", engineErr(c, "remove image "+im.name, err))
			}
		})
	}()
	go func() {
		defer wg.Done()
		each(handleImgs, func(id string) { k.add(removeHandleImage(ctx, c, id)) })
	}()
	wg.Wait()
	sort.Strings(k.removed[nc:])
	return k.removed, errors.Join(k.errs...)
}

// removeContainer removes one container; gone already is fine.
func removeContainer(ctx context.Context, c *client.Client, ct found) (string, error) {
	err := c.ContainerRemove(ctx, ct.id, container.RemoveOptions{Force: true, RemoveVolumes: true})
	switch {
	case err == nil:
		return "container " + ct.name, nil
	case isNotFound(err):
		return "", nil
	}
	return "", engineErr(c, "remove container "+ct.name, err)
}

// removeVolume removes a volume f found. A create that a dead launch had
// sent can land after the container step: it removes what now uses the
// volume (found by f too), and tries again.
func removeVolume(ctx context.Context, c *client.Client, f filters.Args, v string, k *collector) (string, error) {
	err := c.VolumeRemove(ctx, v, true)
	for try := 0; err != nil && strings.Contains(err.Error(), "volume is in use") && try < 5; try++ {
		more, cerr := removeContainers(ctx, c, f)
		for _, m := range more {
			k.add(m, nil)
		}
		if cerr != nil {
			return "", cerr
		}
		if len(more) == 0 {
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(settleDelay):
			}
		}
		err = c.VolumeRemove(ctx, v, true)
	}
	switch {
	case err == nil:
		return "volume " + v, nil
	case isNotFound(err):
		return "", nil
	}
	return "", engineErr(c, "remove volume "+v, err)
}

// removeHandleImage removes a per-bottle image the handle names, if it is
// still one of ours.
func removeHandleImage(ctx context.Context, c *client.Client, id string) (string, error) {
	ii, err := c.ImageInspect(ctx, id)
	if isNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", engineErr(c, "inspect image "+id, err)
	}
	if ii.Config == nil || ii.Config.Labels[LabelKind] != KindDerived {
		return "", nil
	}
	_, err = c.ImageRemove(ctx, id, image.RemoveOptions{Force: true, PruneChildren: true})
	switch {
	case err == nil:
		return "image " + shortID(id), nil
	case isNotFound(err):
		return "", nil
	}
	return "", engineErr(c, "remove image "+id, err)
}

// removeContainers removes the containers that match f, at once.
func removeContainers(ctx context.Context, c *client.Client, f filters.Args) ([]string, error) {
	cs, err := c.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return nil, engineErr(c, "list containers", err)
	}
	k := &collector{}
	each(cs, func(ct container.Summary) { k.add(removeContainer(ctx, c, found{ct.ID, containerName(ct)})) })
	return k.removed, errors.Join(k.errs...)
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

// dropNetwork removes network id (called name) for a collector: what it
// removed, nothing when it was already gone, or why not.
func dropNetwork(ctx context.Context, c *client.Client, id, name string) (string, error) {
	switch err := removeNetwork(ctx, c, id); {
	case err == nil:
		return "network " + name, nil
	case isNotFound(err):
		return "", nil
	default:
		return "", engineErr(c, "remove network "+name, err)
	}
}

// removeNetwork removes a network, waiting a little for the engine to let go
// of the endpoints of containers just removed: it may release a killed
// container's network after the remove call returns. The first retries come
// quickly, since the release usually takes milliseconds.
func removeNetwork(ctx context.Context, c *client.Client, id string) error {
	deadline := time.Now().Add(6 * time.Second)
	for delay := 5 * time.Millisecond; ; delay = min(2*delay, 250*time.Millisecond) {
		err := c.NetworkRemove(ctx, id)
		if err == nil || time.Now().After(deadline) || !strings.Contains(err.Error(), "active endpoints") {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
	}
}
