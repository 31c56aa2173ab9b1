package main_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/bot-bottle/bot-bottle/internal/testenv"
)

// The commands the egress scripts use: a test network with upstream HTTP
// servers on it that the scripts' bottles may reach through their proxies,
// and a DNS capture on the engine host. All traffic stays on networks the
// script creates; only names under .invalid are ever looked up.

// canCapture says whether a DNS capture can run here (tcpdump and the
// right to capture).
func canCapture() bool {
	p, err := exec.LookPath("tcpdump")
	if err != nil {
		return false
	}
	return exec.Command(p, "-D").Run() == nil
}

// testnet VAR: create this script's test network (labelled, removed at the
// end), let the proxies of the script's bottles join it (egress_networks in
// plugins.hcl), and put its name in $VAR.
func cmdTestNet(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: testnet VAR")
	}
	runID, scriptID := ts.Getenv("RUNID"), ts.Getenv("SCRIPTID")
	name := "bbt-" + scriptID
	out, err := exec.Command("docker", "network", "create", "--label", testenv.Label+"="+runID, "--label", "test.bot-bottle.script="+scriptID, name).CombinedOutput()
	if err != nil {
		ts.Fatalf("create test network: %v: %s", err, out)
	}
	ts.Defer(func() { removeScriptResources(scriptID) })
	hcl := dockerPluginsHCL(runID, scriptID, name)
	if err := os.WriteFile(filepath.Join(ts.Getenv("BOT_BOTTLE_HOME"), "plugins.hcl"), []byte(hcl), 0o600); err != nil {
		ts.Fatalf("write plugins.hcl: %v", err)
	}
	ts.Setenv(args[0], name)
}

// removeScriptResources removes what carries the script's label, upstreams
// and bottles alike, containers before the networks they are on.
func removeScriptResources(scriptID string) {
	filter := "label=test.bot-bottle.script=" + scriptID
	if ids, err := exec.Command("docker", "ps", "-aq", "--filter", filter).Output(); err == nil && len(strings.Fields(string(ids))) > 0 {
		exec.Command("docker", append([]string{"rm", "-f", "-v"}, strings.Fields(string(ids))...)...).Run()
	}
	for _, kind := range []string{"network", "volume"} {
		if ids, err := exec.Command("docker", kind, "ls", "-q", "--filter", filter).Output(); err == nil && len(strings.Fields(string(ids))) > 0 {
			exec.Command("docker", append([]string{kind, "rm"}, strings.Fields(string(ids))...)...).Run()
		}
	}
}

// upstream NAME NETWORK [IPVAR]: start an HTTP server on NETWORK that
// answers "hello from NAME" under the network alias NAME; put its address
// in $IPVAR. It returns once the server answers.
func cmdUpstream(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 || len(args) > 3 {
		ts.Fatalf("usage: upstream NAME NETWORK [IPVAR]")
	}
	name, netName := args[0], args[1]
	labels := []string{"--label", testenv.Label + "=" + ts.Getenv("RUNID"), "--label", "test.bot-bottle.script=" + ts.Getenv("SCRIPTID")}
	run := append([]string{"run", "-d"}, labels...)
	run = append(run, "--network", netName, "--network-alias", name, "--tmpfs", "/www", ts.Getenv("UPIMG"),
		"sh", "-c", "echo 'hello from "+name+"' > /www/index.html && exec httpd -f -p 80 -h /www")
	out, err := exec.Command("docker", run...).CombinedOutput()
	if err != nil {
		ts.Fatalf("start upstream %s: %v: %s", name, err, out)
	}
	id := strings.TrimSpace(string(out))
	out, err = exec.Command("docker", "inspect", "-f", "{{(index .NetworkSettings.Networks \""+netName+"\").IPAddress}}", id).Output()
	ip := strings.TrimSpace(string(out))
	if err != nil || ip == "" {
		ts.Fatalf("upstream %s has no address on %s: %v", name, netName, err)
	}
	probe := append([]string{"run", "--rm"}, labels...)
	probe = append(probe, "--network", netName, ts.Getenv("UPIMG"),
		"sh", "-c", "for i in $(seq 50); do wget -q -O /dev/null http://"+ip+"/ && exit 0; sleep 0.1; done; exit 1")
	if out, err := exec.Command("docker", probe...).CombinedOutput(); err != nil {
		ts.Fatalf("upstream %s never answered: %v: %s", name, err, out)
	}
	if len(args) == 3 {
		ts.Setenv(args[2], ip)
	}
}

// tlsupstream NETWORK NAME...: start an HTTPS (443) and plain HTTP (80)
// upstream on NETWORK under the aliases NAME... (tlsprobe serve: it answers
// with the sha256 of each header value), with a certificate of a CA the
// script makes; the home's plugins.hcl then has the proxy trust that CA
// (test_upstream_ca). tlsprobe itself is left at $WORK/tls/tlsprobe for
// the script's agents. It returns once the upstream answers.
func cmdTLSUpstream(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: tlsupstream NETWORK NAME...")
	}
	netName, names := args[0], args[1:]
	dir := filepath.Join(ts.Getenv("WORK"), "tls")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		ts.Fatalf("%v", err)
	}
	bin, err := testenv.TLSProbe()
	if err != nil {
		ts.Fatalf("%v", err)
	}
	caPEM, certPEM, keyPEM, err := testenv.TestCA(names...)
	if err != nil {
		ts.Fatalf("test CA: %v", err)
	}
	for name, data := range map[string][]byte{"tlsprobe": bin, "ca.pem": caPEM, "cert.pem": certPEM, "key.pem": keyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o755); err != nil {
			ts.Fatalf("%v", err)
		}
	}
	labels := []string{"--label", testenv.Label + "=" + ts.Getenv("RUNID"), "--label", "test.bot-bottle.script=" + ts.Getenv("SCRIPTID")}
	run := append([]string{"run", "-d"}, labels...)
	run = append(run, "--network", netName, "-v", dir+":/tls:ro")
	for _, n := range names {
		run = append(run, "--network-alias", n)
	}
	run = append(run, ts.Getenv("UPIMG"), "/tls/tlsprobe", "serve", "/tls/cert.pem", "/tls/key.pem")
	out, err := exec.Command("docker", run...).CombinedOutput()
	if err != nil {
		ts.Fatalf("start upstream: %v: %s", err, out)
	}
	probe := append([]string{"run", "--rm"}, labels...)
	probe = append(probe, "--network", netName, ts.Getenv("UPIMG"),
		"sh", "-c", "for i in $(seq 50); do wget -q -O /dev/null http://"+names[0]+"/ && exit 0; sleep 0.1; done; exit 1")
	if out, err := exec.Command("docker", probe...).CombinedOutput(); err != nil {
		ts.Fatalf("upstream %v never answered: %v: %s", names, err, out)
	}
	hcl := filepath.Join(ts.Getenv("BOT_BOTTLE_HOME"), "plugins.hcl")
	b, err := os.ReadFile(hcl)
	if err != nil {
		ts.Fatalf("%v", err)
	}
	i := strings.LastIndex(string(b), "  }\n}")
	if i < 0 {
		ts.Fatalf("plugins.hcl has no config block to add test_upstream_ca to")
	}
	b = []byte(string(b[:i]) + fmt.Sprintf("    test_upstream_ca = %q\n", filepath.Join(dir, "ca.pem")) + string(b[i:]))
	if err := os.WriteFile(hcl, b, 0o600); err != nil {
		ts.Fatalf("%v", err)
	}
}

// captures are the DNS captures running, by script.
var captures sync.Map // *testscript.TestScript -> *capture

type capture struct {
	cmd  *exec.Cmd
	out  *os.File
	done chan error
}

// capture start | capture stop FILE: capture DNS (port 53, TCP and UDP) on
// every interface of the engine host, from before `start` returns until
// `stop`, which writes tcpdump's lines to FILE.
func cmdCapture(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 1 {
		ts.Fatalf("usage: capture start | capture stop FILE")
	}
	switch {
	case args[0] == "start" && len(args) == 1:
		if _, ok := captures.Load(ts); ok {
			ts.Fatalf("a capture is already running")
		}
		out, err := os.CreateTemp(ts.Getenv("WORK"), "capture-*.txt")
		ts.Check(err)
		cmd := exec.Command("tcpdump", "-i", "any", "-n", "-l", "-U", "-s", "0", "port", "53")
		cmd.Stdout = out
		stderr, err := cmd.StderrPipe()
		ts.Check(err)
		if err := cmd.Start(); err != nil {
			ts.Fatalf("start tcpdump (make deps installs it; capturing needs root or CAP_NET_RAW): %v", err)
		}
		c := &capture{cmd: cmd, out: out, done: make(chan error, 1)}
		listening := make(chan struct{})
		var said strings.Builder
		go func() {
			sc := bufio.NewScanner(stderr)
			once := sync.Once{}
			for sc.Scan() {
				said.WriteString(sc.Text() + "; ")
				if strings.Contains(sc.Text(), "listening on") {
					once.Do(func() { close(listening) })
				}
			}
			c.done <- cmd.Wait()
		}()
		select {
		case <-listening:
		case err := <-c.done:
			ts.Fatalf("tcpdump ended before it listened: %v: %s", err, said.String())
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			ts.Fatalf("tcpdump did not start listening: %s", said.String())
		}
		captures.Store(ts, c)
		ts.Defer(func() {
			if _, ok := captures.LoadAndDelete(ts); ok {
				cmd.Process.Kill()
			}
		})
	case args[0] == "stop" && len(args) == 2:
		v, ok := captures.LoadAndDelete(ts)
		if !ok {
			ts.Fatalf("no capture is running")
		}
		c := v.(*capture)
		// Packets of the last moment are still on their way to tcpdump.
		time.Sleep(500 * time.Millisecond)
		c.cmd.Process.Signal(syscall.SIGINT)
		select {
		case err := <-c.done:
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				ts.Fatalf("tcpdump: %v", err)
			}
		case <-time.After(10 * time.Second):
			c.cmd.Process.Kill()
			ts.Fatalf("tcpdump did not stop")
		}
		data, err := os.ReadFile(c.out.Name())
		ts.Check(err)
		c.out.Close()
		os.Remove(c.out.Name())
		ts.Check(os.WriteFile(ts.MkAbs(args[1]), data, 0o644))
		ts.Logf("captured %d DNS lines", strings.Count(string(data), "\n"))
	default:
		ts.Fatalf("usage: capture start | capture stop FILE")
	}
}
