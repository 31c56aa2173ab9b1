// Command bot-bottle runs AI coding agents in disposable, isolated,
// resumable sandboxes. This package only parses, wires and prints; the flows
// live in internal/lifecycle.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/alecthomas/kong"
	"github.com/willabides/kongplete"

	"github.com/bot-bottle/bot-bottle/internal/audit"
	"github.com/bot-bottle/bot-bottle/internal/bottlehelper"
	"github.com/bot-bottle/bot-bottle/internal/lifecycle"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	// Invoked as `bottle` (in a bottle, where the core's own executable is
	// mounted as the helper), it is the in-bottle helper.
	if filepath.Base(os.Args[0]) == bottlehelper.Name {
		os.Exit(bottlehelper.Main(os.Args[1:]))
	}
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	var cli CLI
	parser, err := kong.New(&cli,
		kong.Name("bot-bottle"),
		kong.Description("Run AI coding agents in disposable, isolated, resumable sandboxes (bottles) with deny-by-default egress."),
		kong.UsageOnError(),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.Vars{"version": version, "ocsf_version": audit.OCSFVersion},
	)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bot-bottle: internal error: %v\n", err)
		return 70
	}
	kongplete.Complete(parser, kongplete.WithPredictor("identity", identityPredictor()),
		kongplete.WithPredictor("agent", agentPredictor()), kongplete.WithPredictor("request", requestPredictor()))
	kctx, err := parser.Parse(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bot-bottle: %v (see bot-bottle --help)\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	app := &App{Globals: &cli.Globals, ctx: ctx}
	kctx.BindTo(ctx, (*context.Context)(nil))
	kctx.Bind(app)
	err = kctx.Run()
	app.close()
	var exit *lifecycle.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return exit.Code
	default:
		fmt.Fprintf(os.Stderr, "bot-bottle: error: %s\n", oneLine(err.Error()))
		return 1
	}
}
