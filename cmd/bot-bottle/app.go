package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/bot-bottle/bot-bottle/internal/config"
	"github.com/bot-bottle/bot-bottle/internal/lifecycle"
	"github.com/bot-bottle/bot-bottle/internal/pluginhost"
	"github.com/bot-bottle/bot-bottle/internal/state"

	"github.com/bot-bottle/bot-bottle/sdk/render"
)

// App builds the lifecycle environment on first use, so that cheap commands
// (version, help) load nothing.
type App struct {
	*Globals
	ctx context.Context
	env *lifecycle.Env
}

func (a *App) close() {}

// Env loads configuration and opens the state store.
func (a *App) Env() (*lifecycle.Env, error) {
	if a.env != nil {
		return a.env, nil
	}
	home := a.Home
	if home == "" {
		h, err := state.DefaultHome()
		if err != nil {
			return nil, err
		}
		home = h
	}
	store, err := state.Open(home)
	if err != nil {
		return nil, err
	}
	plugins, err := config.LoadPlugins(home)
	if err != nil {
		return nil, err
	}
	exeDir := ""
	if exe, err := os.Executable(); err == nil {
		if exe, err = filepath.EvalSymlinks(exe); err == nil {
			exeDir = filepath.Dir(exe)
		}
	}
	logger := hclog.New(&hclog.LoggerOptions{
		Name:   "bot-bottle",
		Level:  hclog.LevelFromString(a.LogLevel),
		Output: os.Stderr,
	})
	if strings.EqualFold(a.LogLevel, "off") {
		logger = hclog.NewNullLogger()
	}
	a.env = &lifecycle.Env{
		Home:         home,
		Store:        store,
		Plugins:      plugins,
		Host:         &pluginhost.Host{Home: home, Config: plugins, ExeDir: exeDir, Logger: logger},
		In:           os.Stdin,
		Out:          os.Stdout,
		Err:          os.Stderr,
		HelperBinary: helperBinary(exeDir),
	}
	return a.env, nil
}

// helperBinary finds the static in-bottle helper next to bot-bottle.
func helperBinary(exeDir string) string {
	if exeDir == "" {
		return ""
	}
	p := filepath.Join(exeDir, "bottle")
	if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
		return p
	}
	return ""
}

// oneLine keeps an error to the single line the user sees.
func oneLine(s string) string { return render.OneLine(s) }
