// Command bottle is the in-bottle helper (package internal/bottlehelper) as a
// small static binary of its own. The bot-bottle binary carries the same
// helper: invoked as `bottle`, it is this command.
package main

import (
	"os"

	"github.com/bot-bottle/bot-bottle/internal/bottlehelper"
)

func main() { os.Exit(bottlehelper.Main(os.Args[1:])) }
