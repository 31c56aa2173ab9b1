package backend

// The long-lived egress proxy: one container per home (and plugin build,
// audit directory and egress_networks: its key) that serves every bottle
// of the home with an allowlist. See package proxycmd for the proxy's side.
//
// Its life:
//
//	absent ──first egress start (under the home's lock, exclusive)──► running
//	running ──start: connect it to the bottle's network, `add`──► running (+1 bottle)
//	running ──stop: `forget`, disconnect──► running (−1 bottle)
//	running, no bottle ──last stop of the home (exclusive lock)──► removed,
//	                      with the home's outbound network once no proxy uses it
//	running, no bottle, its stopper gone ──`bot-bottle prune`──► removed
//
// Starts hold the home's lock shared from finding the proxy to its `add`;
// the last stop takes it exclusively before it looks whether the proxy
// serves anyone, so no start ever finds a proxy that is being removed. The
// lock is a file of the plugin's own (flock), per home and plugin labels.
//
// An upgraded plugin has another build ID, so another key and another
// proxy: its bottles go to the new one, the old one keeps serving the
// bottles it has until the last of them stops, and that stop removes it.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/bot-bottle/bot-bottle/plugins/docker/internal/proxycmd"
	"github.com/bot-bottle/bot-bottle/plugins/docker/internal/settings"
	"github.com/bot-bottle/bot-bottle/sdk"
)

const (
	// RoleSharedProxy is the LabelRole of a home's long-lived egress proxy.
	RoleSharedProxy = "egress-shared-proxy"
	// RoleOutbound is the LabelRole of a home's outbound network, the
	// shared proxy's way out.
	RoleOutbound = "egress-outbound"
	// LabelProxyKey is the shared proxy's key: what it was made from.
	LabelProxyKey = "dev.bot-bottle.proxy-key"
	// LabelGroup is the home and plugin labels a shared resource serves.
	LabelGroup = "dev.bot-bottle.egress-group"
	// LabelProxy, on an agent's container, names the shared proxy that
	// serves it.
	LabelProxy = "dev.bot-bottle.egress-proxy"

	sharedPrefix    = "bot-bottle-egress-"
	sharedProxyMem  = 256 << 20
	sharedProxyPids = 256
	guestAuditDir   = "/var/log/bot-bottle"
	// lockWait bounds the last stop's wait for starts in progress; past it
	// the proxy is left for the next stop or prune.
	lockWait = 20 * time.Second
)

// group is the home (with the plugin's labels) that shared egress
// resources belong to.
type group struct {
	home   string
	key    string // 12 hex digits of the home and the labels
	labels map[string]string
}

func groupOf(extra map[string]string) group {
	home := sdk.HomeID()
	h := sha256.New()
	h.Write([]byte(home))
	keys := make([]string, 0, len(extra))
	for k := range extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		js, _ := json.Marshal([2]string{k, extra[k]})
		h.Write(js)
	}
	g := group{home: home, key: hex.EncodeToString(h.Sum(nil))[:12], labels: map[string]string{}}
	for k, v := range extra {
		g.labels[k] = v
	}
	g.labels[sdk.LabelManaged] = "true"
	if home != "" {
		g.labels[sdk.LabelHome] = home
	}
	g.labels[LabelGroup] = g.key
	return g
}

// homePart names the home in resource names.
func (g group) homePart() string {
	if g.home == "" {
		return "nohome"
	}
	return g.home
}

func (g group) outboundName() string { return sharedPrefix + g.homePart() + "-" + g.key + "-out" }

func (g group) proxyName(key string) string { return sharedPrefix + g.homePart() + "-" + key[:12] }

// filter matches the group's shared resources with role.
func (g group) filter(role string) filters.Args {
	return filters.NewArgs(filters.Arg("label", LabelGroup+"="+g.key), filters.Arg("label", LabelRole+"="+role),
		filters.Arg("label", sdk.LabelManaged+"=true"))
}

// sharedKey is what a shared proxy is made of: its image (the plugin's build
// and labels), its user, the audit directory it sees and the networks it
// joins. Anything else is per bottle.
func sharedKey(img imageRef, user, auditDir string, egressNets []string) string {
	nets := append([]string(nil), egressNets...)
	sort.Strings(nets)
	js, _ := json.Marshal([]any{img.ID, user, auditDir, nets})
	sum := sha256.Sum256(js)
	return hex.EncodeToString(sum[:])
}

// lockGroup takes the group's lock, shared or exclusive, and returns its
// release. A flock is dropped by the kernel when its holder dies, so a
// crashed plugin never leaves a home locked.
func lockGroup(ctx context.Context, g group, exclusive bool) (func(), error) {
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("bot-bottle-docker-%d", os.Getuid()))
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("egress lock: %w", err)
	}
	if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() || fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("egress lock directory %s is not a private directory of this user", dir)
	} else if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return nil, fmt.Errorf("egress lock directory %s belongs to uid %d, not this user", dir, st.Uid)
	}
	f, err := os.OpenFile(filepath.Join(dir, g.homePart()+"-"+g.key+".lock"), os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("egress lock: %w", err)
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	done := make(chan error, 1)
	go func() { done <- syscall.Flock(int(f.Fd()), how) }()
	select {
	case err := <-done:
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("egress lock: %w", err)
		}
		return func() { f.Close() }, nil
	case <-ctx.Done():
		// The flock may still be granted: whoever gets it lets it go.
		go func() { <-done; f.Close() }()
		return nil, ctx.Err()
	}
}

// shared is a running shared proxy.
type shared struct{ id, name string }

// proxyUser is the user the shared proxy runs as (nobody when the plugin
// runs as root), and ctlUser the one its control commands run as: the
// plugin's own, who owns the egress logs they open.
func proxyUser() string {
	if os.Getuid() == 0 {
		return nobody
	}
	return ctlUser()
}

func ctlUser() string { return fmt.Sprintf("%d:%d", os.Getuid(), os.Getgid()) }

// ensureShared finds the group's running proxy of key or makes it, and
// returns it with the group's lock held (shared, or exclusive when it made
// it) for the caller to release once its bottle is added.
func (b *Backend) ensureShared(ctx, cctx context.Context, c *client.Client, g group, key string, img imageRef, set settings.Settings, auditDir string, progress func(sdk.Progress)) (shared, func(), error) {
	name := g.proxyName(key)
	unlock, err := lockGroup(ctx, g, false)
	if err != nil {
		return shared{}, nil, err
	}
	if insp, err := c.ContainerInspect(ctx, name); err == nil && insp.State != nil && insp.State.Running {
		progress(sdk.Progress{Stage: StageEgress, Message: "using egress proxy " + name, ID: insp.ID})
		return shared{id: insp.ID, name: name}, unlock, nil
	}
	unlock()
	if unlock, err = lockGroup(ctx, g, true); err != nil {
		return shared{}, nil, err
	}
	sh, err := b.makeShared(ctx, cctx, c, g, key, name, img, set, auditDir, progress)
	if err != nil {
		unlock()
		return shared{}, nil, err
	}
	return sh, unlock, nil
}

// makeShared makes (or, when another process just did, finds) the proxy,
// under the group's exclusive lock.
func (b *Backend) makeShared(ctx, cctx context.Context, c *client.Client, g group, key, name string, img imageRef, set settings.Settings, auditDir string, progress func(sdk.Progress)) (shared, error) {
	insp, err := c.ContainerInspect(ctx, name)
	switch {
	case err == nil && insp.State != nil && insp.State.Running:
		return shared{id: insp.ID, name: name}, nil
	case err == nil:
		// Stopped (a daemon restart, a crash): its bottles lost their
		// egress with it. A new one takes its place; removed by id, so
		// nobody else's new one goes.
		if err := c.ContainerRemove(cctx, insp.ID, container.RemoveOptions{Force: true}); err != nil && !isNotFound(err) {
			return shared{}, engineErr(c, "remove stopped egress proxy "+name, err)
		}
	case !isNotFound(err):
		return shared{}, engineErr(c, "inspect egress proxy "+name, err)
	}
	outID, err := ensureOutbound(ctx, cctx, c, g, set, progress)
	if err != nil {
		return shared{}, err
	}
	labels := map[string]string{LabelRole: RoleSharedProxy, LabelProxyKey: key, LabelImage: img.Name}
	for k, v := range g.labels {
		labels[k] = v
	}
	var mounts []mount.Mount
	if auditDir != "" {
		mounts = append(mounts, mount.Mount{Type: mount.TypeBind, Source: auditDir, Target: guestAuditDir})
	}
	pids := int64(sharedProxyPids)
	cfg := &container.Config{Image: img.ID, User: proxyUser(), Cmd: []string{proxycmd.CmdServe}, Labels: labels}
	hc := &container.HostConfig{
		NetworkMode:    container.NetworkMode(outID),
		Mounts:         mounts,
		ReadonlyRootfs: true,
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges"},
		Resources:      container.Resources{Memory: sharedProxyMem, PidsLimit: &pids},
		// Forwarding off: it is on every bottle's network and the way out.
		// ARP answered only for an address on the interface asked, and
		// reverse-path filtering on: a packet from one bottle's network
		// never passes for another's.
		Sysctls: map[string]string{
			"net.ipv4.ip_forward":            "0",
			"net.ipv4.conf.all.arp_ignore":   "1",
			"net.ipv4.conf.all.arp_announce": "2",
			"net.ipv4.conf.all.rp_filter":    "1",
		},
	}
	created, err := c.ContainerCreate(cctx, cfg, hc, nil, nil, name)
	if err != nil {
		if !strings.Contains(err.Error(), "is already in use") {
			return shared{}, engineErr(c, "create egress proxy "+name, err)
		}
		// Another process (another lock directory) made it: use it.
		insp, err := c.ContainerInspect(ctx, name)
		if err != nil {
			return shared{}, engineErr(c, "inspect egress proxy "+name, err)
		}
		created.ID = insp.ID
	} else {
		errs := make([]error, len(set.EgressNetworks))
		each(indexes(len(set.EgressNetworks)), func(i int) {
			n := set.EgressNetworks[i]
			if err := c.NetworkConnect(cctx, n, created.ID, nil); err != nil {
				errs[i] = engineErr(c, "connect egress proxy to "+n+" (egress_networks)", err)
			}
		})
		if err := errors.Join(errs...); err != nil {
			_ = c.ContainerRemove(cctx, created.ID, container.RemoveOptions{Force: true})
			return shared{}, err
		}
	}
	if err := c.ContainerStart(cctx, created.ID, container.StartOptions{}); err != nil {
		return shared{id: created.ID, name: name}, engineErr(c, "start egress proxy "+name, err)
	}
	progress(sdk.Progress{Stage: StageEgress, Message: "started egress proxy " + name + " (shared by this home's bottles)", ID: created.ID})
	return shared{id: created.ID, name: name}, nil
}

func indexes(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// ensureOutbound returns the group's outbound network, making it when
// there is none (under the group's exclusive lock, so there is one).
func ensureOutbound(ctx, cctx context.Context, c *client.Client, g group, set settings.Settings, progress func(sdk.Progress)) (string, error) {
	name := g.outboundName()
	ns, err := c.NetworkList(ctx, network.ListOptions{Filters: g.filter(RoleOutbound)})
	if err != nil {
		return "", engineErr(c, "list networks", err)
	}
	for _, n := range ns {
		if n.Name == name {
			return n.ID, nil
		}
	}
	labels := map[string]string{LabelRole: RoleOutbound}
	for k, v := range g.labels {
		labels[k] = v
	}
	id, subnet, err := createNetwork(cctx, c, name, false, set.SubnetPool, netip.Prefix{}, labels)
	if err != nil {
		return "", err
	}
	progress(sdk.Progress{Stage: StageNetwork, Message: "created network " + name + " (the egress proxy's way out, " + subnet.String() + ")", ID: id})
	return id, nil
}

// execProxy runs a control subcommand of the proxy in its container and
// returns its output. It returns when the proxy has done it.
func execProxy(ctx context.Context, c *client.Client, proxyID string, stdin []byte, args ...string) (string, error) {
	cmd := append([]string{"/" + ProxyBinary, proxycmd.Command}, args...)
	created, err := c.ContainerExecCreate(ctx, proxyID, container.ExecOptions{
		Cmd: cmd, User: ctlUser(), AttachStdin: stdin != nil, AttachStdout: true, AttachStderr: true,
	})
	if err != nil {
		return "", engineErr(c, "egress proxy "+args[0], err)
	}
	resp, err := c.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		return "", engineErr(c, "egress proxy "+args[0], err)
	}
	defer resp.Close()
	if stdin != nil {
		go func() {
			_, _ = resp.Conn.Write(stdin)
			_ = resp.CloseWrite()
		}()
	}
	var out, errb bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &errb, resp.Reader); err != nil {
		return "", fmt.Errorf("egress proxy %s: %w", args[0], err)
	}
	for delay := time.Millisecond; ; delay = min(2*delay, 20*time.Millisecond) {
		ei, err := c.ContainerExecInspect(ctx, created.ID)
		if err != nil {
			return "", engineErr(c, "egress proxy "+args[0], err)
		}
		if !ei.Running {
			if ei.ExitCode != 0 {
				msg := strings.TrimSpace(errb.String())
				if msg == "" {
					msg = fmt.Sprintf("exit status %d", ei.ExitCode)
				}
				return out.String(), fmt.Errorf("egress proxy %s: %s", args[0], oneLine(msg))
			}
			return out.String(), nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(delay):
		}
	}
}

// addBottle joins the proxy to the bottle's internal network at the
// proxy's address there and has it serve the bottle. It returns once the
// bottle's listener is bound.
func addBottle(ctx, cctx context.Context, c *client.Client, sh shared, identity string, in internalNet, netID, netName string, rules []byte, egressLog string) error {
	if err := c.NetworkConnect(cctx, netID, sh.id, &network.EndpointSettings{
		IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: in.proxyIP().String()},
	}); err != nil {
		return engineErr(c, "connect egress proxy "+sh.name+" to "+netName, err)
	}
	args := []string{proxycmd.CmdAdd, "--identity", identity, "--listen", in.proxyAddr()}
	if egressLog != "" {
		args = append(args, "--log", guestAuditDir+"/"+filepath.Base(egressLog))
	}
	_, err := execProxy(cctx, c, sh.id, rules, args...)
	return err
}

// forgetBottle has the proxy stop serving identity and leaves its network;
// it reports the bottles the proxy serves still (-1: it could not tell).
// Gone already is fine.
func forgetBottle(ctx context.Context, c *client.Client, proxyID, identity string, nets []string) (int, error) {
	left := -1
	errs := make([]error, 1+len(nets))
	var out string
	work := append([]int{-1}, indexes(len(nets))...)
	each(work, func(i int) {
		if i < 0 {
			var err error
			out, err = execProxy(ctx, c, proxyID, nil, proxycmd.CmdForget, "--identity", identity)
			if err != nil && !isNotFound(err) && !strings.Contains(err.Error(), "is not running") {
				errs[0] = err
			}
			return
		}
		// Leaving the network does not wait for the forget: the listener is
		// bound to an interface index that leaves with the network and is
		// never handed out again.
		if err := c.NetworkDisconnect(ctx, nets[i], proxyID, true); err != nil && !isNotFound(err) && !strings.Contains(err.Error(), "is not connected") {
			errs[1+i] = engineErr(c, "disconnect egress proxy from "+nets[i], err)
		}
	})
	if errs[0] == nil {
		left = len(strings.Fields(out))
	}
	return left, errors.Join(errs...)
}

// groupProxies lists the group's shared proxies.
func groupProxies(ctx context.Context, c *client.Client, g group) ([]container.Summary, error) {
	cs, err := c.ContainerList(ctx, container.ListOptions{All: true, Filters: g.filter(RoleSharedProxy)})
	if err != nil {
		return nil, engineErr(c, "list egress proxies", err)
	}
	return cs, nil
}

// releaseIfIdle removes the proxy when it serves no bottle, and the
// group's outbound network when no proxy is left on it, under the group's
// exclusive lock. It returns what it removed.
func releaseIfIdle(ctx context.Context, c *client.Client, proxy string) ([]string, error) {
	// Its group is in its labels, which never change.
	first, err := c.ContainerInspect(ctx, proxy)
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, engineErr(c, "inspect egress proxy", err)
	}
	if first.Config == nil || first.Config.Labels[LabelRole] != RoleSharedProxy {
		return nil, nil
	}
	g := groupFromLabels(first.Config.Labels)
	lctx, cancel := context.WithTimeout(ctx, lockWait)
	defer cancel()
	unlock, err := lockGroup(lctx, g, true)
	if err != nil {
		return nil, nil // starts kept it busy: the next stop, or prune, sees to it
	}
	defer unlock()
	var removed []string
	insp, err := c.ContainerInspect(ctx, proxy)
	switch {
	case isNotFound(err):
	case err != nil:
		return nil, engineErr(c, "inspect egress proxy", err)
	default:
		if insp.State != nil && insp.State.Running {
			out, err := execProxy(ctx, c, insp.ID, nil, proxycmd.CmdList)
			if err != nil {
				return nil, err
			}
			if len(strings.Fields(out)) > 0 {
				return nil, nil
			}
		}
		name := strings.TrimPrefix(insp.Name, "/")
		if err := c.ContainerRemove(ctx, insp.ID, container.RemoveOptions{Force: true}); err != nil && !isNotFound(err) {
			return nil, engineErr(c, "remove egress proxy "+name, err)
		}
		removed = append(removed, "container "+name)
	}
	more, err := removeOutboundIfUnused(ctx, c, g)
	return append(removed, more...), err
}

// removeOutboundIfUnused removes the group's outbound network when no
// proxy of the group is left. Call it under the group's exclusive lock.
func removeOutboundIfUnused(ctx context.Context, c *client.Client, g group) ([]string, error) {
	ps, err := groupProxies(ctx, c, g)
	if err != nil || len(ps) > 0 {
		return nil, err
	}
	ns, err := c.NetworkList(ctx, network.ListOptions{Filters: g.filter(RoleOutbound)})
	if err != nil {
		return nil, engineErr(c, "list networks", err)
	}
	var removed []string
	for _, n := range ns {
		err := removeNetwork(ctx, c, n.ID)
		switch {
		case err == nil:
			removed = append(removed, "network "+n.Name)
		case isNotFound(err):
		default:
			return removed, engineErr(c, "remove network "+n.Name, err)
		}
	}
	return removed, nil
}

// groupFromLabels is the group a shared resource's labels name.
func groupFromLabels(l map[string]string) group {
	return group{home: l[sdk.LabelHome], key: l[LabelGroup], labels: l}
}

// homeProxies lists the shared proxies of this home, of any group.
func homeProxies(ctx context.Context, c *client.Client) ([]container.Summary, error) {
	f := homeFilter(filters.NewArgs(filters.Arg("label", LabelRole+"="+RoleSharedProxy), filters.Arg("label", sdk.LabelManaged+"=true")))
	cs, err := c.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return nil, engineErr(c, "list egress proxies", err)
	}
	return cs, nil
}

// letGoEverywhere is a Stop without a handle (a launch that never
// returned one): the shared proxies on the bottle's networks forget it and
// leave them, and one left serving nobody goes.
func letGoEverywhere(ctx context.Context, c *client.Client, identity string) ([]string, error) {
	ns, err := c.NetworkList(ctx, network.ListOptions{Filters: homeFilter(filters.NewArgs(filters.Arg("label", sdk.LabelIdentity+"="+identity)))})
	if err != nil || len(ns) == 0 {
		return nil, engineErr(c, "list networks", err)
	}
	ps, err := homeProxies(ctx, c)
	if err != nil || len(ps) == 0 {
		return nil, err
	}
	isProxy := map[string]bool{}
	for _, p := range ps {
		if p.State == "running" {
			isProxy[p.ID] = true
		}
	}
	// Only a proxy on the bottle's network can serve it: `add` comes after
	// the connect.
	netsOf := map[string][]string{}
	for _, n := range ns {
		insp, err := c.NetworkInspect(ctx, n.ID, network.InspectOptions{})
		if err != nil {
			if isNotFound(err) {
				continue
			}
			return nil, engineErr(c, "inspect network "+n.Name, err)
		}
		for id := range insp.Containers {
			if isProxy[id] {
				netsOf[id] = append(netsOf[id], n.ID)
			}
		}
	}
	k := &collector{}
	var proxies []string
	for id := range netsOf {
		proxies = append(proxies, id)
	}
	each(proxies, func(p string) {
		left, err := forgetBottle(ctx, c, p, identity, netsOf[p])
		k.add("", err)
		if left == 0 {
			more, err := releaseIfIdle(ctx, c, p)
			for _, m := range more {
				k.add(m, nil)
			}
			k.add("", err)
		}
	})
	return k.removed, errors.Join(k.errs...)
}

// stopIdleShared is a Stop of an idle shared proxy that List reported
// (prune): identity is then the proxy's name. It removes the proxy if it
// still serves nobody; ok says identity named one.
func stopIdleShared(ctx context.Context, c *client.Client, identity string) ([]string, bool, error) {
	if !strings.HasPrefix(identity, sharedPrefix) {
		return nil, false, nil
	}
	insp, err := c.ContainerInspect(ctx, identity)
	if err != nil || insp.Config == nil || insp.Config.Labels[LabelRole] != RoleSharedProxy {
		return nil, false, nil
	}
	if home := sdk.HomeID(); home != "" && insp.Config.Labels[sdk.LabelHome] != home {
		return nil, false, nil
	}
	removed, err := releaseIfIdle(ctx, c, insp.ID)
	return removed, true, err
}
