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
//	running, no bottle ──last stop of the home──► kept running, idle (the
//	                      default), for the next start to find; removed when
//	                      a newer proxy of the home is there (an upgrade), or
//	                      with keep_egress_proxy = false or a Stop without a
//	                      handle (exclusive lock), with the home's outbound
//	                      network once no proxy uses it
//	running, no bottle ──`bot-bottle prune`──► removed
//
// Starts hold the home's lock shared from finding the proxy to its `add`;
// the last stop takes it exclusively before it looks whether the proxy
// serves anyone, so no start ever finds a proxy that is being removed. The
// lock is a file of the plugin's own (flock), per home and plugin labels.
//
// An upgraded plugin has another build ID, so another key and another
// proxy: its bottles go to the new one, the old one keeps serving the
// bottles it has until the last of them stops, and that stop removes it
// (a newer proxy of the home is there). The start that makes the new one
// removes the old ones that serve nobody.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
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
	// RolePool is the LabelRole of an internal network made ahead for the
	// bottles of one shared proxy (LabelProxyKey).
	RolePool = "egress-pool"
	// LabelProxyKey is the shared proxy's key: what it was made from.
	LabelProxyKey = "dev.bot-bottle.proxy-key"
	// LabelGroup is the home and plugin labels a shared resource serves.
	LabelGroup = "dev.bot-bottle.egress-group"
	// LabelProxy, on an agent's container, names the shared proxy that
	// serves it.
	LabelProxy = "dev.bot-bottle.egress-proxy"

	sharedPrefix = "bot-bottle-egress-"
	// poolFree networks are kept free on a proxy, made after a start takes
	// one; more than poolMax free ones are removed by a stop.
	poolFree        = 2
	poolMax         = 4
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
	g := group{home: home, key: keyOf(home, extra)[:12], labels: map[string]string{}}
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
	dir, err := privateDir()
	if err != nil {
		return nil, fmt.Errorf("egress lock: %w", err)
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

// privateDir is the plugin's own directory for this user
// ($TMPDIR/bot-bottle-docker-<uid>): the egress locks, the bottles' CA
// files and the images' roots (credentials.go). It is made private, and
// refused when someone else could have made or changed it.
func privateDir() (string, error) {
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("bot-bottle-docker-%d", os.Getuid()))
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", err
	}
	if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() || fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("the plugin's directory %s is not a private directory of this user", dir)
	} else if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return "", fmt.Errorf("the plugin's directory %s belongs to uid %d, not this user", dir, st.Uid)
	}
	return dir, nil
}

// shared is a running shared proxy.
type shared struct {
	id, name string
	// fresh: this start made it, with its control directory mounted: its
	// control socket file comes once it has started (awaitControl).
	fresh bool
}

// proxyUser is the user the shared proxy runs as (nobody when the plugin
// runs as root), and ctlUser the one its control commands run as: the
// plugin's own, who owns the egress logs they open.
func proxyUser() string {
	if os.Getuid() == 0 {
		return nobody
	}
	return ctlUser()
}

// proxyUID is the uid proxyUser names.
func proxyUID() int {
	if os.Getuid() == 0 {
		return nobodyID
	}
	return os.Getuid()
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
	sh, made, err := b.makeShared(ctx, cctx, c, g, key, name, img, set, auditDir, progress)
	if err != nil || made {
		if err != nil {
			unlock()
			return shared{}, nil, err
		}
		return sh, unlock, nil
	}
	// Another start made it meanwhile: go on beside the others, shared.
	unlock()
	if unlock, err = lockGroup(ctx, g, false); err != nil {
		return shared{}, nil, err
	}
	if insp, err := c.ContainerInspect(ctx, name); err == nil && insp.State != nil && insp.State.Running {
		progress(sdk.Progress{Stage: StageEgress, Message: "using egress proxy " + name, ID: insp.ID})
		return shared{id: insp.ID, name: name}, unlock, nil
	}
	unlock()
	return shared{}, nil, fmt.Errorf("the egress proxy %s went while this start waited for it; start again", name)
}

// makeShared makes (or, when another process just did, finds: made is
// false) the proxy, under the group's exclusive lock.
func (b *Backend) makeShared(ctx, cctx context.Context, c *client.Client, g group, key, name string, img imageRef, set settings.Settings, auditDir string, progress func(sdk.Progress)) (sh shared, made bool, err error) {
	sh, err = b.makeShared1(ctx, cctx, c, g, key, name, img, set, auditDir, progress, &made)
	return sh, made, err
}

func (b *Backend) makeShared1(ctx, cctx context.Context, c *client.Client, g group, key, name string, img imageRef, set settings.Settings, auditDir string, progress func(sdk.Progress), made *bool) (shared, error) {
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
		dropControl(insp.ID, "")
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
	// The control directory (control.go) is the proxy's alone: mounted
	// here, in no bottle.
	ctlDir, err := prepareControlDir(name)
	if err != nil {
		b.log.Warn("the egress proxy is driven through docker exec only", "error", err)
	}
	cmd := []string{proxycmd.CmdServe}
	if ctlDir != "" {
		mounts = append(mounts, mount.Mount{Type: mount.TypeBind, Source: ctlDir, Target: guestControlDir})
		cmd = append(cmd, "--control-dir", guestControlDir)
	}
	pids := int64(sharedProxyPids)
	cfg := &container.Config{Image: img.ID, User: proxyUser(), Cmd: cmd, Labels: labels}
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
	if err != nil && ctlDir != "" && strings.Contains(err.Error(), "bind source path does not exist: "+ctlDir) {
		// The engine is not on this host (a remote DOCKER_HOST): it
		// cannot mount what the plugin made, and the plugin could not
		// reach the socket anyway.
		hc.Mounts, cfg.Cmd, ctlDir = mounts[:len(mounts)-1], cmd[:1], ""
		created, err = c.ContainerCreate(cctx, cfg, hc, nil, nil, name)
	}
	if err != nil {
		if !strings.Contains(err.Error(), "is already in use") {
			return shared{}, engineErr(c, "create egress proxy "+name, err)
		}
		// Another process (another lock directory) made it: use it. Its
		// control directory is that process's, not ctlDir.
		insp, err := c.ContainerInspect(ctx, name)
		if err != nil {
			return shared{}, engineErr(c, "inspect egress proxy "+name, err)
		}
		created.ID, ctlDir = insp.ID, ""
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
		if ctlDir != "" {
			if err := linkControl(created.ID, ctlDir); err != nil {
				b.log.Warn("the egress proxy is driven through docker exec only", "error", err)
			}
		}
	}
	if err := c.ContainerStart(cctx, created.ID, container.StartOptions{}); err != nil {
		return shared{id: created.ID, name: name}, engineErr(c, "start egress proxy "+name, err)
	}
	progress(sdk.Progress{Stage: StageEgress, Message: "started egress proxy " + name + " (shared by this home's bottles)", ID: created.ID})
	*made = true
	// Whatever this config says, one kept by an earlier config may idle.
	removed, err := sweepKept(cctx, c, g, key)
	if len(removed) > 0 {
		progress(sdk.Progress{Stage: StageEgress, Message: "removed the idle egress proxy of an earlier build or config: " + strings.Join(removed, ", ")})
	}
	if err != nil {
		b.log.Warn("could not remove an idle egress proxy of another build; prune removes it", "error", err)
	}
	if ctlDir != "" {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			sweepControl(ctx, c)
		}()
	}
	return shared{id: created.ID, name: name, fresh: ctlDir != ""}, nil
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

// A pooled network is an internal network made ahead and joined to one
// proxy (its key: a network is never on two proxies), at .2 of its /29.
// It is free while the proxy serves nobody on it: a start takes one with
// its `add` (which picks the first free of those offered, atomically), so
// the agent's network is there before the start and the proxy is on it
// already; a stop hands it back with its `forget`, once the agent's
// container is gone.
type pooled struct {
	id, name string
	in       internalNet
}

// poolOf lists the pooled networks the proxy is on.
func poolOf(insp container.InspectResponse, prefix string) []pooled {
	var out []pooled
	if insp.NetworkSettings == nil {
		return nil
	}
	for name, ep := range insp.NetworkSettings.Networks {
		if !strings.HasPrefix(name, prefix) || ep == nil {
			continue
		}
		ip, err := netip.ParseAddr(ep.IPAddress)
		if err != nil || !ip.Is4() {
			continue
		}
		subnet := netip.PrefixFrom(ip, ep.IPPrefixLen).Masked()
		if in := (internalNet{subnet: subnet}); in.proxyIP() == ip {
			out = append(out, pooled{id: ep.NetworkID, name: name, in: in})
		}
	}
	return out
}

func poolPrefix(proxyName string) string { return proxyName + "-p" }

// newPooled makes a network for the pool and joins the proxy to it.
func newPooled(ctx context.Context, c *client.Client, g group, key string, sh shared, pool, first netip.Prefix) (pooled, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return pooled{}, fmt.Errorf("name a network: %w", err)
	}
	name := poolPrefix(sh.name) + hex.EncodeToString(b[:])
	labels := map[string]string{LabelRole: RolePool, LabelProxyKey: key}
	for k, v := range g.labels {
		labels[k] = v
	}
	id, subnet, err := createNetwork(ctx, c, name, true, pool, first, labels)
	if err != nil {
		return pooled{}, err
	}
	p := pooled{id: id, name: name, in: internalNet{subnet: subnet}}
	if err := c.NetworkConnect(ctx, id, sh.id, &network.EndpointSettings{
		IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: p.in.proxyIP().String()},
	}); err != nil {
		_ = c.NetworkRemove(ctx, id)
		return pooled{}, engineErr(c, "connect egress proxy "+sh.name+" to "+name, err)
	}
	return p, nil
}

// claimNetwork has the proxy serve the bottle on a free network of its
// pool, or on a new one when none is free, and has create make the agent's
// container on it. It returns the network, the container, how many of the
// pool are free now (-1: unknown), and returns once the bottle's listener
// is bound.
//
// The container is made while the proxy takes the network, on the one it
// will most likely take: the first offered that no container of the
// proxy's bottles is on (made or being made). When another start took that
// one first the container is made again on the one this start got; it
// never starts before, so it is never on a network another bottle holds.
func claimNetwork(ctx, cctx context.Context, c *client.Client, g group, key string, sh shared, set settings.Settings, planned netip.Prefix, identity string, rules []byte, egressLog string, tm *steps, create func(pooled) (container.CreateResponse, error)) (pooled, container.CreateResponse, int, error) {
	var (
		none       container.CreateResponse
		insp       container.InspectResponse
		users      []container.Summary
		ierr, lerr error
		wg         sync.WaitGroup
	)
	wg.Go(func() { insp, ierr = c.ContainerInspect(ctx, sh.id) })
	wg.Go(func() {
		users, lerr = c.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(
			filters.Arg("label", LabelProxy+"="+sh.name), filters.Arg("label", sdk.LabelManaged+"=true"))})
	})
	wg.Wait()
	if ierr != nil {
		return pooled{}, none, -1, engineErr(c, "inspect egress proxy "+sh.name, ierr)
	}
	cands := poolOf(insp, poolPrefix(sh.name))
	mrand.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
	if lerr == nil {
		taken := map[string]bool{}
		for _, u := range users {
			taken[u.HostConfig.NetworkMode] = true
		}
		sort.SliceStable(cands, func(i, j int) bool { return !taken[cands[i].id] && taken[cands[j].id] })
	}
	if sh.fresh && insp.State != nil {
		awaitControl(cctx, sh.id, insp.State.Pid)
	}
	tm.mark("egress-look")
	add := func(offers []pooled) (pooled, int, error) {
		addrs := make([]string, len(offers))
		for i, o := range offers {
			addrs[i] = o.in.proxyAddr()
		}
		rep, err := controlProxy(cctx, c, sh.id, proxycmd.Request{Op: proxycmd.CmdAdd, Identity: identity,
			Listen: strings.Join(addrs, ","), Rules: rules}, egressLog)
		if err != nil {
			return pooled{}, -1, err
		}
		for _, o := range offers {
			if o.in.proxyAddr() == rep.Addr {
				return o, len(cands) - len(rep.Bottles), nil
			}
		}
		return pooled{}, -1, fmt.Errorf("egress proxy add: it took %q, which was not offered", rep.Addr)
	}
	if len(cands) > 0 {
		guess := cands[0]
		var (
			made container.CreateResponse
			merr error
		)
		done := make(chan struct{})
		var createTook time.Duration
		t0 := time.Now()
		go func() { defer close(done); made, merr = create(guess); createTook = time.Since(t0) }()
		p, free, err := add(cands)
		tm.took("egress-add", time.Since(t0))
		<-done
		tm.took("egress-create", createTook)
		if err == nil && p.id == guess.id {
			return p, made, free, merr
		}
		if merr == nil {
			if rerr := c.ContainerRemove(cctx, made.ID, container.RemoveOptions{Force: true}); rerr != nil && !isNotFound(rerr) {
				return pooled{}, none, -1, engineErr(c, "remove the agent's container made on a network another start took", rerr)
			}
		}
		if err == nil {
			made, err := create(p)
			return p, made, free, err
		}
		if !strings.Contains(err.Error(), "is free") {
			return pooled{}, none, -1, err
		}
	}
	p, err := newPooled(cctx, c, g, key, sh, set.SubnetPool, planned)
	if err != nil {
		return pooled{}, none, -1, err
	}
	cands = append(cands, p)
	p, free, err := add([]pooled{p})
	if err != nil {
		return pooled{}, none, -1, err
	}
	made, err := create(p)
	return p, made, free, err
}

// replenish keeps poolFree networks free on the proxy, in the background
// of a start, under the group's shared lock (so that no last stop removes
// the proxy meanwhile, and none leaves a network it made behind). One at a
// time per process and proxy.
func (b *Backend) replenish(c *client.Client, g group, key string, sh shared, set settings.Settings, free int) {
	if free < 0 || free >= poolFree {
		return
	}
	b.mu.Lock()
	if b.refilling == nil {
		b.refilling = map[string]bool{}
	}
	if b.refilling[sh.name] {
		b.mu.Unlock()
		return
	}
	b.refilling[sh.name] = true
	b.mu.Unlock()
	go func() {
		defer func() {
			b.mu.Lock()
			delete(b.refilling, sh.name)
			b.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		unlock, err := lockGroup(ctx, g, false)
		if err != nil {
			return
		}
		defer unlock()
		if insp, err := c.ContainerInspect(ctx, sh.id); err != nil || insp.State == nil || !insp.State.Running {
			return // gone meanwhile: its last stop took its pool
		}
		for ; free < poolFree; free++ {
			if _, err := newPooled(ctx, c, g, key, sh, set.SubnetPool, netip.Prefix{}); err != nil {
				b.log.Warn("could not prepare an egress network ahead", "error", err)
				return
			}
		}
	}()
}

// forgetBottle has the proxy stop serving identity, which hands its
// network back to the pool. It reports whether the proxy served it and the
// bottles it serves still (-1: it could not tell). A proxy gone already
// serves nobody.
func forgetBottle(ctx context.Context, c *client.Client, proxyID, identity string) (bool, int, error) {
	rep, err := controlProxy(ctx, c, proxyID, proxycmd.Request{Op: proxycmd.CmdForget, Identity: identity}, "")
	if err != nil {
		if isNotFound(err) || strings.Contains(err.Error(), "is not running") {
			return false, 0, nil
		}
		return false, -1, err
	}
	return rep.Forgot, len(rep.Bottles), nil
}

// groupProxies lists the group's shared proxies.
func groupProxies(ctx context.Context, c *client.Client, g group) ([]container.Summary, error) {
	cs, err := c.ContainerList(ctx, container.ListOptions{All: true, Filters: g.filter(RoleSharedProxy)})
	if err != nil {
		return nil, engineErr(c, "list egress proxies", err)
	}
	return cs, nil
}

// keepProxy says whether the plugin's config keeps a shared proxy that
// serves nobody after a stop (keep_egress_proxy, on by default), for the
// home's next egress start to find running; list shows it idle and prune
// removes it. A config that does not parse keeps nothing: no start could
// use it.
func (b *Backend) keepProxy() bool {
	return b.setErr == nil && b.set.KeepEgressProxy
}

// servedNobody is what a stop (or a failed launch's rollback) does once
// proxy has forgotten the last bottle it served: with keep, it stays for
// the home's next start unless a newer proxy of its home is there to take
// that start (it is then of an earlier build or config, and no start of
// this one would use it); without, it goes. It returns what it removed.
func servedNobody(ctx context.Context, c *client.Client, proxy string, keep bool) ([]string, error) {
	if keep {
		newer, err := supersededBy(ctx, c, proxy)
		if err != nil || newer == "" {
			return nil, err
		}
	}
	return releaseIfIdle(ctx, c, proxy)
}

// supersededBy names a proxy of proxy's group made after it, or "" when
// there is none. One listing: a home almost always has a single proxy.
func supersededBy(ctx context.Context, c *client.Client, proxy string) (string, error) {
	ps, err := homeProxies(ctx, c)
	if err != nil {
		return "", err
	}
	var self *container.Summary
	for i := range ps {
		if ps[i].ID == proxy || containerName(ps[i]) == proxy {
			self = &ps[i]
		}
	}
	if self == nil {
		return "", nil // gone already
	}
	for _, p := range ps {
		if p.ID == self.ID || p.Labels[LabelGroup] != self.Labels[LabelGroup] || p.State != "running" {
			continue
		}
		// The listing's creation times are whole seconds: inspect to
		// order two of the same second.
		if p.Created > self.Created {
			return containerName(p), nil
		}
		if p.Created == self.Created {
			a, err := c.ContainerInspect(ctx, self.ID)
			if err != nil {
				return "", engineErr(c, "inspect egress proxy", err)
			}
			b, err := c.ContainerInspect(ctx, p.ID)
			if err != nil {
				return "", engineErr(c, "inspect egress proxy", err)
			}
			if b.Created > a.Created {
				return containerName(p), nil
			}
		}
	}
	return "", nil
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
	removed, err := removeIdleProxy(ctx, c, g, proxy)
	if err != nil {
		return removed, err
	}
	more, err := removeOutboundIfUnused(ctx, c, g)
	return append(removed, more...), err
}

// removeIdleProxy removes the group's proxy when it serves no bottle, with
// its pooled networks. Call it under the group's exclusive lock.
func removeIdleProxy(ctx context.Context, c *client.Client, g group, proxy string) ([]string, error) {
	insp, err := c.ContainerInspect(ctx, proxy)
	switch {
	case isNotFound(err):
		return nil, nil
	case err != nil:
		return nil, engineErr(c, "inspect egress proxy", err)
	}
	if insp.State != nil && insp.State.Running {
		rep, err := controlProxy(ctx, c, insp.ID, proxycmd.Request{Op: proxycmd.CmdList}, "")
		if err != nil {
			return nil, err
		}
		if len(rep.Bottles) > 0 {
			return nil, nil
		}
	}
	name := strings.TrimPrefix(insp.Name, "/")
	if err := c.ContainerRemove(ctx, insp.ID, container.RemoveOptions{Force: true}); err != nil && !isNotFound(err) {
		return nil, engineErr(c, "remove egress proxy "+name, err)
	}
	dropControl(insp.ID, name)
	removed := []string{"container " + name}
	more, err := removePool(ctx, c, g, insp.Config.Labels[LabelProxyKey])
	return append(removed, more...), err
}

// sweepKept removes the group's kept proxies of keys other than key that
// serve nobody: with keep_egress_proxy, a proxy of an earlier build (or
// audit directory, or egress_networks) would otherwise idle until prune
// once a start has made the one of key. One that serves bottles is left
// to their last stop. Call it under the group's exclusive lock.
func sweepKept(ctx context.Context, c *client.Client, g group, key string) ([]string, error) {
	ps, err := groupProxies(ctx, c, g)
	if err != nil {
		return nil, err
	}
	k := &collector{}
	each(ps, func(p container.Summary) {
		if p.Labels[LabelProxyKey] == key {
			return
		}
		more, err := removeIdleProxy(ctx, c, g, p.ID)
		for _, m := range more {
			k.add(m, nil)
		}
		k.add("", err)
	})
	return k.removed, errors.Join(k.errs...)
}

// removePool removes the pooled networks of the proxy of key, which is
// gone.
func removePool(ctx context.Context, c *client.Client, g group, key string) ([]string, error) {
	if key == "" {
		return nil, nil
	}
	f := g.filter(RolePool)
	f.Add("label", LabelProxyKey+"="+key)
	ns, err := c.NetworkList(ctx, network.ListOptions{Filters: f})
	if err != nil {
		return nil, engineErr(c, "list networks", err)
	}
	k := &collector{}
	each(ns, func(n network.Summary) {
		k.add(dropNetwork(ctx, c, n.ID, n.Name))
	})
	sort.Strings(k.removed)
	return k.removed, errors.Join(k.errs...)
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
		what, err := dropNetwork(ctx, c, n.ID, n.Name)
		if err != nil {
			return removed, err
		}
		if what != "" {
			removed = append(removed, what)
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
// returned one), once the agent's container is gone: every running shared
// proxy of the home forgets the identity (a no-op where it was not
// served), and one that served it and now serves nobody goes. It is not
// kept: such a Stop cleans up after a crash, most often for prune, which
// leaves nothing it stopped behind.
func letGoEverywhere(ctx context.Context, c *client.Client, identity string) ([]string, error) {
	ps, err := homeProxies(ctx, c)
	if err != nil {
		return nil, err
	}
	k := &collector{}
	each(ps, func(p container.Summary) {
		if p.State != "running" {
			return
		}
		forgot, left, err := forgetBottle(ctx, c, p.ID, identity)
		k.add("", err)
		if forgot {
			k.add("egress listener on "+containerName(p), nil)
		}
		if forgot && left == 0 {
			more, err := servedNobody(ctx, c, p.ID, false)
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
		return stopIdleNetwork(ctx, c, identity)
	}
	if home := sdk.HomeID(); home != "" && insp.Config.Labels[sdk.LabelHome] != home {
		return nil, false, nil
	}
	// Bottles it still serves whose agent's container is gone (their stop
	// died midway) are forgotten first.
	if insp.State != nil && insp.State.Running {
		rep, err := controlProxy(ctx, c, insp.ID, proxycmd.Request{Op: proxycmd.CmdList}, "")
		if err != nil {
			return nil, true, err
		}
		for _, id := range rep.Bottles {
			cs, err := c.ContainerList(ctx, container.ListOptions{All: true, Filters: homeFilter(filters.NewArgs(filters.Arg("label", sdk.LabelIdentity+"="+id)))})
			if err != nil {
				return nil, true, engineErr(c, "list containers", err)
			}
			if len(cs) == 0 {
				if _, _, err := forgetBottle(ctx, c, insp.ID, id); err != nil {
					return nil, true, err
				}
			}
		}
	}
	removed, err := releaseIfIdle(ctx, c, insp.ID)
	return removed, true, err
}

// stopIdleNetwork is a Stop of a shared network List reported idle: an
// outbound network with no proxy of its group, or a pooled network whose
// proxy is gone. It checks again under the group's exclusive lock.
func stopIdleNetwork(ctx context.Context, c *client.Client, name string) ([]string, bool, error) {
	n, err := c.NetworkInspect(ctx, name, network.InspectOptions{})
	if err != nil || n.Name != name || n.Labels[sdk.LabelManaged] != "true" {
		return nil, false, nil
	}
	if home := sdk.HomeID(); home != "" && n.Labels[sdk.LabelHome] != home {
		return nil, false, nil
	}
	g := groupFromLabels(n.Labels)
	switch n.Labels[LabelRole] {
	case RoleOutbound, RolePool:
	default:
		return nil, false, nil
	}
	lctx, cancel := context.WithTimeout(ctx, lockWait)
	defer cancel()
	unlock, err := lockGroup(lctx, g, true)
	if err != nil {
		return nil, true, nil
	}
	defer unlock()
	if n.Labels[LabelRole] == RoleOutbound {
		removed, err := removeOutboundIfUnused(ctx, c, g)
		return removed, true, err
	}
	key := n.Labels[LabelProxyKey]
	if _, err := c.ContainerInspect(ctx, g.proxyName(key)); err == nil || !isNotFound(err) {
		return nil, true, nil // its proxy is there (or cannot be told): in use
	}
	removed, err := removePool(ctx, c, g, key)
	return removed, true, err
}
