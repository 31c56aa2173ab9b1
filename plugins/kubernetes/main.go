// Command bot-bottle-plugin-kubernetes is bot-bottle's Kubernetes backend
// plugin: bottles as pods on a cluster. The bot-bottle core starts it and
// talks to it over go-plugin; it prints nothing to stdout itself, because
// stdout carries the go-plugin handshake.
package main

import (
	"fmt"
	"os"

	"github.com/bot-bottle/bot-bottle/plugins/kubernetes/internal/kube"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "0.1.0-dev"

func main() {
	log := sdk.NewLogger(kube.Name)
	cfg, err := kube.ParseConfig(sdk.PluginConfig())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sdk.Serve(kube.New(log, version, cfg), sdk.WithLogger(log))
}
