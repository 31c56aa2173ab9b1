package sdk

import (
	"context"
	"errors"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	pb "github.com/bot-bottle/bot-bottle/sdk/internal/pluginpb"
	"github.com/bot-bottle/bot-bottle/sdk/internal/wire"
)

// ProtocolVersion is the newest go-plugin protocol version this SDK speaks.
// Serve also answers every older version the core may ask for (see the
// package doc, "Versions and the wire"); it changes only when the meaning of
// the wire protocol changes.
const ProtocolVersion = 2

func init() {
	wire.ServerPluginSets = func(impl any) map[int]plugin.PluginSet {
		return serverPluginSets(impl.(Backend))
	}
}

// grpcPlugin is the plugin side of the go-plugin glue.
type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	impl Backend
}

func (p *grpcPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterBackendServer(s, &grpcServer{impl: p.impl})
	return nil
}

func (p *grpcPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (interface{}, error) {
	return nil, errors.New("package sdk serves backends; a core dispenses them with package sdk/host")
}

// serverPluginSets serves impl under every protocol version this SDK speaks:
// the versions differ only in what the core may send, which the server
// ignores when it is gone.
func serverPluginSets(impl Backend) map[int]plugin.PluginSet {
	sets := map[int]plugin.PluginSet{}
	for _, v := range wire.ProtocolVersions() {
		sets[v] = plugin.PluginSet{wire.PluginName: &grpcPlugin{impl: impl}}
	}
	return sets
}
