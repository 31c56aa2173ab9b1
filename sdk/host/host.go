// Package host is the core's side of the bot-bottle plugin protocol: it
// starts a backend plugin with go-plugin, negotiates the protocol version
// and drives the plugin over gRPC through Client, which implements
// sdk.Backend and every optional interface.
//
// Plugin authors do not need this package: they import package sdk, whose
// exported API is the author-facing stability promise and names no
// go-plugin, gRPC or hclog type. This package exposes those types on
// purpose (a core has to configure go-plugin) and is outside that promise:
// it follows the versions of go-plugin and gRPC the core builds with, and a
// major version of either may change it. Test harnesses that drive a plugin
// as the core does (sdk/backendtest) use it too.
package host

import (
	"context"
	"os"
	"os/exec"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/bot-bottle/bot-bottle/sdk"
	pb "github.com/bot-bottle/bot-bottle/sdk/internal/pluginpb"
	"github.com/bot-bottle/bot-bottle/sdk/internal/wire"
)

// Handshake is the handshake shared by the core and every plugin. The cookie
// only keeps a user from running a plugin binary by hand; it is not a
// security measure.
func Handshake() plugin.HandshakeConfig { return wire.Handshake() }

// grpcPlugin is the core side of the go-plugin glue.
type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
}

func (grpcPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return nil
}

func (grpcPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (interface{}, error) {
	return &Client{rpc: pb.NewBackendClient(c)}, nil
}

// PluginSets is what a core passes as go-plugin's VersionedPlugins: every
// protocol version this package drives, which includes plugins built
// against an older SDK.
func PluginSets() map[int]plugin.PluginSet {
	sets := map[int]plugin.PluginSet{}
	for _, v := range wire.ProtocolVersions() {
		sets[v] = plugin.PluginSet{wire.PluginName: grpcPlugin{}}
	}
	return sets
}

// ClientConfig is how a core starts the plugin cmd runs: the handshake
// cookie, every protocol version this package speaks, gRPC only, mutual TLS
// and the raised message limits. cmd.Env is the plugin's whole environment
// (the core's own when nil): go-plugin would otherwise append the host's
// after it, and a host variable would beat a value the core chose. Callers
// add what is theirs (timeouts, a checksum, where stderr goes).
//
// The TLS certificates of both sides are made here, P-256, for this one
// start (a plugin built against an earlier SDK still makes its own, as
// AutoMTLS does; see sdk/internal/wire). Should that fail, it falls back
// to go-plugin's AutoMTLS.
func ClientConfig(cmd *exec.Cmd, logger hclog.Logger) *plugin.ClientConfig {
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cfg := &plugin.ClientConfig{
		HandshakeConfig:  Handshake(),
		VersionedPlugins: PluginSets(),
		Cmd:              cmd,
		SkipHostEnv:      true,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		GRPCDialOptions:  GRPCDialOptions(),
		Logger:           logger,
	}
	tlsConfig, env, err := wire.ClientTLS()
	if err != nil {
		if logger != nil {
			logger.Warn("plugin certificates: falling back to go-plugin's AutoMTLS", "error", err)
		}
		cfg.AutoMTLS = true
		return cfg
	}
	cmd.Env = append(cmd.Env, env...)
	cfg.TLSConfig = tlsConfig
	return cfg
}

// AutoMTLSClientConfig is ClientConfig with go-plugin's AutoMTLS instead:
// the way cores of earlier SDKs started plugins, kept so that benchmarks can
// measure the two side by side and tests can start a plugin as an older
// core would.
func AutoMTLSClientConfig(cmd *exec.Cmd, logger hclog.Logger) *plugin.ClientConfig {
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	return &plugin.ClientConfig{
		HandshakeConfig:  Handshake(),
		VersionedPlugins: PluginSets(),
		Cmd:              cmd,
		SkipHostEnv:      true,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		GRPCDialOptions:  GRPCDialOptions(),
		Logger:           logger,
	}
}

// GRPCDialOptions are the dial options a core uses with a plugin: gRPC's
// message limits raised to MaxMessageSize for copy-in/out archives.
func GRPCDialOptions() []grpc.DialOption { return wire.DialOptions() }

// MaxMessageSize is the largest gRPC message either side accepts.
const MaxMessageSize = wire.MaxMessageSize

// Dispense returns the Backend client of a started go-plugin client and the
// protocol version the plugin chose.
func Dispense(c *plugin.Client) (*Client, int, error) {
	rpc, err := c.Client()
	if err != nil {
		return nil, 0, err
	}
	raw, err := rpc.Dispense(wire.PluginName)
	if err != nil {
		return nil, 0, err
	}
	return raw.(*Client), c.NegotiatedVersion(), nil
}

// ServerPluginSets serves impl under every protocol version, exactly as
// sdk.Serve does, for tests that serve a backend in process with
// go-plugin's ServeConfig.Test (sdk/backendtest.InProcess).
func ServerPluginSets(impl sdk.Backend) map[int]plugin.PluginSet { return wire.ServerPluginSets(impl) }
