package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/bot-bottle/bot-bottle/internal/dashboard"
	"github.com/bot-bottle/bot-bottle/internal/lifecycle"
	// Before bubbletea's init: see the package doc.
	_ "github.com/bot-bottle/bot-bottle/internal/quietterm"
	"github.com/bot-bottle/bot-bottle/internal/term"
)

type DashboardCmd struct {
	Refresh  time.Duration `default:"1s" help:"How often to reload bottles and requests."`
	Deadline time.Duration `default:"3s" help:"How long a backend may take to list its bottles before its rows show unreachable."`
}

func (c *DashboardCmd) Run(a *App) error {
	if !term.IsTerminal(os.Stdin) || !term.IsTerminal(os.Stdout) {
		return errors.New("the dashboard needs a terminal; use bot-bottle list and bot-bottle requests in scripts")
	}
	if c.Refresh <= 0 || c.Deadline <= 0 {
		return fmt.Errorf("--refresh and --deadline must be positive (got %s, %s)", c.Refresh, c.Deadline)
	}
	env, err := a.Env()
	if err != nil {
		return err
	}
	// While the dashboard owns the terminal, what the core and plugins
	// print goes to its status line instead of across the screen.
	log := &dashboard.Log{}
	env.Err = log
	env.Host.Logger = hclog.New(&hclog.LoggerOptions{Name: "bot-bottle", Level: hclog.LevelFromString(a.LogLevel), Output: log})
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the bot-bottle binary for attach: %w", err)
	}
	src := &dashboard.LifecycleSource{
		Env:       env,
		DecidedBy: lifecycle.Operator(),
		Exe:       exe,
		ExeArgs:   []string{"--home", env.Home, "--log-level", a.LogLevel},
	}
	return dashboard.Run(a.ctx, src, dashboard.Options{Refresh: c.Refresh, ListDeadline: c.Deadline, Log: log})
}
