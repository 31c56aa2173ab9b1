package sdk

import (
	"context"
	"os"
	"os/exec"

	"github.com/hashicorp/go-hclog"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	pb "github.com/bot-bottle/bot-bottle/sdk/internal/pluginpb"
)

// PluginName is the key under which a plugin serves its Backend.
const PluginName = "backend"

// Handshake is shared by the core and every plugin. The cookie only keeps a
// user from running a plugin binary by hand; it is not a security measure.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "BOT_BOTTLE_PLUGIN",
	MagicCookieValue: "a8f2c4d17e0b4b69bd3a5e6f90c2d1b7-bot-bottle-backend",
}

// MaxMessageSize raises gRPC's 4 MiB default: copy-in/out archives and large
// Dockerfiles travel as single messages.
const MaxMessageSize = 256 << 20

// grpcPlugin is the go-plugin glue for one protocol version.
type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	impl Backend
}

func (p *grpcPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterBackendServer(s, &grpcServer{impl: p.impl})
	return nil
}

func (p *grpcPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (interface{}, error) {
	return &Client{rpc: pb.NewBackendClient(c)}, nil
}

// ClientPluginSets is what a core passes as go-plugin's VersionedPlugins.
func ClientPluginSets() map[int]plugin.PluginSet {
	return map[int]plugin.PluginSet{
		1: {PluginName: &grpcPlugin{}},
	}
}

// ServerPluginSets serves impl under every protocol version this SDK speaks.
func ServerPluginSets(impl Backend) map[int]plugin.PluginSet {
	return map[int]plugin.PluginSet{
		1: {PluginName: &grpcPlugin{impl: impl}},
	}
}

// ClientConfig is how a core starts the plugin cmd runs: the handshake
// cookie, every protocol version this SDK speaks, gRPC only, AutoMTLS and
// the raised message limits. cmd.Env is the plugin's whole environment
// (the core's own when nil): go-plugin would otherwise append the host's
// after it, and a host variable would beat a value the core chose. Callers
// add what is theirs (timeouts, a checksum, where stderr goes).
func ClientConfig(cmd *exec.Cmd, logger hclog.Logger) *plugin.ClientConfig {
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	return &plugin.ClientConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: ClientPluginSets(),
		Cmd:              cmd,
		SkipHostEnv:      true,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		GRPCDialOptions:  GRPCDialOptions(),
		Logger:           logger,
	}
}

// GRPCDialOptions are the dial options a core should use with a plugin.
func GRPCDialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithDefaultCallOptions(
		grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize))}
}

func grpcServerFactory(opts []grpc.ServerOption) *grpc.Server {
	opts = append(opts, grpc.MaxRecvMsgSize(MaxMessageSize), grpc.MaxSendMsgSize(MaxMessageSize))
	return grpc.NewServer(opts...)
}

// Dispense returns the Backend client of a started go-plugin client.
func Dispense(c *plugin.Client) (*Client, int, error) {
	rpc, err := c.Client()
	if err != nil {
		return nil, 0, err
	}
	raw, err := rpc.Dispense(PluginName)
	if err != nil {
		return nil, 0, err
	}
	return raw.(*Client), c.NegotiatedVersion(), nil
}
