package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/supervise"
)

type SuperviseCmd struct {
	Policy   string        `type:"path" placeholder:"FILE" help:"Policy file of ordered rules (default: $BOT_BOTTLE_HOME/supervise.hcl)."`
	Once     bool          `help:"Decide what is pending now and exit."`
	Interval time.Duration `default:"500ms" help:"How often to look for new requests."`
}

func (c *SuperviseCmd) Help() string {
	return `The policy file is HCL: ordered rules, the first that matches a request
decides it; a request no rule matches (or an "ask" rule matches) stays pending
for a human (dashboard, approve, deny). For example:

  rule "docs-egress" {
    kind     = "egress"            # egress | capability | any (default)
    agent    = "shell"             # optional: the bottle's agent
    identity = "shell-*"           # optional glob on the bottle identity
    host     = "*.example.test"    # egress: glob on the host; with :port, on host:port
    action   = "approve"           # approve | deny | ask
  }

  rule "apt-install" {
    kind          = "capability"
    change_regexp = "^apt-get install -y [a-z0-9.+-]+$"   # anchored: nothing else on the line
    action        = "approve"
  }

  rule "no-pipe-to-shell" {
    kind   = "capability"
    change = "*| sh*"              # glob on the RUN line, or the whole requested Dockerfile
    action = "deny"
    reason = "no piping downloads into a shell"   # required for deny: the agent is told
  }

In a glob * matches any run of characters (dots, slashes, spaces too) and ?
one, so "apt-get install *" also matches "apt-get install x && curl … | sh":
approve changes with an anchored change_regexp. Decisions are recorded as
policy:<file>#<rule>.`
}

func (c *SuperviseCmd) Run(a *App) error {
	env, err := a.Env()
	if err != nil {
		return err
	}
	path := c.Policy
	if path == "" {
		path = filepath.Join(env.Home, "supervise.hcl")
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no policy at %s: write one (see bot-bottle supervise --help for the format and an example) or name one with --policy FILE", path)
	}
	// The policy is checked whole before any request is looked at.
	pol, err := supervise.Load(path)
	if err != nil {
		return err
	}
	if c.Interval <= 0 {
		return fmt.Errorf("--interval must be positive, got %s", c.Interval)
	}
	s := &supervise.Supervisor{Env: env, Policy: pol, Out: os.Stdout}
	if !c.Once {
		fmt.Fprintf(os.Stderr, "bot-bottle: supervising with %s (%d rules); Ctrl-C stops\n", pol.File, len(pol.Rules))
		return s.Run(a.ctx, c.Interval)
	}
	o, err := s.Once(a.ctx)
	if err != nil {
		return err
	}
	fmt.Printf("%d approved, %d denied, %d left pending, %d decided elsewhere\n", o.Approved, o.Denied, o.Pending, o.Lost)
	if o.Failed > 0 {
		return fmt.Errorf("%d decisions failed (first: %v)", o.Failed, o.Errors[0])
	}
	return nil
}
