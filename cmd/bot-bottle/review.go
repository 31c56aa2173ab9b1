package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/bot-bottle/bot-bottle/internal/lifecycle"
	"github.com/bot-bottle/bot-bottle/sdk/render"
)

// The review commands of --review bottles: each fetches the bottle's work
// into the operator's repository as branch bot-bottle/<identity> first.

type DiffCmd struct {
	Identity string `arg:"" help:"Identity of the review bottle." predictor:"identity"`
	Stat     bool   `help:"Show only which files changed and how much."`
	JSON     bool   `name:"json" help:"Print JSON (files, commits, base, tip and the patch)."`
}

func (c *DiffCmd) Run(a *App) error {
	env, err := a.Env()
	if err != nil {
		return err
	}
	d, err := env.Diff(a.ctx, c.Identity, !c.Stat)
	if err != nil {
		return err
	}
	if c.JSON {
		return printJSON(d)
	}
	what := fmt.Sprintf("%d commit(s)", d.Commits)
	if d.Uncommitted {
		what += " and uncommitted changes"
	}
	fmt.Fprintf(os.Stderr, "bot-bottle: %s: %s on branch %s from %.12s, %d file(s) changed\n",
		render.Text(d.Identity), what, render.Text(d.Branch), d.Base, len(d.Files))
	// The patch is the agent's text: every line escaped for the terminal.
	out := d.Patch
	if c.Stat {
		out = d.Stat
	}
	if out != "" {
		fmt.Println(render.Block(strings.TrimSuffix(out, "\n")))
	}
	return nil
}

type ApplyCmd struct {
	Identity string `arg:"" help:"Identity of the review bottle." predictor:"identity"`
	JSON     bool   `name:"json" help:"Print JSON."`
}

func (c *ApplyCmd) Run(a *App) error {
	env, err := a.Env()
	if err != nil {
		return err
	}
	r, err := env.ApplyChanges(a.ctx, c.Identity)
	if err != nil {
		return err
	}
	if c.JSON {
		return printJSON(r)
	}
	for _, f := range r.Files {
		fmt.Println(render.Text(f))
	}
	fmt.Fprintf(os.Stderr, "bot-bottle: applied %d file(s) of %s to %s, uncommitted; branch %s stays until rm\n",
		len(r.Files), render.Text(r.Identity), render.Text(r.Repo), render.Text(r.Branch))
	return nil
}

type MergeCmd struct {
	Identity string `arg:"" help:"Identity of the review bottle." predictor:"identity"`
	JSON     bool   `name:"json" help:"Print JSON."`
}

func (c *MergeCmd) Run(a *App) error {
	env, err := a.Env()
	if err != nil {
		return err
	}
	r, err := env.Merge(a.ctx, c.Identity)
	if err != nil {
		return err
	}
	if c.JSON {
		return printJSON(r)
	}
	for _, f := range r.Files {
		fmt.Println(render.Text(f))
	}
	if r.Commit == "" {
		fmt.Fprintf(os.Stderr, "bot-bottle: %s is already merged into %s\n", render.Text(r.Branch), render.Text(r.Repo))
		return nil
	}
	fmt.Fprintf(os.Stderr, "bot-bottle: merged %s into %s as %.12s\n", render.Text(r.Branch), render.Text(r.Repo), r.Commit)
	return nil
}

// reviewColumn is list's REVIEW cell: the branch, its commits and changed
// files, or "-" for a bottle without --review.
func reviewColumn(r lifecycle.Row) string {
	s := r.Review
	if s == nil {
		return "-"
	}
	if s.Commits < 0 {
		return render.Text(s.Branch) + " (clone unreadable)"
	}
	out := fmt.Sprintf("%s %dc/%df", render.Text(s.Branch), s.Commits, s.Files)
	if s.Uncommitted {
		out += "+wip"
	}
	return out
}
