package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/audit"
	"github.com/bot-bottle/bot-bottle/internal/lifecycle"
	"github.com/bot-bottle/bot-bottle/internal/queue"
	"github.com/bot-bottle/bot-bottle/internal/reqview"
	"github.com/bot-bottle/bot-bottle/sdk/render"
)

type RequestsCmd struct {
	JSON bool `name:"json" help:"Print JSON."`
	All  bool `help:"Show decided requests too (default: pending only, unless --json)."`
}

func (c *RequestsCmd) Run(a *App) error {
	env, err := a.Env()
	if err != nil {
		return err
	}
	reqs, err := env.Requests(a.ctx)
	if err != nil && len(reqs) == 0 {
		return err
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bot-bottle: warning: %s\n", oneLine(err.Error()))
	}
	if c.JSON {
		return printJSON(list(reqs))
	}
	// One block a request: the facts, the whole diff, then the bottle's
	// reason quoted on one line, and for a decided request the decision.
	shown := 0
	now := time.Now()
	for _, r := range reqs {
		if !c.All && r.Status != queue.StatusPending {
			continue
		}
		if shown > 0 {
			fmt.Println()
		}
		shown++
		facts := reqview.Facts(reqview.Describe(env, r), now, reqview.Styles{}, false)
		fmt.Printf("%s %s\n", render.Text(string(r.Status)), facts[0])
		for _, l := range facts[1:] {
			fmt.Println("  " + l)
		}
		if r.DecidedBy != "" {
			fmt.Printf("  decided by: %s", render.Text(r.DecidedBy))
			if r.DecisionReason != "" {
				fmt.Printf(", saying %s", render.Quoted(r.DecisionReason))
			}
			fmt.Println()
		}
		fmt.Println("  " + reqview.ReasonTitle(r.Reason))
		for _, l := range reqview.Reason(r.Reason, 0, 0, reqview.Styles{}) {
			fmt.Println("  " + l)
		}
	}
	switch {
	case shown > 0:
	case c.All:
		fmt.Fprintln(os.Stderr, "bot-bottle: no requests")
	case len(reqs) > 0:
		fmt.Fprintf(os.Stderr, "bot-bottle: no pending requests (%d decided: requests --all shows them)\n", len(reqs))
	default:
		fmt.Fprintln(os.Stderr, "bot-bottle: no pending requests")
	}
	for _, n := range lifecycle.RequestNotes(reqs) {
		fmt.Fprintf(os.Stderr, "bot-bottle: note: %s\n", oneLine(n))
	}
	return nil
}

type ApproveCmd struct {
	Request string `arg:"" help:"Request id (see: bot-bottle requests), or the token bottle request --no-wait printed." predictor:"request"`
}

func (c *ApproveCmd) Run(a *App) error {
	env, err := a.Env()
	if err != nil {
		return err
	}
	d, err := env.Approve(a.ctx, requestID(a.ctx, env, c.Request), lifecycle.Operator())
	printDecision(d, "approved")
	return err
}

type DenyCmd struct {
	Request string `arg:"" optional:"" help:"Request id (see: bot-bottle requests), or the token bottle request --no-wait printed." predictor:"request"`
	AllFrom string `name:"all-from" placeholder:"IDENTITY" help:"Deny every pending request of this bottle instead." predictor:"identity"`
	Reason  string `required:"" help:"Why; the agent is told."`
}

func (c *DenyCmd) Run(a *App) error {
	if (c.Request == "") == (c.AllFrom == "") {
		return fmt.Errorf("deny needs a REQUEST or --all-from IDENTITY, not both")
	}
	env, err := a.Env()
	if err != nil {
		return err
	}
	if c.AllFrom != "" {
		ds, err := env.DenyAll(a.ctx, c.AllFrom, c.Reason, lifecycle.Operator())
		for _, d := range ds {
			printDecision(d, "denied")
		}
		if err == nil {
			fmt.Printf("denied %d pending requests of %s\n", len(ds), c.AllFrom)
		}
		return err
	}
	d, err := env.Deny(a.ctx, requestID(a.ctx, env, c.Request), c.Reason, lifecycle.Operator())
	printDecision(d, "denied")
	return err
}

// requestID is the id of the request arg names: arg itself, or the request
// whose client token it is — what `bottle request … --no-wait` prints inside
// the bottle, which cannot know the id the host gives its request.
func requestID(ctx context.Context, env *lifecycle.Env, arg string) string {
	reqs, _ := env.Requests(ctx)
	for _, r := range reqs {
		if r.ID == arg {
			return arg
		}
	}
	for _, r := range reqs {
		if r.ClientToken != "" && r.ClientToken == arg {
			return r.ID
		}
	}
	return arg
}

func printDecision(d lifecycle.Decision, verb string) {
	if d.Request.ID == "" {
		return
	}
	fmt.Printf("%s %s (%s %s: %s)\n", verb, render.Text(d.Request.ID), render.Text(d.Request.Identity),
		render.Text(string(d.Request.Kind)), render.Text(d.Request.Summary()))
	for _, n := range d.Notes {
		fmt.Printf("note: %s\n", render.OneLine(n))
	}
	if d.Preserved {
		fmt.Printf("%s stops for the rebuild; bring it back with: %s\n", d.Request.Identity, lifecycle.ResumeCommand(d.Request.Identity))
	}
}

type AuditCmd struct {
	Identity string `arg:"" help:"Identity of the bottle (its log outlives it)." predictor:"identity"`
	JSON     bool   `name:"json" help:"Print JSON lines (as --format json)."`
	Format   string `enum:"text,json,ocsf" default:"text" help:"text (one line a record, escaped), json (the JSON lines we keep) or ocsf (OCSF ${ocsf_version} JSON lines of lifecycle, request, decision and egress records, for a SIEM)."`
	Egress   bool   `help:"Show connection attempts (egress) instead of lifecycle events."`
}

func (c *AuditCmd) Run(a *App) error {
	env, err := a.Env()
	if err != nil {
		return err
	}
	format := c.Format
	if c.JSON {
		format = "json"
	}
	if format == "ocsf" {
		evs, err := env.Audit(c.Identity)
		if err != nil {
			return err
		}
		egress, err := env.EgressEvents(c.Identity)
		if err != nil {
			return err
		}
		recs, err := audit.OCSF(evs, egress, version)
		if err != nil {
			return err
		}
		for _, r := range recs {
			if err := printJSONLine(r.Record); err != nil {
				return err
			}
		}
		return nil
	}
	if c.Egress {
		evs, err := env.EgressEvents(c.Identity)
		if err != nil {
			return err
		}
		if format == "json" {
			for _, ev := range evs {
				if err := printJSONLine(ev); err != nil {
					return err
				}
			}
			return nil
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, strings.Join(audit.EgressHeader, "\t"))
		for _, ev := range evs {
			fmt.Fprintln(tw, strings.Join(audit.EgressRow(ev), "\t"))
		}
		return tw.Flush()
	}
	evs, err := env.Audit(c.Identity)
	if err != nil {
		return err
	}
	for _, ev := range evs {
		if format == "json" {
			if err := printJSONLine(ev); err != nil {
				return err
			}
			continue
		}
		for _, l := range audit.Text(ev) {
			fmt.Println(l)
		}
	}
	return nil
}
