package main_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/conformance"
)

// TestConformance holds the core's test backend to the same contract as a
// real one, so that what the CLI tests prove with it carries over.
func TestConformance(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bot-bottle-plugin-test")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "BB_TESTPLUGIN_ROOT="+filepath.Join(dir, "root"))
	pc := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  sdk.Handshake,
		VersionedPlugins: sdk.ClientPluginSets(),
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		GRPCDialOptions:  sdk.GRPCDialOptions(),
		Logger:           hclog.New(&hclog.LoggerOptions{Output: os.Stderr, Level: hclog.Warn}),
	})
	t.Cleanup(pc.Kill)
	c, _, err := sdk.Dispense(pc)
	if err != nil {
		t.Fatal(err)
	}
	conformance.Run(t, conformance.Harness{Backend: c, Agent: sdk.Agent{Name: "conf", Image: "host"}})
}
