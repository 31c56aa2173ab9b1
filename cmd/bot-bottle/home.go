package main

import (
	"fmt"
	"path/filepath"

	"github.com/bot-bottle/bot-bottle/internal/pluginhost"
	"github.com/bot-bottle/bot-bottle/internal/state"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// HomeCmd says which home this is and the id its backends label resources
// with, so that an operator can find them with the engine's own tools.
type HomeCmd struct {
	JSON bool `name:"json" help:"Print JSON: {path, home_id, label}."`
}

// Help is the longer text of `home --help`.
func (HomeCmd) Help() string {
	return "One engine may serve several homes (users, test runs): backends label every container, network, volume and image they make with " +
		sdk.LabelHome + "=HOME_ID, and list and prune only their own home's. The id is a digest of the home's absolute path."
}

type homeJSON struct {
	Path   string `json:"path"`
	HomeID string `json:"home_id"`
	Label  string `json:"label"`
}

func (c *HomeCmd) Run(a *App) error {
	home := a.Home
	if home == "" {
		h, err := state.DefaultHome()
		if err != nil {
			return err
		}
		home = h
	}
	abs, err := filepath.Abs(home)
	if err != nil {
		return fmt.Errorf("resolve home %q: %w", home, err)
	}
	id := pluginhost.HomeID(abs)
	out := homeJSON{Path: abs, HomeID: id, Label: sdk.LabelHome + "=" + id}
	if c.JSON {
		return printJSON(out)
	}
	fmt.Printf("home     %s\nhome id  %s\nlabel    %s\n", out.Path, out.HomeID, out.Label)
	fmt.Printf("its docker resources: docker ps -a --filter label=%s\n", out.Label)
	return nil
}
