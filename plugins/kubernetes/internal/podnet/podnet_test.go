//go:build linux

package podnet

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test runs its own binary inside network namespaces it makes: as the
// lockdown (BB_PODNET_HELPER=restrict) and as a client (=dial ADDR [DEV]).
func TestMain(m *testing.M) {
	switch os.Getenv("BB_PODNET_HELPER") {
	case "restrict":
		if _, err := RestrictTo(netip.MustParseAddr(os.Getenv("BB_PODNET_PROXY"))); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	case "dial":
		d := net.Dialer{Timeout: 3 * time.Second}
		if dev := os.Getenv("BB_PODNET_DEV"); dev != "" {
			d.Control = func(_, _ string, c syscall.RawConn) error {
				var serr error
				_ = c.Control(func(fd uintptr) {
					serr = syscall.SetsockoptString(int(fd), syscall.SOL_SOCKET, syscall.SO_BINDTODEVICE, dev)
				})
				return serr
			}
		}
		c, err := d.Dial("tcp4", os.Getenv("BB_PODNET_ADDR"))
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		c.Close()
		fmt.Println("CONNECTED")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func need(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip(why)
}

// TestRestrictTo: two namespaces on one link, as two pods on a bridge. The
// agent's reaches the proxy's address and nothing else, also from a socket
// bound to the device; it keeps no IPv6 and no other route.
func TestRestrictTo(t *testing.T) {
	if os.Geteuid() != 0 {
		need(t, "network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		need(t, "iproute2's ip is needed")
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		need(t, "busybox-static is needed (scripts/deps.sh installs it)")
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	sfx := hex.EncodeToString(b[:])
	agent, other := "bbpa"+sfx, "bbpo"+sfx
	dev, peer := "bbpa"+sfx, "bbpo"+sfx
	sh := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	sh("ip", "netns", "add", agent)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", agent).Run() })
	sh("ip", "netns", "add", other)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", other).Run() })
	sh("ip", "link", "add", dev, "netns", agent, "type", "veth", "peer", "name", peer, "netns", other)
	sh("ip", "-n", agent, "addr", "add", "10.99.0.2/24", "dev", dev)
	sh("ip", "-n", agent, "link", "set", dev, "up")
	sh("ip", "-n", agent, "link", "set", "lo", "up")
	sh("ip", "-n", other, "addr", "add", "10.99.0.3/24", "dev", peer) // a stranger (the node, another pod)
	sh("ip", "-n", other, "addr", "add", "10.99.0.4/24", "dev", peer) // the proxy
	sh("ip", "-n", other, "link", "set", peer, "up")
	sh("ip", "-n", other, "link", "set", "lo", "up")
	sh("ip", "-n", agent, "route", "add", "default", "via", "10.99.0.3")
	srv := exec.Command("ip", "netns", "exec", other, "/bin/busybox", "nc", "-ll", "-p", "8080", "-e", "/bin/busybox", "echo", "hello")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })

	dial := func(addr, bind string) string {
		t.Helper()
		cmd := exec.Command("ip", "netns", "exec", agent, os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "BB_PODNET_HELPER=dial", "BB_PODNET_ADDR="+addr, "BB_PODNET_DEV="+bind)
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(dial("10.99.0.3:8080", ""), "CONNECTED") {
		if time.Now().After(deadline) {
			t.Fatal("control: before the lockdown the agent's namespace does not reach the stranger")
		}
		time.Sleep(100 * time.Millisecond)
	}

	cmd := exec.Command("ip", "netns", "exec", agent, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "BB_PODNET_HELPER=restrict", "BB_PODNET_PROXY=10.99.0.4")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("RestrictTo: %v\n%s", err, out)
	}
	if out := dial("10.99.0.4:8080", ""); !strings.Contains(out, "CONNECTED") {
		t.Fatalf("after the lockdown the proxy is not reachable: %s", out)
	}
	if out := dial("10.99.0.4:8080", dev); !strings.Contains(out, "CONNECTED") {
		t.Fatalf("after the lockdown the proxy is not reachable from a bound socket: %s", out)
	}
	// The stranger sends first, as a node or pod could: the agent must not
	// learn its address from that.
	_ = exec.Command("ip", "netns", "exec", other, "/bin/busybox", "ping", "-c", "1", "-W", "1", "-I", "10.99.0.3", "10.99.0.2").Run()
	for _, bind := range []string{"", dev} {
		if out := dial("10.99.0.3:8080", bind); strings.Contains(out, "CONNECTED") {
			t.Fatalf("after the lockdown the agent reached a stranger (bound to %q)", bind)
		}
	}
	routes := sh("ip", "-n", agent, "-4", "route", "show", "table", "all")
	for _, l := range strings.Split(strings.TrimSpace(routes), "\n") {
		if !strings.HasPrefix(l, "10.99.0.4 dev "+dev) && !strings.HasPrefix(l, "local ") && !strings.Contains(l, " dev lo ") {
			t.Errorf("a route is left besides the proxy's: %q", l)
		}
	}
	if v6 := sh("ip", "-n", agent, "-6", "addr", "show", "dev", dev); strings.TrimSpace(v6) != "" {
		t.Errorf("an IPv6 address is left: %s", v6)
	}
	if neigh := sh("ip", "-n", agent, "neigh", "show", "dev", dev); !strings.Contains(neigh, "10.99.0.4") || strings.Contains(neigh, "10.99.0.3 lladdr") {
		t.Errorf("neighbours: want the proxy's pinned and no other learnt:\n%s", neigh)
	}
}
