package host_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/host"
)

// buildEcho builds the example plugin into a temporary directory.
func buildEcho(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "bot-bottle-plugin-echo")
	if out, err := exec.Command("go", "build", "-o", bin, "../examples/echo").CombinedOutput(); err != nil {
		t.Fatalf("build example: %v\n%s", err, out)
	}
	return bin
}

// startEcho builds the example plugin and starts it exactly as a core does.
func startEcho(t *testing.T) (*host.Client, *plugin.Client) {
	t.Helper()
	bin := buildEcho(t)
	pc := plugin.NewClient(host.ClientConfig(exec.Command(bin), hclog.New(&hclog.LoggerOptions{Output: os.Stderr, Level: hclog.Warn})))
	t.Cleanup(pc.Kill)
	c, proto, err := host.Dispense(pc)
	if err != nil {
		t.Fatalf("dispense: %v", err)
	}
	if proto != sdk.ProtocolVersion {
		t.Fatalf("negotiated protocol %d, want %d", proto, sdk.ProtocolVersion)
	}
	return c, pc
}

func TestExamplePluginOverGoPlugin(t *testing.T) {
	c, _ := startEcho(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	info, err := c.Info(ctx)
	if err != nil || info.Name != "echo" || info.Version != "1.0.0" || len(info.APIVersions) != 1 {
		t.Fatalf("info = %+v, %v", info, err)
	}
	if info.Has(sdk.CapCommit) {
		t.Fatal("echo must not claim commit")
	}

	spec := sdk.Spec{Identity: "echo-abcde", Command: []string{"exit", "5"}, Env: map[string]string{"K": "secret"}}
	if _, err := c.Prepare(ctx, sdk.Spec{Identity: "echo-x"}); err == nil || !strings.Contains(err.Error(), "prepare echo-x: no command") {
		t.Fatalf("prepare without command: %v", err)
	}
	plan, err := c.Prepare(ctx, spec)
	if err != nil || len(plan.Preflight) != 1 || plan.Preflight[0].Value != "exit 5" {
		t.Fatalf("plan = %+v, %v", plan, err)
	}
	var events []sdk.Progress
	h, err := c.Launch(ctx, spec, plan, func(p sdk.Progress) { events = append(events, p) })
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || events[0].Message != "ready" || h.Identity != "echo-abcde" || h.Version != 1 {
		t.Fatalf("events %+v handle %+v", events, h)
	}

	var out, errOut strings.Builder
	st, err := c.Attach(ctx, sdk.AttachRequest{Handle: h, Stdin: true},
		sdk.AttachStreams{Stdin: strings.NewReader("hello\nworld\n"), Stdout: &out, Stderr: &errOut})
	if err != nil {
		t.Fatal(err)
	}
	if st.Code != 5 || out.String() != "HELLO\nWORLD\n" || errOut.String() != "bye from echo-abcde\n" {
		t.Fatalf("status %+v stdout %q stderr %q", st, out.String(), errOut.String())
	}

	// Optional methods the plugin lacks come back as ErrNotSupported.
	if _, err := c.Commit(ctx, h, t.TempDir()); !errors.Is(err, sdk.ErrNotSupported) {
		t.Fatalf("commit: %v", err)
	}
	if _, err := c.Exec(ctx, sdk.ExecRequest{Handle: h, Command: []string{"true"}}); !sdk.IsNotSupported(err) {
		t.Fatalf("exec: %v", err)
	}
}

func TestPluginRefusesToRunByHand(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "echo")
	if out, err := exec.Command("go", "build", "-o", bin, "../examples/echo").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "plugin") {
		t.Fatalf("running a plugin by hand should refuse: %v %s", err, out)
	}
}

func TestPluginGoneIsReported(t *testing.T) {
	c, pc := startEcho(t)
	ctx := context.Background()
	if _, err := c.Info(ctx); err != nil {
		t.Fatal(err)
	}
	// Kill the plugin behind the client's back: the next call must say so.
	if err := syscall.Kill(pc.ReattachConfig().Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	_, err := c.Info(ctx)
	if !errors.Is(err, host.ErrPluginGone) {
		t.Fatalf("after kill: %v", err)
	}
}
