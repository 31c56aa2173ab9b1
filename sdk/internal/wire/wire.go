// Package wire holds what both ends of the plugin connection must agree on —
// the go-plugin handshake, the protocol versions, the plugin set's key and the
// gRPC message limits — so that package sdk (the plugin's side) and package
// sdk/host (the core's side) share one definition without either exporting
// go-plugin or gRPC types to plugin authors.
package wire

import (
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// PluginName is the key under which a plugin serves its Backend.
const PluginName = "backend"

// ProtocolVersion is the newest go-plugin protocol version. Version 2 is
// version 1 without Spec.config_json, Spec.transcript_dir and the attach
// heartbeat: the messages are wire-compatible, so both ends speak both and a
// plugin or core built against the previous SDK still works.
const ProtocolVersion = 2

// ProtocolVersions are every version both ends speak, oldest first.
var protocolVersions = []int{1, 2}

// ProtocolVersions returns every protocol version this SDK speaks.
func ProtocolVersions() []int { return append([]int(nil), protocolVersions...) }

// MaxMessageSize raises gRPC's 4 MiB default: copy-in/out archives and large
// Dockerfiles travel as single messages.
const MaxMessageSize = 256 << 20

// Handshake is shared by the core and every plugin. The cookie only keeps a
// user from running a plugin binary by hand; it is not a security measure.
// ProtocolVersion here is go-plugin's fallback for peers that do not
// negotiate; VersionedPlugins decides.
func Handshake() plugin.HandshakeConfig {
	return plugin.HandshakeConfig{
		ProtocolVersion:  1,
		MagicCookieKey:   "BOT_BOTTLE_PLUGIN",
		MagicCookieValue: "a8f2c4d17e0b4b69bd3a5e6f90c2d1b7-bot-bottle-backend",
	}
}

// DialOptions are the gRPC dial options a core uses with a plugin.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithDefaultCallOptions(
		grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize))}
}

// ServerFactory is go-plugin's GRPCServer with the raised message limits.
func ServerFactory(opts []grpc.ServerOption) *grpc.Server {
	opts = append(opts, grpc.MaxRecvMsgSize(MaxMessageSize), grpc.MaxSendMsgSize(MaxMessageSize))
	return grpc.NewServer(opts...)
}

// ServerPluginSets is set by package sdk when it is initialised: it returns
// the go-plugin sets that serve a backend (an sdk.Backend, which this package
// cannot name without an import cycle) under every protocol version. It is
// how sdk/backendtest and sdk/host's tests serve a backend in process
// without package sdk exporting go-plugin types.
var ServerPluginSets func(impl any) map[int]plugin.PluginSet
