package main

import (
	"context"
	"debug/elf"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/bot-bottle/bot-bottle/internal/bottlehelper"
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
	exe, exeDir := "", ""
	if p, err := os.Executable(); err == nil {
		if p, err = filepath.EvalSymlinks(p); err == nil {
			exe, exeDir = p, filepath.Dir(p)
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
		HelperBinary: helperBinary(exe),
	}
	return a.env, nil
}

// helperBinary is the in-bottle helper: this executable itself, which runs
// as the helper when invoked as `bottle`, when it can run in a bottle (a
// static Linux executable, as `make build` makes it); otherwise a `bottle`
// next to it (a development build with cgo). "" when there is neither.
func helperBinary(exe string) string {
	if exe == "" {
		return ""
	}
	if static(exe) {
		return exe
	}
	p := filepath.Join(filepath.Dir(exe), bottlehelper.Name)
	if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
		return p
	}
	return ""
}

// static reports whether p is a Linux executable that needs no dynamic
// loader: it runs in a bottle whatever the bottle's image holds.
func static(p string) bool {
	f, err := elf.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return false
		}
	}
	return f.Type == elf.ET_EXEC || f.Type == elf.ET_DYN
}

// oneLine keeps an error to the single line the user sees.
func oneLine(s string) string { return render.OneLine(s) }
