package main_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/testenv"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// Issue 14 acceptance 3: an agent that forges its source address (NET_RAW
// and NET_ADMIN, granted through allow_dangerous_caps) is still held to its
// own bottle's rules. Both are served by the home's one shared proxy.
// Bottle B takes bottle A's agent address and a route to A's network, and
// another address of its own network: from A's address it reaches neither
// A's listener nor A's agent; aimed at A's listener through its own network
// (where the shared proxy is too) it finds none; and from either address
// its own listener refuses A's target as not in B's allowlist. A's audit
// holds nothing of B's.
func TestForgedSourceIsHeldToItsOwnRules(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 5*time.Minute)
	e.configure(map[string]any{"allow_dangerous_caps": []string{"NET_RAW", "NET_ADMIN"}})
	logs := t.TempDir()
	type bottle struct {
		h               sdk.Handle
		id, log         string
		proxy, agentIP  string
		subnet          netip.Prefix
		target, ownName string
		net             string
	}
	launch := func(name string, caps []string) bottle {
		a := e.agent("forge")
		if a.CapAdd = caps; caps != nil {
			a.User = "0" // the engine gives a non-root user no effective capabilities
		}
		id := e.identity("forge")
		spec := e.spec(a, id, "sleep", "600")
		spec.Detach = true
		target := name + "-only.bb.test:80"
		spec.Egress = []string{target}
		spec.EgressLog = filepath.Join(logs, id+".jsonl")
		_, h, _ := e.launch(ctx, spec)
		var hd struct {
			ProxyAddr string `json:"proxy_addr"`
		}
		if err := json.Unmarshal(h.Data, &hd); err != nil {
			t.Fatal(err)
		}
		insp, err := e.cli.ContainerInspect(ctx, "bot-bottle-"+id)
		if err != nil {
			t.Fatal(err)
		}
		netName, ep := agentNet(t, insp)
		subnet := netip.MustParsePrefix(fmt.Sprintf("%s/%d", ep.IPAddress, ep.IPPrefixLen)).Masked()
		return bottle{h: h, id: id, log: spec.EgressLog, proxy: hd.ProxyAddr, agentIP: ep.IPAddress, subnet: subnet, target: target, net: netName}
	}
	a := launch("a", nil)
	b := launch("b", []string{"NET_RAW", "NET_ADMIN"})
	defer e.stop(ctx, sdk.StopRequest{Handle: &a.h})
	defer e.stop(ctx, sdk.StopRequest{Handle: &b.h})

	run := func(script string) (string, int) {
		res, err := e.p.be.Exec(ctx, sdk.ExecRequest{Handle: b.h, Command: []string{"sh", "-c", script}})
		if err != nil {
			t.Fatalf("exec in %s: %v", b.id, err)
		}
		return strings.TrimSpace(string(res.Stdout) + string(res.Stderr)), res.ExitCode
	}
	// B may forge: it holds the capabilities. Its routes pick the source
	// address of what it sends: A's agent address towards A's network, and
	// .5 of its own /29 (nobody's) or its own towards its proxy.
	other := b.subnet.Addr().Next().Next().Next().Next().Next()
	bProxyIP, bPort, _ := strings.Cut(b.proxy, ":")
	if out, code := run(fmt.Sprintf("ip addr add %s/32 dev eth0 && ip addr add %s/32 dev eth0 && ip route add %s dev eth0 src %s && ip route get %s",
		a.agentIP, other, a.subnet, a.agentIP, a.agentIP)); code != 0 || !strings.Contains(out, "src "+a.agentIP) {
		t.Fatalf("bottle B could not take A's address (is NET_ADMIN granted?): %d %s", code, out)
	}
	aProxyIP, aPort, _ := strings.Cut(a.proxy, ":")
	for _, dst := range []string{aProxyIP + " " + aPort, a.agentIP + " 80"} {
		if out, code := run("nc -w 3 " + dst + " </dev/null"); code == 0 {
			t.Errorf("bottle B, forging A's address %s, reached %s: %s", a.agentIP, dst, out)
		}
	}
	// One proxy serves both (the home's shared one): what holds B to its
	// own rules is the interface a connection arrives on, not the address
	// it comes from. B goes at A's listener on that same proxy through its
	// own network: its own address as the source, A's proxy address as the
	// destination, sent to the proxy's interface on B's network (a
	// neighbour entry of its own making, since the proxy answers ARP for an
	// address only on the interface that holds it). The proxy would take
	// that packet as its own; A's listener, bound to A's interface, is not
	// there for it.
	if pa, pb := handleProxy(t, a.h), handleProxy(t, b.h); pa != pb {
		t.Fatalf("bottles A and B have proxies %s and %s, want the home's one shared proxy", pa, pb)
	}
	pinsp, err := e.cli.ContainerInspect(ctx, handleProxy(t, b.h))
	if err != nil {
		t.Fatal(err)
	}
	mac := pinsp.NetworkSettings.Networks[b.net].MacAddress
	if out, code := run(fmt.Sprintf("ip route replace %s/32 dev eth0 src %s && arp -i eth0 -s %s %s && ip route get %s && arp -n -a",
		aProxyIP, b.agentIP, aProxyIP, mac, aProxyIP)); code != 0 || !strings.Contains(out, "src "+b.agentIP) || !strings.Contains(out, mac) {
		t.Fatalf("bottle B could not aim at A's proxy address through its own network: %d %s", code, out)
	}
	if out, code := run("nc -w 3 " + aProxyIP + " " + aPort + " </dev/null"); code == 0 {
		t.Errorf("bottle B reached A's listener %s:%s on the shared proxy through its own network: %s", aProxyIP, aPort, out)
	}
	if out, _ := run(fmt.Sprintf("printf 'GET http://%s/ HTTP/1.0\r\n\r\n' | nc -w 5 %s %s | head -1", a.target, aProxyIP, aPort)); strings.Contains(out, "HTTP/") {
		t.Errorf("bottle B asked A's listener on the shared proxy through its own network and got %q, want no connection", out)
	}
	// (Where bridge netfilter is on, the engine's rules for internal
	// networks drop that packet before the proxy sees it; the interface
	// binding holds without them. Inside the proxy's own namespace a
	// connection to either address is local and reaches its listener: only
	// the proxy and what `docker exec` runs there are in it.)
	for _, src := range []string{other.String(), b.agentIP} {
		if out, code := run(fmt.Sprintf("ip route replace %s/32 dev eth0 src %s && ip route get %s", bProxyIP, src, bProxyIP)); code != 0 || !strings.Contains(out, "src "+src) {
			t.Fatalf("bottle B could not send from %s: %d %s", src, code, out)
		}
		out, _ := run(fmt.Sprintf("printf 'GET http://%s/ HTTP/1.0\\r\\n\\r\\n' | nc -w 5 %s %s | head -1", a.target, bProxyIP, bPort))
		if !strings.Contains(out, " 403 ") || !strings.Contains(out, b.id) {
			t.Errorf("bottle B from %s asking its proxy for A's %s: %q, want 403 under B's allowlist", src, a.target, out)
		}
	}
	for _, ev := range testenv.EgressEvents(t, a.log) {
		t.Errorf("A's egress log holds an event from B's attempts: %+v", ev)
	}
	refused := 0
	for _, ev := range testenv.EgressEvents(t, b.log) {
		if ev.Identity != b.id || ev.Allowed {
			t.Errorf("B's egress log: %+v", ev)
		}
		if ev.Host == strings.TrimSuffix(a.target, ":80") {
			refused++
		}
	}
	if refused != 2 {
		t.Errorf("B's egress log has %d refusals of A's target, want 2", refused)
	}
}
