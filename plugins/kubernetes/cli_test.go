package main_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bot-bottle/bot-bottle/sdk"
)

var (
	cliOnce sync.Once
	cliBin  string
	cliErr  error
)

// cli builds the real bot-bottle binary (and its static helper) next to
// the plugin, once per run.
func (e *env) cli(t *testing.T) string {
	t.Helper()
	cliOnce.Do(func() {
		cliBin = filepath.Join(e.binDir, "bot-bottle")
		for _, b := range [][]string{{"-o", cliBin, "./cmd/bot-bottle"}, {"-o", filepath.Join(e.binDir, "bottle"), "./cmd/bottle"}} {
			cmd := exec.Command("go", append([]string{"build"}, b...)...)
			cmd.Dir = "../.."
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				cliErr = fmt.Errorf("build %s: %v\n%s", b[2], err, out)
				return
			}
		}
	})
	if cliErr != nil {
		t.Fatal(cliErr)
	}
	return cliBin
}

// home makes a bot-bottle home whose kubernetes plugin talks to the test
// cluster, with an agent "kube" on the test image that passes BB_TEST_SECRET.
func (e *env) home(t *testing.T) string {
	t.Helper()
	home := t.TempDir()
	var b strings.Builder
	b.WriteString("plugin \"kubernetes\" {\n  config {\n")
	cfg := e.config()
	keys := make([]string, 0, len(cfg))
	for k := range cfg {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch v := cfg[k].(type) {
		case string:
			fmt.Fprintf(&b, "    %s = %q\n", k, v)
		case []string:
			q := make([]string, len(v))
			for i, s := range v {
				q[i] = fmt.Sprintf("%q", s)
			}
			fmt.Fprintf(&b, "    %s = [%s]\n", k, strings.Join(q, ", "))
		}
	}
	b.WriteString("  }\n}\n")
	if err := os.WriteFile(filepath.Join(home, "plugins.hcl"), []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	ad := filepath.Join(home, "agents", "kube")
	if err := os.MkdirAll(ad, 0o755); err != nil {
		t.Fatal(err)
	}
	agent := fmt.Sprintf("description = \"busybox on the test cluster\"\nimage = %q\ncommand = [\"sh\"]\nresume_command = [\"sh\"]\nworkdir = \"/workspace\"\nenv = [\"BB_TEST_SECRET\"]\n", e.image)
	if err := os.WriteFile(filepath.Join(ad, "agent.hcl"), []byte(agent), 0o644); err != nil {
		t.Fatal(err)
	}
	return home
}

func (e *env) cliEnv(home string) []string {
	return append(os.Environ(), "BOT_BOTTLE_HOME="+home,
		"BOT_BOTTLE_DEV_PLUGINS=kubernetes="+e.pluginBin, "TERM=xterm")
}

// runCLI runs bot-bottle without a terminal and returns its output and
// exit code.
func (e *env) runCLI(t *testing.T, home string, stdin string, extraEnv []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(e.cli(t), args...)
	cmd.Env = append(e.cliEnv(home), extraEnv...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return out.String(), errOut.String(), ee.ExitCode()
	case err != nil:
		t.Fatalf("bot-bottle %v: %v", args, err)
	}
	return out.String(), errOut.String(), 0
}

// objectsOf lists the objects of an agent in the namespace.
func (e *env) objectsOf(t *testing.T, agent string) []string {
	t.Helper()
	ctx := context.Background()
	sel := metav1.ListOptions{LabelSelector: sdk.LabelAgent + "=" + agent}
	var out []string
	pods, err := e.cs.CoreV1().Pods("default").List(ctx, sel)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		out = append(out, "pod "+p.Name)
	}
	secs, _ := e.cs.CoreV1().Secrets("default").List(ctx, sel)
	for _, s := range secs.Items {
		out = append(out, "secret "+s.Name)
	}
	pvcs, _ := e.cs.CoreV1().PersistentVolumeClaims("default").List(ctx, sel)
	for _, c := range pvcs.Items {
		out = append(out, "volume claim "+c.Name)
	}
	nps, _ := e.cs.NetworkingV1().NetworkPolicies("default").List(ctx, sel)
	for _, np := range nps.Items {
		out = append(out, "network policy "+np.Name)
	}
	return out
}

// projectDir is a project owned by a user that is neither root nor 1000.
func projectDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		_ = os.Chown(filepath.Join(dir, name), 3131, 3131)
	}
	_ = os.Chown(dir, 3131, 3131)
	return dir
}

// TestStartCwdExitCode is acceptance 1: the shell agent on the cluster
// with --cwd prints the copied marker and exits 7, and nothing of the
// bottle is left in the namespace.
func TestStartCwdExitCode(t *testing.T) {
	e := newEnv(t)
	home := e.home(t)
	marker := "marker-" + e.runID
	dir := projectDir(t, map[string]string{"marker": marker + "\n"})
	out, errOut, code := e.runCLI(t, home, "", nil, "start", "shell", "--backend", "kubernetes", "--cwd", dir, "--", "sh", "-c", "cat marker; exit 7")
	if code != 7 || !strings.Contains(out, marker) {
		t.Fatalf("start --cwd: exit %d, stdout %q, stderr %q; want the marker and exit 7", code, out, errOut)
	}
	if left := e.objectsOf(t, "shell"); len(left) > 0 {
		t.Fatalf("after the session the namespace still has %v", left)
	}
}

// identityRE finds the identity of a bottle of the agent in the CLI's
// output.
func identityRE(agent string) *regexp.Regexp {
	return regexp.MustCompile(`\b(` + regexp.QuoteMeta(agent) + `-[0-9a-z]{5})\b`)
}

// startDetached runs `start AGENT --backend kubernetes --detach ARGS...` in
// home and returns the new bottle's identity and the command's output; the
// bottle is removed at the test's end, whatever became of it.
func (e *env) startDetached(t *testing.T, home string, extraEnv []string, agent string, args ...string) (id, output string) {
	t.Helper()
	argv := append([]string{"start", agent, "--backend", "kubernetes", "--detach"}, args...)
	out, errOut, code := e.runCLI(t, home, "", extraEnv, argv...)
	if code != 0 {
		t.Fatalf("start --detach: exit %d\n%s%s", code, out, errOut)
	}
	m := identityRE(agent).FindStringSubmatch(out + errOut)
	if m == nil {
		t.Fatalf("no identity of %s in %q %q", agent, out, errOut)
	}
	id = m[1]
	t.Cleanup(func() { _, _, _ = e.runCLI(t, home, "", nil, "rm", "--force", id) })
	return id, out + errOut
}

// ptyRun is one bot-bottle command on a real pty of its own.
type ptyRun struct {
	ptmx   *os.File
	mu     sync.Mutex
	screen bytes.Buffer
	done   chan error
}

func (e *env) startOnPTY(t *testing.T, home string, args ...string) *ptyRun {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ptmx.Close() })
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 24, Cols: 80}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(e.cli(t), args...)
	cmd.Env = e.cliEnv(home)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	r := &ptyRun{ptmx: ptmx, done: make(chan error, 1)}
	go func() { r.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := ptmx.Read(buf)
			r.mu.Lock()
			r.screen.Write(buf[:n])
			r.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return r
}

func (r *ptyRun) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.screen.String()
}

// waitFor waits until the screen, after pos, shows want, and returns the
// position after it.
func (r *ptyRun) waitFor(t *testing.T, pos int, want string, d time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		s := r.String()
		if i := strings.Index(s[pos:], want); i >= 0 {
			return pos + i + len(want)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the screen never showed %q; it shows:\n%s", want, r.String()[pos:])
	return 0
}

func (r *ptyRun) typ(t *testing.T, s string) {
	t.Helper()
	if _, err := r.ptmx.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

func (r *ptyRun) exit(t *testing.T) int {
	t.Helper()
	select {
	case err := <-r.done:
		time.Sleep(200 * time.Millisecond)
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(90 * time.Second):
		t.Fatalf("bot-bottle did not exit\n%s", r.String())
	}
	return -1
}

// TestPTYResizeDetachAttach is acceptance 2: through a real pty, an
// interactive shell on the cluster sees a resize in `stty size`, Ctrl-P
// Ctrl-Q detaches and leaves it running, `attach` from a fresh process
// gets it back, and its exit code comes through.
func TestPTYResizeDetachAttach(t *testing.T) {
	e := newEnv(t)
	home := e.home(t)
	a := e.startOnPTY(t, home, "start", "kube", "--backend", "kubernetes", "--", "sh", "-i")
	pos := a.waitFor(t, 0, "$ ", 120*time.Second)
	kubeID := identityRE("kube")
	m := kubeID.FindStringSubmatch(a.String())
	a.typ(t, "stty size\r")
	pos = a.waitFor(t, pos, "24 80", 20*time.Second)
	if err := pty.Setsize(a.ptmx, &pty.Winsize{Rows: 33, Cols: 111}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	a.typ(t, "stty size\r")
	pos = a.waitFor(t, pos, "33 111", 20*time.Second)
	a.typ(t, "echo before-$((6*7))\r")
	pos = a.waitFor(t, pos, "before-42", 20*time.Second)
	a.typ(t, "\x10\x11")
	if code := a.exit(t); code != 0 {
		t.Fatalf("detach: exit %d\n%s", code, a.String())
	}
	if m == nil {
		m = kubeID.FindStringSubmatch(a.String())
	}
	if m == nil {
		t.Fatalf("no identity on the screen:\n%s", a.String())
	}
	id := m[1]
	t.Cleanup(func() { _, _, _ = e.runCLI(t, home, "", nil, "rm", id) })
	a.waitFor(t, pos, "keeps running", 5*time.Second)
	p, err := e.cs.CoreV1().Pods("default").Get(context.Background(), "bb-"+id, metav1.GetOptions{})
	if err != nil || len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].State.Running == nil {
		t.Fatalf("after Ctrl-P Ctrl-Q the agent's pod is not running: %v %+v", err, p.Status)
	}

	b := e.startOnPTY(t, home, "attach", id)
	time.Sleep(time.Second)
	b.typ(t, "echo after-$((6*7))\r")
	b.waitFor(t, 0, "after-42", 30*time.Second)
	b.typ(t, "exit 5\r")
	if code := b.exit(t); code != 5 {
		t.Fatalf("attach from a fresh process: exit %d, want 5\n%s", code, b.String())
	}
	deadline := time.Now().Add(60 * time.Second)
	for len(e.objectsOf(t, "kube")) > 0 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if left := e.objectsOf(t, "kube"); len(left) > 0 {
		t.Fatalf("after the agent exited the namespace still has %v", left)
	}
}

// TestPreserveResumeSecretNoEgress is acceptance 3: a file written in the
// project's volume before stop --preserve is there after resume; the
// passed-through secret reaches the agent and is in no object the API
// server returns for the pod, nor in the home's state, logs or audit; and
// a bottle with an empty allowlist cannot connect to a service in the
// cluster that a pod without the lockdown reaches.
func TestPreserveResumeSecretNoEgress(t *testing.T) {
	e := newEnv(t)
	home := e.home(t)
	secret := "s3cr3t-" + e.runID + "-value"
	dir := projectDir(t, map[string]string{"README": "project\n"})
	senv := []string{"BB_TEST_SECRET=" + secret}
	id, _ := e.startDetached(t, home, senv, "kube", "--cwd", dir, "--", "sh", "-c", "echo kept-$$ > written; sleep 300")

	// The secret: in the agent's environment, not in the pod's object.
	ctx := context.Background()
	pod, err := e.cs.CoreV1().Pods("default").Get(ctx, "bb-"+id, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	yaml, err := exec.Command(kubectl(), "--kubeconfig", e.kubeconfig, "get", "pod", pod.Name, "-o", "yaml").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl get pod: %v\n%s", err, yaml)
	}
	if bytes.Contains(yaml, []byte(secret)) {
		t.Fatalf("the pod's object holds the passed-through secret:\n%s", yaml)
	}
	if !bytes.Contains(yaml, []byte("secretKeyRef")) {
		t.Fatalf("the pod does not take BB_TEST_SECRET from a Secret:\n%s", yaml)
	}
	res := mustRun(t, nil, kubectl(), "--kubeconfig", e.kubeconfig, "exec", pod.Name, "-c", "agent", "--", "sh", "-c", `echo "got:$BB_TEST_SECRET"`)
	if !strings.Contains(res, "got:"+secret) {
		t.Fatalf("the agent's environment has no secret: %q", res)
	}

	// No egress: a server pod in the cluster, reached from a pod without
	// the lockdown, not from the bottle.
	server := e.serverPod(t)
	if _, err := e.probe(t, "bb-probe-open-"+e.runID, server); err != nil {
		t.Fatalf("control: a pod without the lockdown cannot reach the server at %s: %v", server, err)
	}
	r, _ := exec.Command(kubectl(), "--kubeconfig", e.kubeconfig, "exec", pod.Name, "-c", "agent", "--", "sh", "-c", "sleep 1 | nc -w 3 "+strings.Replace(server, ":", " ", 1)+" && echo CONNECTED; cat /proc/net/dev").CombinedOutput()
	if strings.Contains(string(r), "CONNECTED") || strings.Contains(string(r), "hello") || strings.Contains(string(r), "eth0") {
		t.Fatalf("the bottle with an empty allowlist reached the server or has a network:\n%s", r)
	}

	// Preserve, resume: the file written before is there after.
	if out, errOut, code := e.runCLI(t, home, "", nil, "stop", "--preserve", id); code != 0 {
		t.Fatalf("stop --preserve: exit %d\n%s%s", code, out, errOut)
	}
	if _, err := e.cs.CoreV1().Pods("default").Get(ctx, "bb-"+id, metav1.GetOptions{}); err == nil {
		t.Fatalf("after stop --preserve the pod is still there")
	}
	out, errOut, code := e.runCLI(t, home, "", nil, "resume", id, "--", "sh", "-c", "cat written README")
	if code != 0 || !strings.Contains(out, "kept-") || !strings.Contains(out, "project") {
		t.Fatalf("resume: exit %d, stdout %q, stderr %q; want the file written before the stop", code, out, errOut)
	}

	// Nothing of the bot-bottle home holds the secret.
	_ = filepath.Walk(home, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return nil
		}
		if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(secret)) {
			t.Errorf("%s holds the passed-through secret", p)
		}
		return nil
	})
	if out, errOut, code := e.runCLI(t, home, "", nil, "rm", id); code != 0 {
		t.Fatalf("rm: exit %d\n%s%s", code, out, errOut)
	}
	if left := e.objectsOf(t, "kube"); len(left) > 0 {
		t.Fatalf("after rm the namespace still has %v", left)
	}
}

func kubectl() string {
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		cache = filepath.Join(os.Getenv("HOME"), ".cache")
	}
	matches, _ := filepath.Glob(filepath.Join(cache, "bot-bottle", "k8s", "v*", "kubectl"))
	if len(matches) == 0 {
		return "kubectl"
	}
	return matches[len(matches)-1]
}

// serverPod runs a TCP server pod (busybox nc) and returns its ip:port.
func (e *env) serverPod(t *testing.T) string {
	t.Helper()
	name := "bb-server-" + e.runID
	e.runPod(t, name, []string{"sh", "-c", "while :; do echo hello | nc -l -p 8080; done"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for ctx.Err() == nil {
		p, err := e.cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		if err == nil && p.Status.PodIP != "" && p.Status.Phase == "Running" {
			return p.Status.PodIP + ":8080"
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("the server pod did not come up")
	return ""
}

// probe runs a pod without the lockdown that connects to addr.
func (e *env) probe(t *testing.T, name, addr string) (string, error) {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	e.runPod(t, name, []string{"sh", "-c", "sleep 1 | nc -w 5 " + host + " " + port})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for ctx.Err() == nil {
		p, err := e.cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		if err == nil && (p.Status.Phase == "Succeeded" || p.Status.Phase == "Failed") {
			logs, err := e.cs.CoreV1().Pods("default").GetLogs(name, &corev1.PodLogOptions{}).DoRaw(ctx)
			if err != nil {
				return "", fmt.Errorf("probe logs: %v", err)
			}
			if p.Status.Phase == "Failed" || !strings.Contains(string(logs), "hello") {
				return string(logs), fmt.Errorf("probe %s: %s", p.Status.Phase, logs)
			}
			return string(logs), nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return "", fmt.Errorf("probe pod did not finish")
}

func (e *env) runPod(t *testing.T, name string, cmd []string) {
	t.Helper()
	// The test's own pod, by kubectl: the image is loaded as the plugin
	// loads it.
	ref := e.repo + "/probe:1"
	mustRun(t, nil, "docker", "tag", e.image, ref)
	mustRun(t, nil, "sh", "-c", `docker save "$1" | ctr -a `+containerdSok+` -n k8s.io images import - >/dev/null`, "load", ref)
	args := []string{"--kubeconfig", e.kubeconfig, "run", name, "--image", ref, "--image-pull-policy", "Never", "--restart", "Never",
		"--overrides", `{"spec":{"nodeName":"` + testNode + `","automountServiceAccountToken":false}}`, "--command", "--"}
	mustRun(t, nil, append([]string{kubectl()}, append(args, cmd...)...)...)
	t.Cleanup(func() {
		_ = exec.Command(kubectl(), "--kubeconfig", e.kubeconfig, "delete", "pod", name, "--grace-period", "0", "--force").Run()
	})
}

// TestConcurrentBottles is acceptance 5: 20 bottles at once on the
// cluster all exit 0, with distinct identities, and leave nothing.
func TestConcurrentBottles(t *testing.T) {
	e := newEnv(t)
	home := e.home(t)
	const n = 20
	type result struct {
		out, errOut string
		code        int
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o, eo, c := e.runCLI(t, home, "", nil, "start", "kube", "--backend", "kubernetes", "--", "sh", "-c", "echo \"id:$BOT_BOTTLE_IDENTITY\"")
			results[i] = result{o, eo, c}
		}()
	}
	wg.Wait()
	t.Logf("%d concurrent starts took %v", n, time.Since(start))
	seen := map[string]bool{}
	for i, r := range results {
		if r.code != 0 {
			t.Errorf("bottle %d: exit %d, stdout %q, stderr %q", i, r.code, r.out, r.errOut)
			continue
		}
		m := regexp.MustCompile(`id:(kube-[0-9a-z]{5})`).FindStringSubmatch(r.out)
		if m == nil || seen[m[1]] {
			t.Errorf("bottle %d: no distinct identity in %q", i, r.out)
			continue
		}
		seen[m[1]] = true
	}
	if left := e.objectsOf(t, "kube"); len(left) > 0 {
		t.Fatalf("after %d bottles the namespace still has %v", n, left)
	}

}
