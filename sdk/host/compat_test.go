package host_test

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/host"
	"github.com/bot-bottle/bot-bottle/sdk/internal/wire"
)

// envServeV1 makes this test binary a plugin that speaks protocol 1 only,
// as one built against the previous SDK does.
const envServeV1 = "HOST_TEST_SERVE_V1"

func TestMain(m *testing.M) {
	if os.Getenv(envServeV1) != "" {
		plugin.Serve(&plugin.ServeConfig{
			HandshakeConfig:  host.Handshake(),
			VersionedPlugins: map[int]plugin.PluginSet{1: host.ServerPluginSets(v1Backend{})[1]},
			GRPCServer:       wire.ServerFactory,
			Logger:           hclog.New(&hclog.LoggerOptions{Output: os.Stderr, Level: hclog.Warn}),
		})
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type v1Backend struct{ sdk.UnimplementedBackend }

func (v1Backend) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{Name: "old", Version: "0.9.0", APIVersions: []string{"1.0.0"}}, nil
}
func (v1Backend) Prepare(_ context.Context, s sdk.Spec) (sdk.Plan, error) {
	return sdk.Plan{Preflight: []sdk.PreflightLine{{Key: "identity", Value: s.Identity}}}, nil
}
func (v1Backend) Launch(context.Context, sdk.Spec, sdk.Plan, func(sdk.Progress)) (sdk.Handle, error) {
	return sdk.Handle{}, nil
}
func (v1Backend) Attach(context.Context, sdk.AttachRequest, sdk.AttachStreams) (sdk.ExitStatus, error) {
	return sdk.ExitStatus{}, nil
}
func (v1Backend) Stop(context.Context, sdk.StopRequest) ([]string, error) { return nil, nil }
func (v1Backend) List(context.Context) ([]sdk.Bottle, error)              { return nil, nil }

// A plugin that speaks only protocol 1 still starts and answers: the core
// negotiates down to it.
func TestCoreDrivesProtocol1Plugin(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envServeV1+"=1")
	c, ctx := dispenseProtocol1(t, host.ClientConfig(cmd, warnLogger()))
	plan, err := c.Prepare(ctx, sdk.Spec{Identity: "old-7k2qz"})
	if err != nil || len(plan.Preflight) != 1 || plan.Preflight[0].Value != "old-7k2qz" {
		t.Fatalf("prepare over protocol 1: %+v, %v", plan, err)
	}
}

// A core that speaks only protocol 1 (the previous SDK's) still drives a
// plugin built against this one.
func TestProtocol1CoreDrivesPlugin(t *testing.T) {
	bin := buildEcho(t)
	cfg := host.ClientConfig(exec.Command(bin), warnLogger())
	cfg.VersionedPlugins = map[int]plugin.PluginSet{1: host.PluginSets()[1]}
	c, ctx := dispenseProtocol1(t, cfg)
	if info, err := c.Info(ctx); err != nil || info.Name != "echo" {
		t.Fatalf("info over protocol 1: %+v, %v", info, err)
	}
}

// dispenseProtocol1 starts the plugin cfg names and fails unless the two
// ends settled on protocol 1.
func dispenseProtocol1(t *testing.T, cfg *plugin.ClientConfig) (*host.Client, context.Context) {
	t.Helper()
	pc := plugin.NewClient(cfg)
	t.Cleanup(pc.Kill)
	c, proto, err := host.Dispense(pc)
	if err != nil {
		t.Fatal(err)
	}
	if proto != 1 {
		t.Fatalf("negotiated protocol %d, want 1", proto)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c, ctx
}

func warnLogger() hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Output: os.Stderr, Level: hclog.Warn})
}
