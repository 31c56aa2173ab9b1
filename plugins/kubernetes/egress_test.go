package main_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/backendtest"
)

// upstreamPod runs HTTP servers (busybox httpd) in one pod the test
// starts, hello-allowed on 8080 and hello-approved on each of
// approvedPorts, and returns its address.
func (e *env) upstreamPod(t *testing.T) string {
	t.Helper()
	name := "bb-upstream-" + e.runID
	script := "mkdir -p /tmp/a /tmp/b && echo hello-allowed > /tmp/a/index.html && echo hello-approved > /tmp/b/index.html"
	for _, p := range approvedPorts {
		script += fmt.Sprintf(" && httpd -p %d -h /tmp/b", p)
	}
	e.runPod(t, name, []string{"sh", "-c", script + " && exec httpd -f -p 8080 -h /tmp/a"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for ctx.Err() == nil {
		p, err := e.cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		if err == nil && p.Status.PodIP != "" && p.Status.Phase == "Running" {
			return p.Status.PodIP
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatal("the upstream pod did not come up")
	return ""
}

// approvedPorts are the upstream pod's ports that no bottle may reach
// until an approval.
var approvedPorts = []int{8081, 8082, 8083}

// TestEgressAllowlist is acceptance 1 on the real cluster, through the
// real plugin process: an allowed upstream answers through the bottle's
// proxy, another is refused with the reason, connections around the proxy
// (plain, bound to the device, to the node's kubelet) and a lookup fail,
// an approval applies live in the same pod, another pod cannot use the
// bottle's proxy, the agent cannot change its rules or its routes, and
// every attempt is in the bottle's egress audit on this host.
func TestEgressAllowlist(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	up := e.upstreamPod(t)
	be := backendtest.Start(t, e.pluginBin, e.configEnv()...)
	id := "egress-" + e.runID
	logDir := filepath.Join(t.TempDir(), "egress")
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(logDir, id+".jsonl")
	allowed, approved := up+":8080", up+":8081"
	spec := sdk.Spec{Identity: id, Agent: e.agent("egress"), Command: []string{"sleep", "600"},
		Egress: []string{allowed}, EgressLog: logPath, Detach: true,
		Env: map[string]string{"HTTP_PROXY": "http://not-the-proxy.invalid:1", "BB_TEST_SECRET": "s3cr3t-" + e.runID}}
	plan, err := be.Prepare(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	h, err := be.Launch(ctx, spec, plan, func(sdk.Progress) {})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_, _ = be.Stop(context.Background(), sdk.StopRequest{Handle: &h, Identity: id, RemoveSnapshots: true})
		}
	})
	if os.Getenv("BB_TEST_HOLD") != "" {
		t.Cleanup(func() { time.Sleep(3 * time.Minute) })
	}
	ex := be
	run := func(cmd string) (string, int) {
		t.Helper()
		res, err := ex.Exec(ctx, sdk.ExecRequest{Handle: h, Command: []string{"sh", "-c", cmd}})
		if err != nil {
			t.Fatalf("exec %q: %v", cmd, err)
		}
		return string(res.Stdout) + string(res.Stderr), res.ExitCode
	}

	// Allowed, through the proxy in the agent's environment (the
	// passed-through HTTP_PROXY does not override it). Busybox 1.35's
	// wget -T crashes, so no timeouts of its own.
	if out, code := run("wget -q -O - http://" + allowed + "/"); code != 0 || !strings.Contains(out, "hello-allowed") {
		t.Fatalf("the allowed upstream through the proxy: exit %d, %q", code, out)
	}
	// Not allowed: refused, with the reason.
	out, code := run("wget -S -O - http://" + approved + "/ 2>&1")
	if code == 0 || !strings.Contains(out, "403") || !strings.Contains(out, "not in the allowlist") {
		t.Fatalf("a host not in the allowlist: exit %d, %q; want 403 with the reason", code, out)
	}
	// Around the proxy: nothing, however the socket is made.
	for _, target := range []string{allowed, approved, "10.244.0.1:10250"} {
		for _, dev := range []string{"", " eth0"} {
			if out, code := run("probe " + target + dev); code == 0 || strings.Contains(out, "CONNECTED") {
				t.Fatalf("a direct connection to %s%s around the proxy: %q", target, dev, out)
			}
		}
	}
	if out, code := run("nc -w 3 " + strings.Replace(allowed, ":", " ", 1) + " </dev/null && echo CONNECTED"); strings.Contains(out, "CONNECTED") {
		t.Fatalf("nc reached the upstream around the proxy (exit %d): %q", code, out)
	}
	// No resolver: a random name gets no answer.
	name := "bb-random-" + e.runID + ".example.com"
	if out, code := run("nslookup " + name); code == 0 || strings.Contains(out, "Name:") {
		t.Fatalf("a lookup of %s got an answer (exit %d): %q", name, code, out)
	}
	// Only one route, no IPv6, no capabilities; the agent cannot add a
	// route nor reach the proxy's control.
	out, _ = run("cat /proc/net/route /proc/net/if_inet6 2>/dev/null; grep CapEff /proc/self/status")
	if n := strings.Count(out, "eth0"); n != 1 || !strings.Contains(out, "CapEff:\t0000000000000000") {
		t.Fatalf("the agent's network: want one IPv4 route on eth0, no IPv6 address and no capabilities:\n%s", out)
	}
	if out, code := run("ip route add default via 10.244.0.1 dev eth0 onlink"); code == 0 {
		t.Fatalf("the agent added a route: %q", out)
	}
	rules := `{"identity":"` + id + `","rules":["` + approved + `"]}`
	if out, code := run("echo '" + rules + "' | /run/bot-bottle/k8s/kube-init egress-proxy rules"); code == 0 {
		t.Fatalf("the agent changed its egress rules: %q", out)
	}
	if out, _ := run("wget -q -O - http://" + approved + "/ 2>&1"); strings.Contains(out, "hello-approved") {
		t.Fatalf("after the agent's attempt at the rules, %s answers: %q", approved, out)
	}

	// The second layer, for a cluster that enforces it (this one does not).
	if _, err := e.cs.NetworkingV1().NetworkPolicies("default").Get(ctx, "bb-"+id+"-egress", metav1.GetOptions{}); err != nil {
		t.Fatalf("the bottle's NetworkPolicy: %v", err)
	}

	// Another pod of the cluster cannot use the bottle's proxy.
	pp, err := e.cs.CoreV1().Pods("default").Get(ctx, "bb-"+id+"-egress", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The proxy's pod and the handle hold no passed-through value.
	ppJSON, _ := json.Marshal(pp)
	if strings.Contains(string(ppJSON), "s3cr3t-"+e.runID) || strings.Contains(string(h.Data), "s3cr3t-"+e.runID) {
		t.Fatalf("a passed-through secret is in the proxy pod or the handle")
	}
	stranger := "bb-stranger-" + e.runID
	e.runPod(t, stranger, []string{"sh", "-c", "printf 'GET http://" + allowed + "/ HTTP/1.1\\r\\nHost: " + allowed + "\\r\\n\\r\\n' | nc -w 5 " + pp.Status.PodIP + " 3128; echo done"})
	if logs := e.podLogs(t, stranger); strings.Contains(logs, "hello-allowed") || strings.Contains(logs, "HTTP/1.1") {
		t.Fatalf("a pod that is not the bottle used its proxy: %q", logs)
	}

	// The audit so far reaches this host at List, with no core running.
	if _, err := be.List(ctx); err != nil {
		t.Fatal(err)
	}
	evs := readEgress(t, logPath)
	if !hasEvent(evs, up, 8080, true, allowed) || !hasEvent(evs, up, 8081, false, "") {
		t.Fatalf("after List the audit lacks the allowed or the refused attempt: %+v", evs)
	}

	// Approved live: the same pod reaches it now.
	if err := be.UpdateEgress(ctx, h, []string{allowed, approved}); err != nil {
		t.Fatal(err)
	}
	if out, code := run("wget -q -O - http://" + approved + "/"); code != 0 || !strings.Contains(out, "hello-approved") {
		t.Fatalf("after the approval, %s: exit %d, %q", approved, code, out)
	}
	if _, err := be.Stop(ctx, sdk.StopRequest{Handle: &h, Identity: id, RemoveSnapshots: true}); err != nil {
		t.Fatal(err)
	}
	stopped = true
	evs = readEgress(t, logPath)
	if !hasEvent(evs, up, 8081, true, approved) {
		t.Fatalf("the audit lacks the approved connection, collected at stop: %+v", evs)
	}
	if b, _ := os.ReadFile(logPath); strings.Contains(string(b), "s3cr3t-"+e.runID) {
		t.Fatal("a passed-through secret is in the egress audit")
	}
	for _, ev := range evs {
		if ev.Identity != id || ev.Time == "" {
			t.Fatalf("an audit event of another bottle or without a time: %+v", ev)
		}
	}
	if left, err := e.leftovers(ctx, id); err != nil || len(left) > 0 {
		t.Fatalf("after stop: %v %v", left, err)
	}
}

func (e *env) podLogs(t *testing.T, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for ctx.Err() == nil {
		p, err := e.cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		if err == nil && (p.Status.Phase == "Succeeded" || p.Status.Phase == "Failed") {
			b, err := e.cs.CoreV1().Pods("default").GetLogs(name, &corev1.PodLogOptions{}).DoRaw(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("pod %s did not finish", name)
	return ""
}

func readEgress(t *testing.T, path string) []sdk.EgressEvent {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []sdk.EgressEvent
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var ev sdk.EgressEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("a line of the egress log is not an event: %q", sc.Text())
		}
		out = append(out, ev)
	}
	return out
}

func hasEvent(evs []sdk.EgressEvent, host string, port int, allowed bool, rule string) bool {
	for _, ev := range evs {
		if ev.Host == host && ev.Port == port && ev.Allowed == allowed && (rule == "" || ev.Rule == rule) {
			if !allowed && ev.Reason == "" {
				continue
			}
			return true
		}
	}
	return false
}

// TestEgressCLI is acceptance 1 through the real bot-bottle CLI: a
// detached bottle with an allowlist reaches its allowed upstream and not
// another; a `bottle request egress` (the in-bottle helper, run here
// against the bottle's host-side queue: on a cluster the queue's way into
// the pod is not built yet) approved with `bot-bottle approve` applies live
// in the same pod; `list` collects the proxy's audit and `audit --egress`
// shows every attempt; `rm` leaves nothing.
func TestEgressCLI(t *testing.T) {
	e := newEnv(t)
	up := e.upstreamPod(t)
	allowed, approved := up+":8080", up+":8081"
	home := e.home(t)
	ad := filepath.Join(home, "agents", "kubeegress")
	if err := os.MkdirAll(ad, 0o755); err != nil {
		t.Fatal(err)
	}
	agent := fmt.Sprintf("description = \"busybox with egress\"\nimage = %q\ncommand = [\"sleep\", \"600\"]\nworkdir = \"/workspace\"\negress = [%q]\n", e.image, allowed)
	if err := os.WriteFile(filepath.Join(ad, "agent.hcl"), []byte(agent), 0o644); err != nil {
		t.Fatal(err)
	}
	id, started := e.startDetached(t, home, nil, "kubeegress")
	if !strings.Contains(started, "bb-"+id+"-egress") {
		t.Fatalf("the preflight does not say where the bottle's egress goes: %s", started)
	}
	agentSh := func(cmd string) string {
		t.Helper()
		b, _ := exec.Command(kubectl(), "--kubeconfig", e.kubeconfig, "exec", "bb-"+id, "-c", "agent", "--", "sh", "-c", cmd).CombinedOutput()
		return string(b)
	}
	if got := agentSh("wget -q -O - http://" + allowed + "/"); !strings.Contains(got, "hello-allowed") {
		t.Fatalf("the allowed upstream: %q", got)
	}
	if got := agentSh("wget -q -O - http://" + approved + "/ 2>&1"); strings.Contains(got, "hello-approved") || !strings.Contains(got, "403") {
		t.Fatalf("before approval %s: %q", approved, got)
	}

	// The request, as the in-bottle helper makes it, into the bottle's
	// queue; approved by the operator, live.
	helper := exec.Command(filepath.Join(filepath.Dir(e.cli(t)), "bottle"), "request", "egress", approved, "--reason", "the test's second upstream", "--no-wait")
	helper.Env = append(os.Environ(), sdk.EnvQueueDir+"="+filepath.Join(home, "queue", id), sdk.EnvIdentity+"="+id)
	hout, err := helper.CombinedOutput()
	if err != nil {
		t.Fatalf("bottle request egress: %v\n%s", err, hout)
	}
	t.Logf("bottle request egress: %s", hout)
	m := regexp.MustCompile(`(?m)^submitted ([0-9a-f]+)$`).FindStringSubmatch(string(hout))
	if m == nil {
		t.Fatalf("no token in the helper's output %q", hout)
	}
	token := m[1]
	out, errOut, code := e.runCLI(t, home, "", nil, "approve", token)
	if code != 0 || !strings.Contains(out+errOut, "may now reach") {
		t.Fatalf("approve %s: exit %d\n%s%s", token, code, out, errOut)
	}
	if got := agentSh("wget -q -O - http://" + approved + "/"); !strings.Contains(got, "hello-approved") {
		t.Fatalf("after the live approval %s: %q", approved, got)
	}

	// list collects; audit --egress shows all three attempts.
	if out, errOut, code := e.runCLI(t, home, "", nil, "list"); code != 0 {
		t.Fatalf("list: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = e.runCLI(t, home, "", nil, "audit", "--egress", "--json", id)
	if code != 0 {
		t.Fatalf("audit --egress: exit %d\n%s%s", code, out, errOut)
	}
	var evs []sdk.EgressEvent
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev sdk.EgressEvent
		if json.Unmarshal([]byte(l), &ev) == nil {
			evs = append(evs, ev)
		}
	}
	if !hasEvent(evs, up, 8080, true, allowed) || !hasEvent(evs, up, 8081, false, "") || !hasEvent(evs, up, 8081, true, approved) {
		t.Fatalf("audit --egress lacks an attempt (allowed, refused, approved):\n%s%s", out, errOut)
	}
	if out, errOut, code := e.runCLI(t, home, "", nil, "rm", "--force", id); code != 0 {
		t.Fatalf("rm: exit %d\n%s%s", code, out, errOut)
	}
	if left := e.objectsOf(t, "kubeegress"); len(left) > 0 {
		t.Fatalf("after rm the namespace still has %v", left)
	}
}
