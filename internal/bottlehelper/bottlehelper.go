// Package bottlehelper is the helper an agent runs inside its bottle to ask the
// operator for something the sandbox does not give it: a change to its image
// (capability) or a host to reach (egress). It drops a request file into the
// bottle's queue inbox, waits for the host's receipt in the outbox and exits 0
// on approval, 3 on denial, 2 on a usage error.
//
// It runs as cmd/bottle (a small static binary) and as the bot-bottle
// binary itself when that is invoked as `bottle`, which is how the core
// carries its helper into bottles. Its own code imports only the standard
// library, kong and our queue package (never Docker or gRPC).
package bottlehelper

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
)

// Exit codes.
const (
	exitOK     = 0
	exitError  = 1
	exitUsage  = 2
	exitDenied = 3
)

// Defaults that mirror sdk.GuestQueueDir and sdk.EnvIdentity/EnvQueueDir;
// the sdk is not imported because it pulls gRPC into this small binary.
const (
	defaultQueueDir = "/run/bot-bottle/queue"
	envQueueDir     = "BOT_BOTTLE_QUEUE"
	envIdentity     = "BOT_BOTTLE_IDENTITY"
)

type waitFlags struct {
	NoWait  bool          `help:"Return as soon as the request is submitted."`
	Timeout time.Duration `help:"Stop waiting after this long; 0 waits until a decision." default:"0s"`
	Poll    time.Duration `help:"How often to look for the decision." default:"250ms" hidden:""`
}

type capabilityCmd struct {
	Reason     string `required:"" help:"Why the agent needs the change; the operator reads it."`
	Dockerfile string `xor:"change" placeholder:"FILE" help:"A complete Dockerfile to rebuild the bottle from (or --run)."`
	Run        string `xor:"change" placeholder:"CMD" help:"A RUN line to append to the bottle's Dockerfile, e.g. 'apt-get install -y ripgrep' (an apt install gets a RUN apt-get update before it) (or --dockerfile)."`
	waitFlags
}

// Help says what kong's usage line cannot: one of two flags is required.
func (capabilityCmd) Help() string {
	return "Give exactly one of --run CMD or --dockerfile FILE."
}

type egressCmd struct {
	Host   string `arg:"" name:"rule" help:"The entry to ask for: HOST[:PORT] (port 443 if none is given), or [!][METHOD[,METHOD...] ]HOST[:PORT][/PATH-PREFIX] as above; quote it when it has a space."`
	Reason string `required:"" help:"Why the agent needs to reach it; the operator reads it."`
	waitFlags
}

// Help is the entry's grammar (sdk/egressrule), which a usage line cannot
// show, and what a refusal's line to ask is.
func (egressCmd) Help() string {
	return `An entry is a host, or a rule about some of its requests, or a deny rule:

  api.github.com                         the host, port 443, any request
  *.example.com:8443                     every name below example.com, on 8443
  'GET,HEAD api.github.com/repos/acme/'  only those methods, under that path
  '!api.github.com/admin'                deny: wins over every allow entry

Methods are HTTP's (any case); a path is a plain prefix of the request's
path, unescaped, with no empty, "." or ".." segment. The operator approves
exactly the entry asked for. A refused connection or request names the line
that asks for it (in the proxy's 403 and in "bottle egress"): run it as it
is, with your reason for WHY.`
}

type requestsCmd struct {
	JSON bool `help:"Print the receipts as JSON."`
}

type cli struct {
	Request struct {
		Capability capabilityCmd `cmd:"" help:"Ask for a change to this bottle's image (rebuilds the bottle on approval)."`
		Egress     egressCmd     `cmd:"" help:"Ask to reach a host, or some of its requests, from this bottle."`
	} `cmd:"" help:"Ask the operator for something."`
	Requests requestsCmd   `cmd:"" help:"List this bottle's requests and their status."`
	Egress   egressListCmd `cmd:"" help:"Say whether this bottle can reach the network, list the proxy's recent refusals, and how to ask for a host."`
}

// env is what the helper reads from its environment, so tests can set it.
type env struct {
	queueDir string
	identity string
	stdout   io.Writer
	stderr   io.Writer
}

// exitCode carries a chosen exit status out of a command.
type exitCode struct {
	code int
	err  error
}

func (e *exitCode) Error() string { return e.err.Error() }

func usageErr(format string, args ...any) error {
	return &exitCode{exitUsage, fmt.Errorf(format, args...)}
}

// Name is the helper's command name in a bottle; bot-bottle runs as the
// helper when invoked under it.
const Name = "bottle"

// Main runs the helper with args (without the program name) and returns
// its exit status.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, args, os.Getenv, os.Stdout, os.Stderr)
}

// kongExit unwinds out of kong when it wants to exit (after --help).
type kongExit int

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) (code int) {
	e := env{queueDir: getenv(envQueueDir), identity: getenv(envIdentity), stdout: stdout, stderr: stderr}
	if e.queueDir == "" {
		e.queueDir = defaultQueueDir
	}
	var c cli
	parser, err := kong.New(&c,
		kong.Name("bottle"),
		kong.Description("Ask the bot-bottle operator for a capability or an egress host, from inside a bottle.\n\n"+egressState(getenv)),
		kong.Writers(stdout, stderr),
		kong.Exit(func(n int) { panic(kongExit(n)) }),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
	)
	if err != nil {
		fmt.Fprintf(stderr, "bottle: %v\n", err)
		return exitError
	}
	defer func() {
		if r := recover(); r != nil {
			n, ok := r.(kongExit)
			if !ok {
				panic(r)
			}
			code = int(n)
		}
	}()
	kctx, err := parser.Parse(args)
	if err != nil {
		fmt.Fprintf(stderr, "bottle: %v\n", err)
		return exitUsage
	}
	switch kctx.Command() {
	case "request capability":
		err = e.capability(ctx, c.Request.Capability)
	case "request egress <rule>":
		err = e.egress(ctx, c.Request.Egress)
	case "requests":
		err = e.list(c.Requests)
	case "egress":
		err = e.listEgress(ctx, c.Egress, getenv)
	default:
		err = usageErr("unknown command %q", kctx.Command())
	}
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "bottle: %v\n", err)
	var ec *exitCode
	if errors.As(err, &ec) {
		return ec.code
	}
	return exitError
}
