package backend

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"

	"github.com/bot-bottle/bot-bottle/plugins/docker/internal/proxycmd"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// StatusOrphaned is the status of a bottle whose container is gone but
// whose network or per-bottle image is left, so that prune can find it.
const StatusOrphaned = "orphaned"

// StatusIdle is the status of a home's shared egress proxy that serves no
// bottle (kept for the next start, or left by a stop that died), and of
// what is left of its side without it, listed so that prune removes it.
const StatusIdle = sdk.StatusIdle

// List returns every bottle this backend has: each managed agent container
// (with its egress proxy, networks and volume as resources), and each
// identity whose agent container is gone but whose proxy, network, volume
// or per-bottle image is still there.
func (b *Backend) List(ctx context.Context) ([]sdk.Bottle, error) {
	out, err := b.list(ctx)
	return out, finish(err)
}

func (b *Backend) list(ctx context.Context) ([]sdk.Bottle, error) {
	c, err := b.engine(ctx)
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	f := homeFilter(filters.NewArgs(filters.Arg("label", sdk.LabelManaged+"=true")))
	cs, err := c.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return nil, engineErr(c, "list containers", err)
	}
	ns, err := c.NetworkList(ctx, network.ListOptions{Filters: f})
	if err != nil {
		return nil, engineErr(c, "list networks", err)
	}
	is, err := c.ImageList(ctx, image.ListOptions{Filters: homeFilter(filters.NewArgs(
		filters.Arg("label", sdk.LabelManaged+"=true"), filters.Arg("label", LabelKind+"="+KindDerived)))})
	if err != nil {
		return nil, engineErr(c, "list images", err)
	}
	snaps, err := c.ImageList(ctx, image.ListOptions{Filters: homeFilter(filters.NewArgs(
		filters.Arg("label", sdk.LabelManaged+"=true"), filters.Arg("label", LabelKind+"="+KindSnapshot)))})
	if err != nil {
		return nil, engineErr(c, "list snapshots", err)
	}
	snapshotsOf := map[string][]string{}
	for _, im := range snaps {
		id := im.Labels[sdk.LabelIdentity]
		for _, t := range im.RepoTags {
			if !strings.HasPrefix(t, "<none>") {
				snapshotsOf[id] = append(snapshotsOf[id], t)
			}
		}
	}
	for id := range snapshotsOf {
		sort.Strings(snapshotsOf[id])
	}
	netsOf := map[string][]network.Summary{}
	for _, n := range ns {
		id := n.Labels[sdk.LabelIdentity]
		netsOf[id] = append(netsOf[id], n)
	}
	imagesOf := map[string][]image.Summary{}
	for _, im := range is {
		id := im.Labels[sdk.LabelIdentity]
		imagesOf[id] = append(imagesOf[id], im)
	}

	vs, err := c.VolumeList(ctx, volume.ListOptions{Filters: f})
	if err != nil {
		return nil, engineErr(c, "list volumes", err)
	}
	volumesOf := map[string][]*volume.Volume{}
	for _, v := range vs.Volumes {
		id := v.Labels[sdk.LabelIdentity]
		volumesOf[id] = append(volumesOf[id], v)
	}
	// A bottle with egress has a second container, its proxy: a resource of
	// the bottle, not a bottle.
	proxyOf := map[string]container.Summary{}
	agents := cs[:0:0]
	var shared []container.Summary
	served := map[string]bool{}
	for _, ct := range cs {
		switch ct.Labels[LabelRole] {
		case RoleProxy:
			proxyOf[ct.Labels[sdk.LabelIdentity]] = ct
		case RoleSharedProxy:
			shared = append(shared, ct)
		default:
			agents = append(agents, ct)
			if p := ct.Labels[LabelProxy]; p != "" {
				served[p] = true
			}
		}
	}

	var out []sdk.Bottle
	seen := map[string]bool{}
	for _, ct := range agents {
		id := ct.Labels[sdk.LabelIdentity]
		if id == "" {
			continue
		}
		seen[id] = true
		hd := handleData{Container: ct.ID, Name: containerName(ct), Agent: ct.Labels[sdk.LabelAgent]}
		res := []string{"container " + hd.Name}
		if p, ok := proxyOf[id]; ok {
			hd.Proxy, hd.ProxyName = p.ID, containerName(p)
			res = append(res, "container "+hd.ProxyName)
		} else if p := ct.Labels[LabelProxy]; p != "" {
			// The home's shared proxy serves it: not the bottle's own.
			hd.Proxy, hd.ProxyName, hd.Shared = p, p, true
		}
		for _, n := range netsOf[id] {
			switch {
			case n.Name == outboundName(id):
				hd.Outbound, hd.OutboundName = n.ID, n.Name
			case hd.Network == "":
				hd.Network, hd.NetworkName = n.ID, n.Name
			}
			res = append(res, "network "+n.Name)
		}
		for _, v := range volumesOf[id] {
			hd.Volume = v.Name
			res = append(res, "volume "+v.Name)
		}
		for _, im := range imagesOf[id] {
			hd.Images = append(hd.Images, im.ID)
			res = append(res, "image "+imageName(im))
		}
		imageName := ct.Labels[LabelImage]
		if imageName == "" {
			imageName = ct.Image
		}
		bt := sdk.Bottle{
			Identity:  id,
			Agent:     ct.Labels[sdk.LabelAgent],
			Status:    ct.State,
			Image:     imageName,
			Resources: res,
			Snapshots: snapshotsOf[id],
		}
		if insp, err := c.ContainerInspect(ctx, ct.ID); err == nil && insp.State != nil {
			if t, err := time.Parse(time.RFC3339Nano, insp.State.StartedAt); err == nil && !t.IsZero() && t.Year() > 1 {
				bt.StartedAt = t.UTC().Format(time.RFC3339)
			}
		}
		if id != "" && checkIdentity(id) == nil {
			if h, err := encodeHandle(id, hd); err == nil {
				bt.Handle = &h
			}
		}
		out = append(out, bt)
	}
	orphans := map[string]*sdk.Bottle{}
	orphan := func(id, agent string) *sdk.Bottle {
		if o := orphans[id]; o != nil {
			return o
		}
		o := &sdk.Bottle{Identity: id, Agent: agent, Status: StatusOrphaned}
		orphans[id] = o
		return o
	}
	for id, p := range proxyOf {
		if seen[id] || id == "" {
			continue
		}
		o := orphan(id, p.Labels[sdk.LabelAgent])
		o.Resources = append(o.Resources, "container "+containerName(p))
	}
	for id, list := range volumesOf {
		if seen[id] || id == "" {
			continue
		}
		for _, v := range list {
			o := orphan(id, v.Labels[sdk.LabelAgent])
			o.Resources = append(o.Resources, "volume "+v.Name)
		}
	}
	for id, list := range netsOf {
		if seen[id] || id == "" {
			continue
		}
		for _, n := range list {
			o := orphan(id, n.Labels[sdk.LabelAgent])
			o.Resources = append(o.Resources, "network "+n.Name)
		}
	}
	for id, list := range imagesOf {
		if seen[id] || id == "" {
			continue
		}
		for _, im := range list {
			o := orphan(id, im.Labels[sdk.LabelAgent])
			o.Resources = append(o.Resources, "image "+imageName(im))
		}
	}
	// A bottle a shared proxy serves whose agent's container never came
	// (its launch died) is listed by what is left of it, its listener; a
	// shared proxy that serves no bottle is left over (its last stop did
	// not finish): listed under its own name. Prune removes both (Stop of
	// the name, stopIdleShared).
	for _, p := range shared {
		name := containerName(p)
		var ids []string
		if p.State == "running" {
			rep, err := controlProxy(ctx, c, p.ID, proxycmd.Request{Op: proxycmd.CmdList}, "")
			if err != nil {
				continue // cannot tell: not listed as idle
			}
			ids = rep.Bottles
		}
		for _, id := range ids {
			if !seen[id] && checkIdentity(id) == nil {
				o := orphan(id, "")
				o.Resources = append(o.Resources, "egress listener on "+name)
			}
		}
		if len(ids) > 0 || served[name] || !sdk.ValidIdentity(name) {
			continue
		}
		out = append(out, sdk.Bottle{Identity: name, Status: StatusIdle, Resources: idleResources(p, shared, ns), Image: p.Labels[LabelImage]})
	}
	// What is left of a home's shared egress side without its proxy (a
	// crash while one was made or removed): an outbound network no proxy
	// of its group is on, pooled networks whose proxy is gone.
	proxyNames, groupsWithProxy := map[string]bool{}, map[string]bool{}
	for _, p := range shared {
		proxyNames[containerName(p)] = true
		groupsWithProxy[p.Labels[LabelGroup]] = true
	}
	for _, n := range ns {
		idle := false
		switch n.Labels[LabelRole] {
		case RoleOutbound:
			idle = !groupsWithProxy[n.Labels[LabelGroup]]
		case RolePool:
			i := strings.LastIndex(n.Name, "-p")
			idle = i > 0 && !proxyNames[n.Name[:i]]
		}
		if idle && sdk.ValidIdentity(n.Name) {
			out = append(out, sdk.Bottle{Identity: n.Name, Status: StatusIdle, Resources: []string{"network " + n.Name}})
		}
	}
	for _, o := range orphans {
		o.Snapshots = snapshotsOf[o.Identity]
		out = append(out, *o)
	}

	for id, refs := range snapshotsOf {
		if seen[id] || orphans[id] != nil || id == "" {
			continue
		}
		out = append(out, sdk.Bottle{Identity: id, Status: sdk.StatusSnapshot, Snapshots: refs})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Identity < out[j].Identity })
	return out, nil
}

func imageName(im image.Summary) string {
	for _, t := range im.RepoTags {
		if !strings.HasPrefix(t, "<none>") {
			return t
		}
	}
	return shortID(im.ID)
}

// idleResources is what Stop of idle proxy p removes, for prune --dry-run
// to say: the proxy, its pooled networks, and its group's outbound network
// when no other proxy of the group is on it.
func idleResources(p container.Summary, shared []container.Summary, ns []network.Summary) []string {
	name := containerName(p)
	res := []string{"container " + name}
	alone := true
	for _, o := range shared {
		if o.ID != p.ID && o.Labels[LabelGroup] == p.Labels[LabelGroup] {
			alone = false
		}
	}
	var nets []string
	for _, n := range ns {
		switch n.Labels[LabelRole] {
		case RolePool:
			if n.Labels[LabelProxyKey] == p.Labels[LabelProxyKey] && n.Labels[LabelGroup] == p.Labels[LabelGroup] {
				nets = append(nets, "network "+n.Name)
			}
		case RoleOutbound:
			if alone && n.Labels[LabelGroup] == p.Labels[LabelGroup] {
				nets = append(nets, "network "+n.Name)
			}
		}
	}
	sort.Strings(nets)
	return append(res, nets...)
}
