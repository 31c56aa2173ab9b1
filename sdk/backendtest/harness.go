package backendtest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/host"
)

// InProcess serves b over real gRPC inside the test process, with
// go-plugin's in-process test serving (ServeConfig.Test), and returns a
// go-plugin client attached to it: every call goes through the same
// protobuf conversion, streams and status codes as with a plugin binary,
// without building one. The server stops at the end of the test.
func InProcess(t testing.TB, b sdk.Backend) *Process {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	reattach := make(chan *plugin.ReattachConfig, 1)
	closed := make(chan struct{})
	go plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig:  host.Handshake(),
		VersionedPlugins: host.ServerPluginSets(b),
		GRPCServer:       plugin.DefaultGRPCServer,
		// Stopping the server at cleanup makes go-plugin log a failed
		// accept at error level; nothing it says here is the backend's.
		Logger: hclog.NewNullLogger(),
		Test:   &plugin.ServeTestConfig{Context: ctx, ReattachConfigCh: reattach, CloseCh: closed},
	})
	stop := func() {
		cancel()
		<-closed
	}
	var once sync.Once
	t.Cleanup(func() { once.Do(stop) })
	var rc *plugin.ReattachConfig
	select {
	case rc = <-reattach:
	case <-time.After(30 * time.Second):
		t.Fatal("backendtest: the in-process plugin server did not start")
	}
	pc := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig: host.Handshake(),
		// A reattached client takes the plugin set of the version the
		// server chose; it negotiates nothing itself.
		Plugins:          host.PluginSets()[rc.ProtocolVersion],
		Reattach:         rc,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		GRPCDialOptions:  host.GRPCDialOptions(),
		Logger:           testLogger("in-process"),
	})
	t.Cleanup(pc.Kill)
	c, _, err := host.Dispense(pc)
	if err != nil {
		t.Fatalf("backendtest: dispense in-process backend: %v", err)
	}
	return &Process{Backend: c, kill: func() { pc.Kill(); once.Do(stop) }}
}

// Backend is a backend with every optional interface, as the core sees a
// plugin: a call the plugin does not offer fails with sdk.ErrNotSupported.
type Backend interface {
	sdk.Backend
	sdk.Committer
	sdk.Execer
	sdk.Copier
	sdk.EgressUpdater
	sdk.CredentialRevoker
	sdk.QueueSyncer
}

// Process is a plugin started by Start or served by InProcess: its Backend
// client, and a way to make it go away the way a core's exit does.
type Process struct {
	Backend
	kill func()
}

// Kill ends the plugin process and waits for it. For InProcess it stops
// the gRPC server; the Backend value and anything it started live on in
// the test process, so checks that a bottle outlives its plugin process
// prove less in-process than with a built binary.
func (p *Process) Kill() { p.kill() }

// testLogger keeps go-plugin's own chatter out of test output unless it
// matters.
func testLogger(name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Output: os.Stderr, Level: hclog.Warn})
}

// Build compiles the plugin's main package in pkgDir (a directory, relative
// to the test's working directory or absolute) with the go command on $PATH,
// and returns the binary, named bot-bottle-plugin-<name> in a temporary
// directory.
func Build(t testing.TB, pkgDir, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "bot-bottle-plugin-"+name)
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = pkgDir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("backendtest: build %s: %v\n%s", pkgDir, err, out)
	}
	return bin
}

// Start runs the plugin binary at path exactly as the bot-bottle core does
// (handshake cookie, negotiated protocol versions, gRPC only, mutual TLS,
// raised message limits), with env added to the test's environment, and
// returns it. The process is killed at the end of the test, if not before. Its log
// lines at warn and above go to the test's stderr. The plugin's config
// travels in the environment, as from the core: pass
// sdk.EnvPluginConfig+"="+json in env.
func Start(t testing.TB, path string, env ...string) *Process {
	t.Helper()
	cmd := exec.Command(path)
	cmd.Env = append(os.Environ(), env...)
	pc := plugin.NewClient(host.ClientConfig(cmd, testLogger(filepath.Base(path))))
	t.Cleanup(pc.Kill)
	c, proto, err := host.Dispense(pc)
	if err != nil {
		t.Fatalf("backendtest: start %s: %v", path, err)
	}
	if proto != sdk.ProtocolVersion {
		t.Fatalf("backendtest: %s negotiated protocol %d, this SDK speaks %d", path, proto, sdk.ProtocolVersion)
	}
	return &Process{Backend: c, kill: pc.Kill}
}
