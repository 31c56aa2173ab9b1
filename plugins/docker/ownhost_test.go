package main_test

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/testenv"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// Issue 18 acceptance 2 on the real engine: rules that name the proxy's own
// host — loopback, 0.0.0.0 and the proxy's own address, applied live as an
// approval would be — never make the proxy connect there. A listener in
// the proxy's network namespace (a container sharing it) proves it: it logs
// its own probe and nothing from the proxy.
func TestEgressNeverDialsItsOwnHost(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 5*time.Minute)
	id := e.identity("ownhost")
	spec := e.spec(e.agent("ownhost"), id, "sleep", "300")
	spec.Detach = true
	spec.Egress = []string{"127.0.0.1:7777", "0.0.0.0:7777"}
	_, h, _ := e.launch(ctx, spec)
	proxyIP, _, _ := strings.Cut(handleProxyAddr(t, h), ":")
	rules := append(spec.Egress, proxyIP+":7777", proxyIP+":3128")
	if err := e.p.be.UpdateEgress(ctx, h, rules); err != nil {
		t.Fatalf("update egress: %v", err)
	}

	bb := testenv.Busybox{}.Image(t, e.cli, e.label)
	name := "bbt-listener-" + id
	out, err := exec.CommandContext(ctx, "docker", "run", "-d", "--name", name, "--label", testenv.Label+"="+e.label,
		"--network", "container:"+handleProxy(t, h), bb,
		"sh", "-c", "mkdir -p /www && echo hit > /www/index.html && exec httpd -f -vv -p 7777 -h /www").CombinedOutput()
	if err != nil {
		t.Fatalf("start the listener: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("docker", "rm", "-f", name).Run() })
	// The listener works and logs what reaches it: its own probe.
	probe, err := exec.CommandContext(ctx, "docker", "exec", name, "sh", "-c",
		"for i in $(seq 50); do wget -q -O - http://127.0.0.1:7777/ && exit 0; sleep 0.1; done; exit 1").CombinedOutput()
	if err != nil || !strings.Contains(string(probe), "hit") {
		t.Fatalf("the listener does not answer in the proxy's namespace: %v: %s", err, probe)
	}
	logs := func() string {
		out, _ := exec.CommandContext(ctx, "docker", "logs", name).CombinedOutput()
		return string(out)
	}
	before := strings.Count(logs(), "127.0.0.1")
	if before == 0 {
		t.Fatalf("the listener did not log its own probe:\n%s", logs())
	}

	// Wait for the live rules, then try every way at the proxy's own host.
	for _, target := range []string{"127.0.0.1:7777", "0.0.0.0:7777", proxyIP + ":7777", proxyIP + ":3128"} {
		res := e.sh(ctx, h, `p=${HTTP_PROXY#http://}; printf 'GET http://`+target+`/ HTTP/1.0\r\n\r\n' | nc -w 5 ${p%:*} ${p##*:}`)
		got := string(res.Stdout)
		if !strings.Contains(got, " 403 ") || !strings.Contains(got, "which no rule can allow") {
			t.Errorf("GET via the proxy to %s: %q, want 403: the proxy's own host", target, got)
		}
		res = e.sh(ctx, h, `p=${HTTP_PROXY#http://}; printf 'CONNECT `+target+` HTTP/1.1\r\nHost: x\r\n\r\n' | nc -w 5 ${p%:*} ${p##*:} | head -1`)
		if got := string(res.Stdout); !strings.Contains(got, " 403 ") {
			t.Errorf("CONNECT via the proxy to %s: %q, want 403", target, got)
		}
	}
	if after := strings.Count(logs(), "127.0.0.1"); after != before || strings.Count(logs(), "\n") > before+2 {
		t.Errorf("the listener in the proxy's namespace was reached:\n%s", logs())
	}
	if err := exec.Command("docker", "rm", "-f", name).Run(); err != nil {
		t.Fatal(err)
	}
	e.stop(ctx, sdk.StopRequest{Handle: &h})
	e.assertGone(ctx, id)
}
