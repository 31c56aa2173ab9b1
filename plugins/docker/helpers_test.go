package main_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/bot-bottle/bot-bottle/internal/syncbuf"
	"github.com/bot-bottle/bot-bottle/internal/testenv"
	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/host"
)

// pluginBin is the plugin binary TestMain builds, the same way `make build`
// does: a separate process, driven over go-plugin like the core drives it.
var pluginBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bot-bottle-plugin-docker-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pluginBin = filepath.Join(dir, "bot-bottle-plugin-docker")
	// Static, as `make build` makes it: the plugin is also its bottles'
	// egress proxy, in an image that holds nothing else.
	build := exec.Command("go", "build", "-o", pluginBin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build plugin: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer collects output a test waits on.
type syncBuffer struct{ syncbuf.Buffer }

// waitFor waits until the buffer holds s, and fails the test after d.
func (b *syncBuffer) waitFor(t testing.TB, s string, d time.Duration) {
	t.Helper()
	b.WaitFor(t, 0, s, d)
}

// pluginProc is one running plugin process.
type pluginProc struct {
	client *plugin.Client
	be     *host.Client
	logs   *syncBuffer
}

// startPlugin starts the plugin binary exactly as the core does and returns
// its Backend. env is added to the plugin's environment.
func startPlugin(t testing.TB, env ...string) *pluginProc {
	t.Helper()
	return startPluginAt(t, pluginBin, env...)
}

// startPluginAt is startPlugin with the plugin binary at path.
func startPluginAt(t testing.TB, path string, env ...string) *pluginProc {
	t.Helper()
	logs := &syncBuffer{}
	cmd := exec.Command(path)
	cmd.Env = append(os.Environ(), env...)
	c := plugin.NewClient(host.ClientConfig(cmd, hclog.New(&hclog.LoggerOptions{
		Name: "plugin-host", Output: logs, Level: hclog.Debug,
	})))
	t.Cleanup(func() {
		c.Kill()
		if t.Failed() {
			t.Logf("plugin logs:\n%s", logs.String())
		}
	})
	be, v, err := host.Dispense(c)
	if err != nil {
		t.Fatalf("start plugin: %v", err)
	}
	if v != sdk.ProtocolVersion {
		t.Fatalf("negotiated protocol %d, want %d", v, sdk.ProtocolVersion)
	}
	return &pluginProc{client: c, be: be, logs: logs}
}

// env is one test's engine, label and plugin.
type env struct {
	t     testing.TB
	cli   *client.Client
	label string
	p     *pluginProc
}

func newEnv(t *testing.T) *env {
	t.Helper()
	cli := testenv.RequireDocker(t)
	t.Parallel()
	e := &env{t: t, cli: cli, label: testenv.RunID(t, cli)}
	e.p = e.startPlugin(nil)
	return e
}

func newBenchEnv(b *testing.B) *env {
	b.Helper()
	cli := testenv.RequireDocker(b)
	e := &env{t: b, cli: cli, label: testenv.RunID(b, cli)}
	e.p = e.startPlugin(nil)
	return e
}

func imageListByLabel(k, v string) image.ListOptions {
	return image.ListOptions{Filters: filters.NewArgs(filters.Arg("label", k+"="+v))}
}

// startPlugin starts a plugin process whose config block is e.config(extra),
// passed in its environment as the core passes it.
func (e *env) startPlugin(extra map[string]any) *pluginProc {
	e.t.Helper()
	return startPlugin(e.t, e.configEnv(extra))
}

// configure replaces the test's plugin process with one configured with
// extra: config is per process, not per call.
func (e *env) configure(extra map[string]any) { e.p = e.startPlugin(extra) }

// configEnv is e.config(extra) as the plugin's environment variable.
func (e *env) configEnv(extra map[string]any) string {
	return sdk.EnvPluginConfig + "=" + string(e.config(extra))
}

// config is the plugin config block of plugins.hcl, with the test label on
// everything the plugin creates.
func (e *env) config(extra map[string]any) json.RawMessage {
	m := map[string]any{"labels": map[string]string{testenv.Label: e.label}}
	for k, v := range extra {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// agent returns a busybox agent with its own Dockerfile and a context only
// this test uses, so that its image is built by and belongs to this test.
func (e *env) agent(name string) sdk.Agent {
	bb := testenv.Busybox{User: "agent", Files: map[string]string{"nonce": e.label + "-" + name}}
	dir := bb.Context(e.t)
	return sdk.Agent{
		Name:       name,
		Dockerfile: filepath.Join(dir, "Dockerfile"),
		ContextDir: dir,
		Workdir:    "/workspace",
	}
}

// identity mints an identity like the core does, and registers a Stop of it
// (through a fresh plugin process) as cleanup.
func (e *env) identity(agent string) string {
	const digits = "0123456789abcdefghijklmnopqrstuvwxyz"
	var b [5]byte
	for i := range b {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(digits))))
		if err != nil {
			e.t.Fatal(err)
		}
		b[i] = digits[n.Int64()]
	}
	id := agent + "-" + string(b[:])
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = testenv.RemoveLabelled(ctx, e.cli, sdk.LabelIdentity, id)
	})
	return id
}

func (e *env) spec(agent sdk.Agent, identity string, cmd ...string) sdk.Spec {
	return sdk.Spec{
		Identity: identity,
		Agent:    agent,
		Command:  cmd,
	}
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// progressLog records launch progress.
type progressLog struct {
	mu     sync.Mutex
	events []sdk.Progress
}

func (p *progressLog) add(ev sdk.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.events = append(p.events, ev)
}

func (p *progressLog) stage(stage string) []sdk.Progress {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []sdk.Progress
	for _, ev := range p.events {
		if ev.Stage == stage {
			out = append(out, ev)
		}
	}
	return out
}

func (p *progressLog) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	for _, ev := range p.events {
		fmt.Fprintf(&b, "[%s] %s\n", ev.Stage, ev.Message)
	}
	return b.String()
}

// launch runs Prepare and Launch like the core and returns the plan, the
// handle and the progress seen.
func (e *env) launch(ctx context.Context, spec sdk.Spec) (sdk.Plan, sdk.Handle, *progressLog) {
	e.t.Helper()
	plan, err := e.p.be.Prepare(ctx, spec)
	if err != nil {
		e.t.Fatalf("prepare: %v", err)
	}
	pl := &progressLog{}
	h, err := e.p.be.Launch(ctx, spec, plan, pl.add)
	if err != nil {
		e.t.Fatalf("launch: %v\nprogress:\n%s", err, pl)
	}
	if h.Backend != "docker" || h.Identity != spec.Identity || h.Version != 1 {
		e.t.Fatalf("handle = %+v", h)
	}
	return plan, h, pl
}

// session is the outcome of one attach.
type session struct {
	stdout, stderr string
	status         sdk.ExitStatus
}

// run attaches without a terminal, feeding stdin (nil: none).
func (e *env) run(ctx context.Context, h sdk.Handle, stdin io.Reader) session {
	e.t.Helper()
	var out, errb syncBuffer
	st, err := e.p.be.Attach(ctx, sdk.AttachRequest{Handle: h, Stdin: stdin != nil},
		sdk.AttachStreams{Stdin: stdin, Stdout: &out, Stderr: &errb})
	if err != nil {
		e.t.Fatalf("attach: %v", err)
	}
	return session{stdout: out.String(), stderr: errb.String(), status: st}
}

func (e *env) stop(ctx context.Context, req sdk.StopRequest) []string {
	e.t.Helper()
	removed, err := e.p.be.Stop(ctx, req)
	if err != nil {
		e.t.Fatalf("stop: %v", err)
	}
	return removed
}

// leftovers lists what still carries the identity's label, snapshots
// excepted (Stop keeps those on purpose).
func (e *env) leftovers(ctx context.Context, identity string) []string {
	e.t.Helper()
	all, err := testenv.Labelled(ctx, e.cli, sdk.LabelIdentity, identity)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, r := range all {
		if strings.Contains(r, "bot-bottle/"+identity+":") {
			continue
		}
		out = append(out, r)
	}
	return out
}

func (e *env) assertGone(ctx context.Context, identity string) {
	e.t.Helper()
	if left := e.leftovers(ctx, identity); len(left) > 0 {
		e.t.Errorf("left behind for %s: %v", identity, left)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func networkInspectOptions() network.InspectOptions { return network.InspectOptions{} }
