// Package proxycmd is a bottle's egress proxy, run as the Docker plugin's
// hidden subcommand (`bot-bottle-plugin-docker egress-proxy ...`) in an image
// that holds nothing but the plugin's own static executable: so an installed
// plugin carries its proxy. The backend runs it beside a bottle, on the
// bottle's internal network and on a network with a way out. It forwards
// HTTP CONNECT and plain HTTP to the host[:port] rules of one bottle,
// follows changes to its rules file without a restart, and appends one JSON
// line per connection attempt to its event log. See package
// plugins/internal/egress.
package proxycmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/bot-bottle/bot-bottle/plugins/internal/egress"
	"github.com/bot-bottle/bot-bottle/sdk/names"
)

// Command is the plugin's argument that runs the proxy instead of serving
// the plugin.
const Command = "egress-proxy"

// name is the proxy's name in its messages.
const name = "bot-bottle-egress-proxy"

// usageError is a mistake in the invocation (exit status 2).
type usageError struct{ error }

// Run runs the proxy with args (those after Command) and returns the exit
// status.
func Run(args []string, stdout, stderr io.Writer) int {
	return RunWithStdin(args, os.Stdin, stdout, stderr)
}

// RunWithStdin is Run with the control subcommands' input (rules) read
// from stdin.
func RunWithStdin(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var err error
	sub := ""
	if len(args) > 0 {
		sub = args[0]
	}
	switch sub {
	case CmdServe:
		err = runServe(args[1:], stdout, stderr)
	case CmdAdd, CmdForget, CmdRules, CmdList, CmdRevoke:
		err = runClient(sub, args[1:], stdin, stdout)
	default:
		err = serve(args, stdout, stderr)
	}
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage())
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "%s: %v (see --help)\n", name, err)
		return 2
	default:
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
}

type options struct {
	listen, rules, log, identity string
	allowOwnHost                 bool
}

func flags(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported in one line by run
	fs.StringVar(&o.listen, "listen", ":3128", "address to listen on")
	fs.StringVar(&o.rules, "rules", "", `rules file, JSON {"identity": ID, "rules": ["host[:port]", ...]}; re-read when it changes`)
	fs.StringVar(&o.log, "log", "-", "event log to append one JSON line per connection attempt to, or - for stdout")
	fs.StringVar(&o.identity, "identity", "", "identity of the bottle this proxy serves")
	fs.BoolVar(&o.allowOwnHost, "allow-own-host", false, "tests only: let rules reach this host's loopback and addresses (where a test's upstreams run); a backend never passes it")
	return fs
}

func usage() string {
	var o options
	fs := flags(&o)
	var b strings.Builder
	fmt.Fprintf(&b, "usage: bot-bottle-plugin-docker %s --identity ID --rules FILE [--listen ADDR] [--log FILE|-]\n", Command)
	fmt.Fprintf(&b, "       bot-bottle-plugin-docker %s serve [--control-dir DIR] (one proxy for many bottles)\n", Command)
	fmt.Fprintf(&b, "       bot-bottle-plugin-docker %s add --identity ID --listen ADDR [--log FILE] <rules\n", Command)
	fmt.Fprintf(&b, "       bot-bottle-plugin-docker %s rules --identity ID <rules\n", Command)
	fmt.Fprintf(&b, "       bot-bottle-plugin-docker %s forget --identity ID | list\n\n", Command)
	fs.SetOutput(&b)
	fs.PrintDefaults()
	return b.String()
}

func serve(args []string, stdout, stderr io.Writer) error {
	var o options
	fs := flags(&o)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	switch {
	case fs.NArg() > 0:
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	case o.identity == "":
		return usageError{errors.New("--identity is required")}
	}
	if err := checkIdentity("--identity", o.identity); err != nil {
		return usageError{err}
	}
	if o.rules == "" {
		return usageError{errors.New("--rules is required")}
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	watcher := egress.NewWatcher(o.rules, o.identity, log)
	rules, err := watcher.Load()
	if err != nil {
		return err
	}
	events := stdout
	var logSize int64
	if o.log != "-" {
		f, err := os.OpenFile(o.log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("event log: %w", err)
		}
		defer f.Close()
		events = f
		if fi, err := f.Stat(); err == nil {
			logSize = fi.Size()
		}
	}
	proxy, err := egress.New(egress.Config{
		Identity: o.identity,
		Rules:    rules,
		Events:   egress.NewEventLog(events),
		Log:      log,
		// Where a backend runs it, the proxy's own host is the proxy.
		AllowOwnHost: o.allowOwnHost,
		LogSize:      logSize,
	})
	if err != nil {
		return err
	}
	lc := net.ListenConfig{Control: func(network, address string, rc syscall.RawConn) error {
		// Only the speed of the bottle's leg depends on it.
		if err := egress.ListenLocal(network, address, rc); err != nil {
			log.Warn("egress listener keeps the host's congestion control", "error", err)
		}
		return nil
	}}
	ln, err := lc.Listen(context.Background(), "tcp", o.listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go watcher.Run(ctx, proxy.SetRules)
	log.Info("egress proxy listening", "addr", ln.Addr().String(), "identity", o.identity, "rules", rules.Len())
	if err := proxy.Serve(ctx, ln); err != nil {
		return err
	}
	log.Info("egress proxy stopped")
	return nil
}

// validIdentity is the one identity rule (sdk/names), so a wrong flag fails
// here and not at the first event.
func validIdentity(s string) bool { return names.Valid(s) }

// checkIdentity refuses an identity validIdentity does not take, named as
// it came: what is "--identity" for a flag, "identity" in a request.
func checkIdentity(what, id string) error {
	if validIdentity(id) {
		return nil
	}
	return fmt.Errorf("%s %q: want lower-case letters, digits and '-'", what, id)
}
