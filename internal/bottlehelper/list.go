package bottlehelper

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/bot-bottle/bot-bottle/internal/queue"
)

// statusSubmitted marks a request still in the inbox: the host has not seen it.
const statusSubmitted queue.Status = "submitted"

// list prints this bottle's requests: every receipt in the outbox, plus any
// request the host has not picked up yet (when the inbox can be listed).
func (e env) list(c requestsCmd) error {
	ents, err := os.ReadDir(filepath.Join(e.queueDir, "outbox"))
	if err != nil {
		return fmt.Errorf("no request queue at %s (is this running inside a bottle? $%s names the queue dir): %w", e.queueDir, envQueueDir, err)
	}
	var out []queue.Receipt
	seen := map[string]bool{}
	for _, ent := range ents {
		token, ok := strings.CutSuffix(ent.Name(), ".json")
		if !ok || !queue.ValidToken(token) || !ent.Type().IsRegular() {
			continue
		}
		rc, ok, err := e.readReceipt(token)
		if err != nil || !ok {
			fmt.Fprintf(e.stderr, "bottle: skipping receipt %s: %v\n", token, err)
			continue
		}
		out = append(out, rc)
		seen[token] = true
	}
	// The inbox may not be listable (it only has to be writable); then
	// unseen requests are simply not shown.
	inbox, _ := os.ReadDir(filepath.Join(e.queueDir, "inbox"))
	for _, ent := range inbox {
		token, ok := strings.CutSuffix(ent.Name(), ".json")
		if !ok || !queue.ValidToken(token) || seen[token] {
			continue
		}
		rc := queue.Receipt{Token: token, Status: statusSubmitted}
		if fi, err := ent.Info(); err == nil {
			rc.CreatedAt = fi.ModTime().UTC()
		}
		out = append(out, rc)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })

	if c.JSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if out == nil {
			out = []queue.Receipt{}
		}
		return enc.Encode(out)
	}
	if len(out) == 0 {
		fmt.Fprintln(e.stdout, "no requests")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tSTATUS\tWHAT\tDECISION")
	for _, rc := range out {
		id := rc.ID
		if id == "" {
			id = "(token " + rc.Token[:8] + ")"
		}
		kind := string(rc.Kind)
		if kind == "" {
			kind = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", id, kind, rc.Status, short(clean(rc.Summary), 50), short(clean(rc.DecisionReason), 60))
	}
	return tw.Flush()
}

func short(s string, n int) string {
	if s == "" {
		return "-"
	}
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
