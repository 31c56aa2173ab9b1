// Command bot-bottle-plugin-smolmachines is the bot-bottle backend plugin
// that runs each bottle as a smolvm microVM. The core starts it; run by hand
// it only prints go-plugin's notice.
package main

import (
	"github.com/bot-bottle/bot-bottle/plugins/smolmachines/internal/backend"
	"github.com/bot-bottle/bot-bottle/sdk"
)

func main() {
	log := sdk.NewLogger(backend.Name)
	sdk.Serve(backend.New(log), sdk.WithLogger(log))
}
