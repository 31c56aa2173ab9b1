// Command bot-bottle-plugin-test serves internal/testbackend as a real,
// separately built plugin, for the CLI's end-to-end scripts. Never ship it:
// it runs bottles as plain host processes.
package main

import (
	"fmt"
	"os"

	"github.com/bot-bottle/bot-bottle/internal/testbackend"
	"github.com/bot-bottle/bot-bottle/sdk"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "--version" {
		fmt.Println(testbackend.Version)
		return
	}
	sdk.Serve(testbackend.FromEnv(), sdk.WithLogger(sdk.NewLogger("test")))
}
