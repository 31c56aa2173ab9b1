package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"github.com/bot-bottle/bot-bottle/internal/testenv"
	"github.com/bot-bottle/bot-bottle/sdk"
)

func TestInfo(t *testing.T) {
	r := newRig(t, false)
	info, err := r.client.Info(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "smolmachines" || info.Details["smolvm"] != "1.9.2" {
		t.Errorf("info = %+v", info)
	}
	want := []sdk.Capability{sdk.CapCommit, sdk.CapExec, sdk.CapCopy, sdk.CapEgressAudit}
	if len(info.Capabilities) != len(want) || info.Has(sdk.CapLiveEgress) {
		t.Errorf("capabilities = %v, want %v", info.Capabilities, want)
	}
	for _, c := range want {
		if !info.Has(c) {
			t.Errorf("capability %s missing", c)
		}
	}
}

func TestMissingSmolvm(t *testing.T) {
	// No fake on PATH, and a PATH where no smolvm can be.
	noSmolvm := "PATH=" + t.TempDir()
	r := newRig(t, true, noSmolvm)
	ctx := ctxT(t)
	info, err := r.client.Info(ctx)
	if err != nil || info.Details["smolvm"] != "not found" {
		t.Errorf("Info without smolvm = %+v, %v; want no error and smolvm: not found", info, err)
	}
	spec := sdk.Spec{Identity: "miss-abcde", Agent: registryAgent("miss"), Command: []string{"true"}}
	for _, tc := range []struct {
		config string
		want   []string
	}{
		{"", []string{"smolvm not found on $PATH", "install smolvm", `config { smolvm = "/path/to/smolvm" }`, "plugins.hcl"}},
		{`{"smolvm": "/nonexistent/smolvm"}`, []string{`"/nonexistent/smolvm"`, "install smolvm", "plugins.hcl"}},
	} {
		// Config reaches a plugin in its environment, at process start.
		_, err := newRig(t, true, noSmolvm, sdk.EnvPluginConfig+"="+tc.config).client.Prepare(ctx, spec)
		if err == nil {
			t.Fatalf("prepare with config %q succeeded without smolvm", tc.config)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q lacks %q", err, w)
			}
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("error is not one line: %q", err)
		}
	}
	bogus := newRig(t, true, noSmolvm, sdk.EnvPluginConfig+`={"smolvm": "/nonexistent/smolvm", "bogus": 1}`)
	if _, err := bogus.client.Prepare(ctx, spec); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("unknown config key accepted: %v", err)
	}
}

func TestConfiguredSmolvmPath(t *testing.T) {
	// The fake is not on PATH; only the config names it.
	r := newRig(t, false, "PATH="+os.Getenv("PATH"),
		sdk.EnvPluginConfig+`={"smolvm": "`+filepath.Join(fakeBin, "smolvm")+`", "cpus": 2, "memory_mib": 1024}`)
	spec := sdk.Spec{Identity: "cfg-" + randHex(5), Agent: registryAgent("cfg"), Command: []string{"true"}}
	h, err := r.client.Launch(ctxT(t), spec, sdk.Plan{}, nil)
	if err != nil {
		t.Fatalf("launch: %v", err)
	}
	c := r.callsWith("machine", "create")[0].Argv
	if !equal(argValue(c, "--cpus"), []string{"2"}) || !equal(argValue(c, "--mem"), []string{"1024"}) {
		t.Errorf("create = %q", c)
	}
	if _, err := r.client.Stop(ctxT(t), sdk.StopRequest{Handle: &h}); err != nil {
		t.Fatal(err)
	}
	if r.hasMachine("bb-" + spec.Identity) {
		t.Error("machine left after Stop")
	}
}

func TestRegistryImageWithoutEgressIsRefused(t *testing.T) {
	r := newRig(t, false)
	agent := registryAgent("noegress")
	agent.Egress = nil
	_, err := r.client.Prepare(ctxT(t), sdk.Spec{Identity: "noegress-abcde", Agent: agent, Command: []string{"true"}})
	if err == nil || !strings.Contains(err.Error(), "egress allowlist is empty") {
		t.Errorf("prepare = %v", err)
	}
}

// A bottle without an allowlist is told in its environment that egress is
// off (the helper and the agents' login say so); the plan carries it.
func TestNoEgressIsOffInTheEnvironment(t *testing.T) {
	r := newRig(t, false)
	dir := t.TempDir()
	df := filepath.Join(dir, "Dockerfile")
	if err := os.WriteFile(df, []byte("FROM scratch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := sdk.Spec{Identity: "off-abcde", Agent: sdk.Agent{Name: "off", Dockerfile: df, ContextDir: dir, Command: []string{"true"}}}
	plan, err := r.client.Prepare(ctxT(t), spec)
	if err != nil {
		t.Fatal(err)
	}
	var data struct {
		Env []string `json:"env"`
	}
	if err := json.Unmarshal(plan.Data, &data); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(data.Env, sdk.EnvEgress+"="+sdk.EgressOff) {
		t.Errorf("env of a bottle without egress = %q, want %s=%s", data.Env, sdk.EnvEgress, sdk.EgressOff)
	}
}

func TestNoDockerEngine(t *testing.T) {
	r := newRig(t, false, "DOCKER_HOST=unix://"+filepath.Join(t.TempDir(), "no.sock"))
	dir := t.TempDir()
	df := filepath.Join(dir, "Dockerfile")
	if err := os.WriteFile(df, []byte("FROM scratch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := sdk.Spec{Identity: r.identity("noengine"), Agent: sdk.Agent{Name: "noengine", Dockerfile: df, ContextDir: dir, Command: []string{"true"}}}
	_, err := r.client.Launch(ctxT(t), spec, sdk.Plan{}, nil)
	if err == nil || !strings.Contains(err.Error(), "Docker Engine") || strings.Contains(err.Error(), "\n") {
		t.Errorf("launch without an engine = %v; want a one-line error naming the Docker Engine", err)
	}
	if len(r.callsWith("machine", "create")) != 0 {
		t.Error("a machine was created although the image could not be built")
	}
}

// dockerOrSkip returns a client for the local engine; CI must have one.
func dockerOrSkip(t *testing.T) *client.Client {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = cli.Ping(ctx)
		cancel()
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the Docker Engine is required under CI=true: %v", err)
		}
		t.Skipf("no Docker Engine: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// TestDockerfileAgent builds a FROM-scratch busybox image with the real
// engine and checks the plugin hands smolvm the docker save archive.
func TestDockerfileAgent(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("needs /bin/busybox (Debian busybox-static)")
	}
	dc := dockerOrSkip(t)
	agentName := "bbtest-df-" + randHex(6)
	t.Cleanup(func() {
		if err := testenv.RemoveLabelled(context.Background(), dc, sdk.LabelAgent, agentName); err != nil {
			t.Errorf("remove test images: %v", err)
		}
	})
	ctxDir := t.TempDir()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ctxDir, "busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	df := filepath.Join(ctxDir, "Dockerfile")
	if err := os.WriteFile(df, []byte("FROM scratch\nCOPY busybox /bin/busybox\nCMD [\"/bin/busybox\", \"sh\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := newRig(t, false)
	ctx := ctxT(t)
	id := r.identity("df")
	spec := sdk.Spec{Identity: id, Agent: sdk.Agent{Name: agentName, Dockerfile: df, ContextDir: ctxDir, Command: []string{"true"}},
		Env: secretEnv(), Command: []string{"sh", "-c", "echo built; exit 3"}}
	plan, err := r.client.Prepare(ctx, spec)
	if err != nil {
		t.Fatalf("prepare: %v", err)
	}
	if !strings.Contains(strings.Join(flatPreflight(plan), "\n"), "Dockerfile "+df) {
		t.Errorf("preflight = %q", flatPreflight(plan))
	}
	var stages []string
	h, err := r.client.Launch(ctx, spec, plan, func(p sdk.Progress) { stages = append(stages, p.Stage) })
	if err != nil {
		t.Fatalf("launch: %v\nlogs:\n%s", err, r.logs)
	}
	if !contains(stages, "build") || !contains(stages, "save") {
		t.Errorf("progress stages = %q", stages)
	}
	c := r.callsWith("machine", "create")[0].Argv
	imgs := argValue(c, "--image")
	if len(imgs) != 1 || !filepath.IsAbs(imgs[0]) || !strings.HasSuffix(imgs[0], ".tar") {
		t.Fatalf("create --image = %q, want an absolute .tar", imgs)
	}
	if names := tarNames(t, imgs[0]); !contains(names, "manifest.json") {
		t.Errorf("archive %s is not a docker save archive: %q", imgs[0], names)
	}
	if len(argValue(c, "--allow-host")) != 0 || hasArg(c, "--net") {
		t.Errorf("empty allowlist but network flags: %q", c)
	}
	_, _, st := attachPipes(t, r, h)
	if st.Code != 3 {
		t.Errorf("exit = %+v, want 3", st)
	}
	assertUnpackable(t, r, h, "bb-"+id)
	assertNoSecretInFiles(t, secretEnv(), filepath.Dir(imgs[0]), r.state)
	r.checkCallRules(secretEnv())

	// A second start of the unchanged agent reuses the archive.
	id2 := r.identity("df")
	spec.Identity = id2
	h2, err := r.client.Launch(ctx, spec, plan, nil)
	if err != nil {
		t.Fatalf("second launch: %v", err)
	}
	if got := argValue(r.callsWith("machine", "create")[1].Argv, "--image"); !equal(got, imgs) {
		t.Errorf("second launch used %q, want the same archive %q", got, imgs)
	}
	if _, err := r.client.Stop(ctx, sdk.StopRequest{Handle: &h2}); err != nil {
		t.Fatal(err)
	}
}

func tarNames(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
		names = append(names, h.Name)
	}
}
