// Command bot-bottle-plugin-docker is bot-bottle's Docker backend plugin. The
// bot-bottle core starts it and talks to it over go-plugin; run by hand it
// only says so. It prints nothing to stdout itself: stdout carries the
// go-plugin handshake.
//
// `bot-bottle-plugin-docker egress-proxy ...` is a bottle's egress proxy
// (package proxycmd): the plugin runs its own static executable as the proxy
// in an image of its own, so the installed plugin is all egress needs.
package main

import (
	"os"

	"github.com/bot-bottle/bot-bottle/plugins/docker/internal/backend"
	"github.com/bot-bottle/bot-bottle/plugins/docker/internal/proxycmd"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "0.1.0-dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == proxycmd.Command {
		os.Exit(proxycmd.Run(os.Args[2:], os.Stdout, os.Stderr))
	}
	log := sdk.NewLogger(backend.Name)
	sdk.Serve(backend.New(log, version), sdk.WithLogger(log))
}
