package main_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// The test cluster of scripts/test-cluster.sh, which `make test` starts
// around these tests (BB_TEST_KUBECONFIG); run by hand, a test starts it
// when it is not up, and takes it down again at the end.
const (
	clusterScript = "../../scripts/test-cluster.sh"
	defaultKube   = "/var/lib/bot-bottle-test-cluster/admin.kubeconfig"
	containerdSok = "/run/bot-bottle-test-cluster/containerd.sock"
	testNode      = "bb-test-node"
)

// env is one test run's cluster, binaries and images.
type env struct {
	kubeconfig string
	cs         *kubernetes.Clientset
	binDir     string // the plugin and its helper, side by side
	pluginBin  string
	repo       string // image repository of this run (removed at its end)
	image      string // the test agent's image (busybox, FROM scratch)
	runID      string
}

var shared *env

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		shared.cleanup()
	}
	if startedCluster {
		_ = exec.Command(clusterScript, "down").Run()
	}
	os.Exit(code)
}

var startedCluster bool

// newEnv returns the run's environment, making it on first use. Without a
// cluster it skips, but fails under CI=true.
func newEnv(t testing.TB) *env {
	t.Helper()
	if shared != nil {
		return shared
	}
	if os.Geteuid() != 0 {
		need(t, "the test cluster needs root")
	}
	kc := os.Getenv("BB_TEST_KUBECONFIG")
	if kc == "" {
		kc = defaultKube
		if !clusterReady(kc) {
			cmd := exec.Command(clusterScript, "up")
			cmd.Stderr = os.Stderr
			if err := cmd.Run(); err != nil {
				need(t, fmt.Sprintf("could not start the test cluster (%s up): %v", clusterScript, err))
			}
			startedCluster = true
		}
	}
	if !clusterReady(kc) {
		need(t, "the test cluster at "+kc+" is not ready")
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	e := &env{kubeconfig: kc, cs: cs, runID: hex.EncodeToString(b[:])}
	e.repo = "bb-k8s-test-" + e.runID + ".local"
	e.binDir, err = os.MkdirTemp("", "bb-k8s-bin-")
	if err != nil {
		t.Fatal(err)
	}
	shared = e
	e.pluginBin = filepath.Join(e.binDir, "bot-bottle-plugin-kubernetes")
	mustRun(t, nil, "go", "build", "-o", e.pluginBin, ".")
	mustRunEnv(t, []string{"CGO_ENABLED=0"}, "go", "build", "-o", filepath.Join(e.binDir, "bot-bottle-kube-init"), "./cmd/bot-bottle-kube-init")
	e.image = e.buildAgentImage(t)
	return e
}

func need(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip(why)
}

func clusterReady(kc string) bool {
	if _, err := os.Stat(kc); err != nil {
		return false
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		return false
	}
	rc.Timeout = 5 * time.Second
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return false
	}
	_, err = cs.CoreV1().Nodes().Get(context.Background(), testNode, metav1.GetOptions{})
	return err == nil
}

// buildAgentImage makes the test agent's image with the local engine:
// busybox-static FROM scratch, run as a user that is not root.
func (e *env) buildAgentImage(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("busybox-static is needed (scripts/deps.sh installs it): %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	mustRunEnv(t, []string{"CGO_ENABLED=0"}, "go", "build", "-o", filepath.Join(dir, "probe"), "./testdata/probe")
	df := `FROM scratch
COPY busybox /bin/busybox
COPY probe /bin/probe
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN ["/bin/busybox", "sh", "-c", "mkdir -p /tmp /home/agent /workspace && chmod 1777 /tmp && chown 4242:4242 /home/agent /workspace && echo agent:x:4242:4242::/home/agent:/bin/sh > /etc/passwd"]
ENV PATH=/bin HOME=/home/agent
USER 4242:4242
WORKDIR /workspace
`
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	ref := "bb-k8s-test-agent-" + e.runID + ":1"
	mustRun(t, nil, "docker", "build", "-q", "--label", "dev.bot-bottle.test="+e.runID, "-t", ref, dir)
	return ref
}

// cleanup removes every image this run made, in the engine and in the
// cluster's containerd.
func (e *env) cleanup() {
	out, _ := exec.Command("docker", "images", "--format", "{{.Repository}}:{{.Tag}}").Output()
	var refs []string
	for _, r := range strings.Fields(string(out)) {
		if strings.HasPrefix(r, e.repo+"/") || strings.HasPrefix(r, "bb-k8s-test-agent-"+e.runID) {
			refs = append(refs, r)
		}
	}
	if len(refs) > 0 {
		_ = exec.Command("docker", append([]string{"rmi", "-f"}, refs...)...).Run()
	}
	out, _ = exec.Command("ctr", "-a", containerdSok, "-n", "k8s.io", "images", "ls", "-q").Output()
	for _, r := range strings.Fields(string(out)) {
		if strings.Contains(r, e.repo+"/") {
			_ = exec.Command("ctr", "-a", containerdSok, "-n", "k8s.io", "images", "rm", r).Run()
		}
	}
	_ = os.RemoveAll(e.binDir)
}

// config is the plugin's config block for the test cluster.
func (e *env) config() map[string]any {
	return map[string]any{
		"kubeconfig":    e.kubeconfig,
		"namespace":     "default",
		"node_name":     testNode,
		"image_repo":    e.repo,
		"image_load":    []string{"sh", "-c", `docker save "$1" | ctr -a ` + containerdSok + ` -n k8s.io images import - >/dev/null`, "load"},
		"image_present": []string{"sh", "-c", `ctr -a ` + containerdSok + ` -n k8s.io images ls -q | grep -qxF "$1"`, "present"},
	}
}

func (e *env) configEnv(extra ...string) []string {
	raw, _ := json.Marshal(e.config())
	return append([]string{sdk.EnvPluginConfig + "=" + string(raw)}, extra...)
}

func (e *env) agent(name string) sdk.Agent {
	return sdk.Agent{Name: name, Image: e.image, Workdir: "/workspace"}
}

// leftovers lists every object labelled with the identity.
func (e *env) leftovers(ctx context.Context, id string) ([]string, error) {
	sel := metav1.ListOptions{LabelSelector: sdk.LabelIdentity + "=" + id}
	var out []string
	pods, err := e.cs.CoreV1().Pods("default").List(ctx, sel)
	if err != nil {
		return nil, err
	}
	for _, p := range pods.Items {
		out = append(out, "pod "+p.Name)
	}
	secs, err := e.cs.CoreV1().Secrets("default").List(ctx, sel)
	if err != nil {
		return nil, err
	}
	for _, s := range secs.Items {
		out = append(out, "secret "+s.Name)
	}
	nps, err := e.cs.NetworkingV1().NetworkPolicies("default").List(ctx, sel)
	if err != nil {
		return nil, err
	}
	for _, np := range nps.Items {
		out = append(out, "network policy "+np.Name)
	}
	pvcs, err := e.cs.CoreV1().PersistentVolumeClaims("default").List(ctx, sel)
	if err != nil {
		return nil, err
	}
	for _, c := range pvcs.Items {
		out = append(out, "volume claim "+c.Name)
	}
	return out, nil
}

func mustRun(t testing.TB, stdin []byte, argv ...string) string {
	t.Helper()
	return mustRunEnv(t, nil, argv...)
}

func mustRunEnv(t testing.TB, extraEnv []string, argv ...string) string {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), extraEnv...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, errOut.String())
	}
	return out.String()
}
