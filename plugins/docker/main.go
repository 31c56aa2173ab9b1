// Command bot-bottle-plugin-docker is bot-bottle's Docker backend plugin. The
// bot-bottle core starts it and talks to it over go-plugin; run by hand it
// only says so. It prints nothing to stdout itself: stdout carries the
// go-plugin handshake.
package main

import (
	"github.com/bot-bottle/bot-bottle/plugins/docker/internal/backend"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "0.1.0-dev"

func main() {
	log := sdk.NewLogger(backend.Name)
	sdk.Serve(backend.New(log, version), sdk.WithLogger(log))
}
