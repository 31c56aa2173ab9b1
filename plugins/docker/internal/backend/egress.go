package backend

// Egress control. A bottle with an allowlist gets two networks of its own:
//
//   - an internal one (Internal, and inhibit_ipv4 so that the host has no
//     address on it either), where only the agent and its proxy live, at
//     fixed addresses: the agent has no route out and reaches nothing but
//     the proxy;
//   - an outbound bridge, where only the proxy lives: its way out.
//
// The proxy (package proxycmd, the plugin's own executable in an image of
// that one static binary) listens on its internal address only, allows what the
// rules file in its volume says, and appends one JSON line per attempt to
// the bottle's egress log, bind-mounted from the host. UpdateEgress rewrites
// the rules file; the proxy's watcher applies it within a poll interval,
// with no restart of anything.
//
// DNS is not a side door: the agent's resolver is Docker's embedded one
// (127.0.0.11), which forwards names it does not know, internal network or
// not (seen on engine 20.10: from the container's namespace, so on an
// internal network with a host-side gateway the query leaves the bottle
// and is only dropped by the host's firewall; and from the host's
// namespace when the host's resolver is on loopback). Its upstream is set
// to 127.0.0.1, which Docker takes as the loopback of the agent's own
// namespace, where nothing listens: nothing is forwarded, whatever the
// host's resolv.conf holds. Only the proxy resolves names, and only names a
// rule allowed.
//
// Nothing else leads out either: the agent's namespace has IPv6 off (no
// link-local path to the host's side of the bridge), and the proxy, the one
// container on both networks, has IP forwarding off, so that an agent
// granted NET_ADMIN cannot route through it (the engine's own rules for
// internal networks drop such packets too, where bridge netfilter is on).
//
// A bottle with an empty allowlist gets no network at all (NetworkMode
// none): the strictest deny, and the cheapest start. An approval for it
// applies from its next resume.

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/bot-bottle/bot-bottle/plugins/docker/internal/proxycmd"
	"github.com/bot-bottle/bot-bottle/plugins/docker/internal/settings"
	"github.com/bot-bottle/bot-bottle/plugins/internal/egress"
	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/egressrule"
)

const (
	// ProxyPort is where the proxy listens on the internal network.
	ProxyPort = 3128
	// guestRulesDir is the proxy's rules volume; rules.json lives in it.
	guestRulesDir  = "/etc/bot-bottle"
	rulesFile      = "rules.json"
	guestEgressLog = "/var/log/bot-bottle/egress.jsonl"
	// nobody runs the proxy when the plugin runs as root.
	nobody    = "65534:65534"
	nobodyID  = 65534
	proxyMem  = 128 << 20
	proxyPids = 64
	// proxyWait bounds waiting for the proxy to listen or to reload.
	proxyWait = 20 * time.Second
	// subnetTries bounds the search for a free subnet in the pool.
	subnetTries = 32
	// noProxy is what the agent reaches without the proxy: itself.
	noProxy = "localhost,127.0.0.1,::1"
)

// Proxy log lines the plugin waits for (see package proxycmd
// and egress.Watcher).
const (
	logListening = "egress proxy listening"
	logReloaded  = "egress rules reloaded"
	logBadRules  = "keeping the egress rules in force"
)

// proxyEnvNames are the variables the agent's proxy settings use; a
// passed-through value of one of them never overrides the bottle's proxy.
var proxyEnvNames = []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"}

// internalNet is a bottle's internal network: its /29 and the fixed
// addresses on it. .1 is the (unconfigured) gateway the engine reserves.
type internalNet struct{ subnet netip.Prefix }

func (n internalNet) gateway() netip.Addr { return n.subnet.Addr().Next() }
func (n internalNet) proxyIP() netip.Addr { return n.gateway().Next() }
func (n internalNet) agentIP() netip.Addr { return n.proxyIP().Next() }
func (n internalNet) proxyAddr() string {
	return netip.AddrPortFrom(n.proxyIP(), ProxyPort).String()
}

// randomSubnet picks a /SubnetBits subnet of pool at random.
func randomSubnet(pool netip.Prefix) (netip.Prefix, error) {
	n := uint64(1) << (settings.SubnetBits - pool.Bits())
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return netip.Prefix{}, fmt.Errorf("pick a subnet: %w", err)
	}
	i := binary.BigEndian.Uint64(b[:]) % n
	base := pool.Masked().Addr().As4()
	v := binary.BigEndian.Uint32(base[:]) + uint32(i)<<(32-settings.SubnetBits)
	var out [4]byte
	binary.BigEndian.PutUint32(out[:], v)
	return netip.PrefixFrom(netip.AddrFrom4(out), settings.SubnetBits), nil
}

// isOverlap reports whether a network create failed because its subnet is
// taken, which a retry with another subnet fixes.
func isOverlap(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "overlaps") || strings.Contains(msg, "conflicts with network")
}

// createNetwork creates a bridge network on a free /29 of pool, trying
// first (when valid) before random ones.
func createNetwork(ctx context.Context, c *client.Client, name string, internal bool, pool, first netip.Prefix, labels map[string]string) (string, netip.Prefix, error) {
	for try := 0; try < subnetTries; try++ {
		subnet := first
		if try > 0 || !subnet.IsValid() || !pool.Contains(subnet.Addr()) {
			var err error
			if subnet, err = randomSubnet(pool); err != nil {
				return "", subnet, err
			}
		}
		opts := network.CreateOptions{
			Driver:   "bridge",
			Internal: internal,
			Labels:   labels,
			IPAM: &network.IPAM{Config: []network.IPAMConfig{{
				Subnet:  subnet.String(),
				Gateway: subnet.Addr().Next().String(),
			}}},
		}
		if internal {
			// Without an address on the host's side, the agent cannot
			// reach host services on the bridge either.
			opts.Options = map[string]string{"com.docker.network.bridge.inhibit_ipv4": "true"}
		}
		resp, err := c.NetworkCreate(ctx, name, opts)
		if err == nil {
			return resp.ID, subnet, nil
		}
		if !isOverlap(err) {
			return "", subnet, engineErr(c, "create network "+name, err)
		}
		if err := ctx.Err(); err != nil {
			return "", subnet, err
		}
	}
	return "", netip.Prefix{}, fmt.Errorf("create network %s: found no free /%d in subnet_pool %s after %d tries; give the docker plugin a larger or emptier subnet_pool in plugins.hcl",
		name, settings.SubnetBits, pool, subnetTries)
}

// checkEgress validates what a bottle with an allowlist needs, without side
// effects, and returns where the proxy binary is.
func checkEgress(ctx context.Context, c *client.Client, spec sdk.Spec, set settings.Settings) (string, error) {
	if _, err := egressrule.ParseRules(spec.Egress); err != nil {
		return "", fmt.Errorf("egress allowlist: %w", err)
	}
	if spec.EgressLog != "" && !filepath.IsAbs(spec.EgressLog) {
		return "", fmt.Errorf("egress log %q is not an absolute path", spec.EgressLog)
	}
	for _, n := range set.EgressNetworks {
		if _, err := c.NetworkInspect(ctx, n, network.InspectOptions{}); err != nil {
			return "", engineErr(c, "egress network "+n+" (egress_networks in plugins.hcl)", err)
		}
	}
	return locateProxy()
}

// prepareEgressLog makes sure the host file the proxy appends to exists as
// a regular file (the proxy's `add`, run as the plugin's user, opens it and
// hands it to the proxy) and belongs to the plugin's user: a plugin before
// the shared proxy gave it to nobody when it ran as root.
func prepareEgressLog(path string) error {
	if path == "" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("egress log: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("egress log: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("egress log %s is not a regular file", path)
	}
	if uid := os.Getuid(); uid == 0 {
		if sys, ok := st.Sys().(*syscall.Stat_t); ok && (int(sys.Uid) != uid || int(sys.Gid) != os.Getgid()) {
			if err := f.Chown(uid, os.Getgid()); err != nil {
				return fmt.Errorf("egress log: %w", err)
			}
		}
	}
	return nil
}

// ipv6Sysctls turn IPv6 off in the agent's namespace: the internal network
// has no IPv6, but the kernel would still give the agent a link-local
// address, and with it the host's link-local address on the bridge. A
// local Linux engine without IPv6 has no such sysctls (and no such
// addresses).
func ipv6Sysctls(c *client.Client) map[string]string {
	if runtime.GOOS == "linux" && strings.HasPrefix(c.DaemonHost(), "unix://") {
		if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
			return nil
		}
	}
	return map[string]string{"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}
}

// agentEgress puts the agent on its internal network at its fixed address,
// with the proxy in its environment and no resolver that forwards.
func agentEgress(c *client.Client, cfg *container.Config, hc *container.HostConfig, netID string, in internalNet) *network.NetworkingConfig {
	env := cfg.Env[:0]
	for _, kv := range cfg.Env {
		k, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(proxyEnvNames, k) {
			env = append(env, kv)
		}
	}
	proxyURL := "http://" + in.proxyAddr()
	cfg.Env = append(env,
		"HTTP_PROXY="+proxyURL, "HTTPS_PROXY="+proxyURL, "http_proxy="+proxyURL, "https_proxy="+proxyURL,
		"NO_PROXY="+noProxy, "no_proxy="+noProxy)
	hc.NetworkMode = container.NetworkMode(netID)
	hc.DNS = []string{"127.0.0.1"}
	hc.Sysctls = ipv6Sysctls(c)
	return &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
		netID: {IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: in.agentIP().String()}},
	}}
}

// rulesArchive is a tar holding the rules file, for CopyToContainer.
func rulesArchive(data []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: rulesFile, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data)), ModTime: time.Now()}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(data); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeRules delivers the rules file into the proxy's volume.
func writeRules(ctx context.Context, c *client.Client, proxyID string, data []byte) error {
	archive, err := rulesArchive(data)
	if err != nil {
		return fmt.Errorf("pack egress rules: %w", err)
	}
	if err := c.CopyToContainer(ctx, proxyID, guestRulesDir, bytes.NewReader(archive), container.CopyToContainerOptions{}); err != nil {
		return engineErr(c, "write egress rules", err)
	}
	return nil
}

// readRules returns the rules file the proxy has now.
func readRules(ctx context.Context, c *client.Client, proxyID string) ([]byte, error) {
	rc, _, err := c.CopyFromContainer(ctx, proxyID, guestRulesDir+"/"+rulesFile)
	if err != nil {
		return nil, engineErr(c, "read egress rules", err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	if _, err := tr.Next(); err != nil {
		return nil, fmt.Errorf("read egress rules: %w", err)
	}
	return io.ReadAll(io.LimitReader(tr, egress.MaxRulesFileSize+1))
}

// waitLog follows a container's log from since until a line makes decide
// say done (or fail), the container stops, or wait passes.
func waitLog(ctx context.Context, c *client.Client, id string, since time.Time, wait time.Duration, decide func(line string) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	opts := container.LogsOptions{ShowStdout: true, ShowStderr: true, Follow: true}
	if !since.IsZero() {
		opts.Since = since.UTC().Format(time.RFC3339Nano)
	}
	rc, err := c.ContainerLogs(ctx, id, opts)
	if err != nil {
		return engineErr(c, "read proxy log", err)
	}
	defer rc.Close()
	pr, pw := io.Pipe()
	go func() {
		_, err := stdcopy.StdCopy(pw, pw, rc)
		pw.CloseWithError(err)
	}()
	defer pr.Close()
	var last []string
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		done, err := decide(line)
		if err != nil || done {
			return err
		}
		if last = append(last, line); len(last) > 3 {
			last = last[1:]
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("the egress proxy did not answer within %s (last log lines: %s)", wait, strings.Join(last, "; "))
	}
	return fmt.Errorf("the egress proxy stopped: %s", strings.Join(last, "; "))
}

// logMessage returns the msg="…" of a slog text line.
func logMessage(line string) string {
	_, rest, ok := strings.Cut(line, "msg=")
	if !ok {
		return ""
	}
	if strings.HasPrefix(rest, `"`) {
		if end := strings.Index(rest[1:], `"`); end >= 0 {
			return rest[1 : end+1]
		}
		return rest[1:]
	}
	msg, _, _ := strings.Cut(rest, " ")
	return msg
}

// launchEgress readies the egress side of a bottle with an allowlist and
// makes its agent's container (create): the home's shared proxy (found,
// or made) serves it on a network of the proxy's pool, made ahead (see
// shared.go), and it returns once the proxy's listener for the bottle is
// bound and the container is made on that network, at .3. It records the
// proxy and the network in data; a failure after the `add` is rolled back
// by the launch's rollback (forget). The pool is refilled in the
// background.
func (b *Backend) launchEgress(ctx, cctx context.Context, c *client.Client, spec sdk.Spec, set settings.Settings, planned netip.Prefix, rules []byte, data *handleData, tm *steps, progress func(sdk.Progress), create func(pooled) (container.CreateResponse, error)) (container.CreateResponse, error) {
	var none container.CreateResponse
	bin, err := locateProxy()
	if err != nil {
		return none, err
	}
	if err := prepareEgressLog(spec.EgressLog); err != nil {
		return none, err
	}
	img, err := b.proxyImage(ctx, c, bin, set.Labels, progress)
	if err != nil {
		return none, err
	}
	tm.mark("egress-proxy-image")
	auditDir := ""
	if spec.EgressLog != "" {
		auditDir = filepath.Dir(spec.EgressLog)
	}
	g := groupOf(set.Labels)
	key := sharedKey(img, proxyUser(), auditDir, set.EgressNetworks)
	data.Shared, data.ProxyName = true, g.proxyName(key)
	sh, unlock, err := b.ensureShared(ctx, cctx, c, g, key, img, set, auditDir, progress)
	if err != nil {
		return none, err
	}
	data.Proxy = sh.id
	tm.mark("egress-find-proxy")
	p, created, free, err := claimNetwork(ctx, cctx, c, g, key, sh, set, planned, spec.Identity, rules, spec.EgressLog, tm, create)
	unlock()
	if err != nil {
		return none, err
	}
	tm.mark("egress-add-create")
	in := p.in
	data.Network, data.NetworkName, data.ProxyAddr = p.id, p.name, in.proxyAddr()
	progress(sdk.Progress{Stage: StageNetwork, Message: "network " + p.name + " (internal, " + in.subnet.String() + ", made ahead; the agent at " + in.agentIP().String() + ")", ID: p.id})
	progress(sdk.Progress{Stage: StageEgress, Message: "egress proxy " + sh.name + " listening on " + in.proxyAddr() + " for this bottle only; allowed: " + strings.Join(spec.Egress, ", "), ID: sh.id})
	if len(spec.Agent.Credentials) > 0 {
		names := make([]string, len(spec.Agent.Credentials))
		for i, cr := range spec.Agent.Credentials {
			names[i] = cr.Name
		}
		progress(sdk.Progress{Stage: StageEgress, Message: "egress proxy injects credentials " + strings.Join(names, ", ") + " (the agent holds placeholders)", ID: sh.id})
	}
	b.replenish(c, g, key, sh, set, free)
	return created, nil
}

// UpdateEgress replaces the running proxy's allowlist with rules and
// returns once the proxy applies it: the bottle keeps running, nothing
// restarts. A bottle launched with an empty allowlist has no network; its
// new allowlist applies from its next resume.
func (b *Backend) UpdateEgress(ctx context.Context, h sdk.Handle, rules []string) error {
	return finish(b.updateEgress(ctx, h, rules))
}

func (b *Backend) updateEgress(ctx context.Context, h sdk.Handle, rules []string) error {
	hd, err := decodeHandle(h)
	if err != nil {
		return fmt.Errorf("update egress: %w", err)
	}
	if err := checkIdentity(h.Identity); err != nil {
		return fmt.Errorf("update egress: %w", err)
	}
	if hd.Proxy == "" {
		return fmt.Errorf("update egress of %s: it was launched with an empty allowlist and has no network at all; the new allowlist applies from its next resume: %w", h.Identity, sdk.ErrNotSupported)
	}
	data, err := egress.EncodeRulesFile(h.Identity, rules)
	if err != nil {
		return fmt.Errorf("update egress of %s: %w", h.Identity, err)
	}
	c, err := b.engine(ctx)
	if err != nil {
		return fmt.Errorf("update egress of %s: %w", h.Identity, err)
	}
	if hd.Shared {
		// The shared proxy applies them before it answers: nothing to
		// wait for, nothing restarts.
		if _, err := controlProxy(ctx, c, hd.Proxy, proxycmd.Request{Op: proxycmd.CmdRules, Identity: h.Identity, Rules: data}, ""); err != nil {
			return fmt.Errorf("update egress of %s: %w", h.Identity, err)
		}
		b.log.Info("egress allowlist updated", "identity", h.Identity, "rules", strings.Join(rules, ", "))
		return nil
	}
	// A per-bottle proxy (launched by a plugin before the shared one): its
	// rules file, which its watcher reloads.
	insp, err := c.ContainerInspect(ctx, hd.Proxy)
	if err != nil {
		return fmt.Errorf("update egress of %s: %w", h.Identity, engineErr(c, "inspect egress proxy "+hd.ProxyName, err))
	}
	if insp.State == nil || !insp.State.Running {
		status := "not running"
		if insp.State != nil {
			status = insp.State.Status
		}
		return fmt.Errorf("update egress of %s: its egress proxy %s is %s", h.Identity, hd.ProxyName, status)
	}
	if current, err := readRules(ctx, c, hd.Proxy); err == nil && bytes.Equal(current, data) {
		return nil
	}
	since := time.Now()
	if err := writeRules(ctx, c, hd.Proxy, data); err != nil {
		return fmt.Errorf("update egress of %s: %w", h.Identity, err)
	}
	err = waitLog(ctx, c, hd.Proxy, since, proxyWait, func(line string) (bool, error) {
		switch logMessage(line) {
		case logReloaded:
			return true, nil
		case logBadRules:
			return false, errors.New("the proxy refused the new rules: " + line)
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("update egress of %s: %w", h.Identity, err)
	}
	b.log.Info("egress allowlist updated", "identity", h.Identity, "rules", strings.Join(rules, ", "))
	return nil
}
