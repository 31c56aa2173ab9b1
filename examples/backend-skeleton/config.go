package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// config is the plugin block of plugins.hcl:
//
//	plugin "skeleton" {
//	  config { root = "/var/tmp/skeleton-bottles" }
//	}
type config struct {
	Root string `json:"root"`
}

func newBackend(raw json.RawMessage, homeID string) *backend {
	b := &backend{home: homeID}
	var c config
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		b.err = fmt.Errorf("plugin config: %w", err)
		return b
	}
	b.root = c.Root
	if b.root == "" {
		b.root, b.err = defaultRoot(homeID)
	} else if !filepath.IsAbs(b.root) {
		b.err = fmt.Errorf("plugin config: root %q is not an absolute path", b.root)
	}
	return b
}

// defaultRoot is $XDG_STATE_HOME (or ~/.local/state) /bot-bottle-skeleton/
// <home id>: one root per bot-bottle home, so that List reports only the
// bottles of the home that asks, as sdk.HomeID requires.
func defaultRoot(homeID string) (string, error) {
	base := os.Getenv("XDG_STATE_HOME")
	if !filepath.IsAbs(base) {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("no root for bottles: %w", err)
		}
		base = filepath.Join(home, ".local", "state")
	}
	if homeID == "" {
		homeID = "default"
	}
	if !validName(homeID) {
		return "", fmt.Errorf("home id %q is not a plain name", homeID)
	}
	return filepath.Join(base, "bot-bottle-skeleton", homeID), nil
}

// validName keeps an identity from naming anything but a directory right
// under root: the one identity rule of bot-bottle.
func validName(s string) bool { return sdk.ValidIdentity(s) }
