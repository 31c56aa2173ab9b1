package main

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/lifecycle"
	"github.com/bot-bottle/bot-bottle/internal/queue"
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
	reqs, err := env.Requests()
	if err != nil && len(reqs) == 0 {
		return err
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bot-bottle: warning: %s\n", oneLine(err.Error()))
	}
	if c.JSON {
		if reqs == nil {
			reqs = []queue.Request{}
		}
		return printJSON(reqs)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "REQUEST\tBOTTLE\tKIND\tSTATUS\tAGE\tWHAT\tREASON")
	shown := 0
	for _, r := range reqs {
		if !c.All && r.Status != queue.StatusPending {
			continue
		}
		shown++
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Identity, r.Kind, r.Status,
			time.Since(r.CreatedAt).Round(time.Second), clip(r.Summary(), 50), clip(r.Reason, 60))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if shown == 0 {
		fmt.Fprintln(os.Stderr, "bot-bottle: no pending requests")
	}
	for _, n := range lifecycle.RequestNotes(reqs) {
		fmt.Fprintf(os.Stderr, "bot-bottle: note: %s\n", oneLine(n))
	}
	return nil
}

func clip(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

type ApproveCmd struct {
	Request string `arg:"" help:"Request id (see: bot-bottle requests)."`
}

func (c *ApproveCmd) Run(a *App) error {
	env, err := a.Env()
	if err != nil {
		return err
	}
	d, err := env.Approve(a.ctx, c.Request, lifecycle.Operator())
	printDecision(d, "approved")
	return err
}

type DenyCmd struct {
	Request string `arg:"" optional:"" help:"Request id (see: bot-bottle requests)."`
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
	d, err := env.Deny(a.ctx, c.Request, c.Reason, lifecycle.Operator())
	printDecision(d, "denied")
	return err
}

func printDecision(d lifecycle.Decision, verb string) {
	if d.Request.ID == "" {
		return
	}
	fmt.Printf("%s %s (%s %s: %s)\n", verb, d.Request.ID, d.Request.Identity, d.Request.Kind, d.Request.Summary())
	for _, n := range d.Notes {
		fmt.Printf("note: %s\n", n)
	}
	if d.Preserved {
		fmt.Printf("%s stops for the rebuild; bring it back with: %s\n", d.Request.Identity, lifecycle.ResumeCommand(d.Request.Identity))
	}
}

type AuditCmd struct {
	Identity string `arg:"" help:"Identity of the bottle (its log outlives it)." predictor:"identity"`
	JSON     bool   `name:"json" help:"Print JSON lines."`
	Egress   bool   `help:"Show connection attempts (egress) instead of lifecycle events."`
}

func (c *AuditCmd) Run(a *App) error {
	env, err := a.Env()
	if err != nil {
		return err
	}
	if c.Egress {
		evs, err := env.EgressEvents(c.Identity)
		if err != nil {
			return err
		}
		if c.JSON {
			for _, ev := range evs {
				if err := printJSONLine(ev); err != nil {
					return err
				}
			}
			return nil
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "TIME\tHOST\tPORT\tDECISION\tRULE\tREASON")
		for _, ev := range evs {
			dec := "refused"
			if ev.Allowed {
				dec = "allowed"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", ev.Time, ev.Host, ev.Port, dec, dash(ev.Rule), dash(ev.Reason))
		}
		return tw.Flush()
	}
	evs, err := env.Audit(c.Identity)
	if err != nil {
		return err
	}
	for _, ev := range evs {
		if c.JSON {
			if err := printJSONLine(ev); err != nil {
				return err
			}
			continue
		}
		line := fmt.Sprintf("%s  %-9s %s", ev.Time.Format(time.RFC3339), ev.Kind, ev.Actor)
		if ev.RequestID != "" {
			line += "  " + ev.RequestID
		}
		for _, k := range sortedKeys(ev.Fields) {
			if k == "dockerfile_diff" {
				continue
			}
			line += fmt.Sprintf("  %s=%v", k, ev.Fields[k])
		}
		fmt.Println(line)
		if d, ok := ev.Fields["dockerfile_diff"].(string); ok && d != "" {
			fmt.Print(indent(d, "    "))
		}
	}
	return nil
}
