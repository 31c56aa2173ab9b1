package main

import (
	"fmt"
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

func (c *SuperviseCmd) Run(a *App) error {
	env, err := a.Env()
	if err != nil {
		return err
	}
	path := c.Policy
	if path == "" {
		path = filepath.Join(env.Home, "supervise.hcl")
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
