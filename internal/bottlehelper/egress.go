package bottlehelper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bot-bottle/bot-bottle/sdk/egressrule"
)

// askEgress is the line that asks the operator for a host, and for some
// of its requests only (sdk/egressrule's grammar; `bottle request egress
// --help` has all of it).
const askEgress = "bottle request egress HOST[:PORT] --reason WHY (or for some requests only: bottle request egress 'GET,HEAD HOST[:PORT]/PATH-PREFIX' --reason WHY)"

// envEgress mirrors sdk.EnvEgress: what the backend says the bottle's
// egress is (sdk.EgressOff, EgressProxy, EgressAllowlist).
const envEgress = "BOT_BOTTLE_EGRESS"

type egressListCmd struct {
	JSON bool `help:"Print the proxy's list of recent refusals as JSON."`
}

// proxyOf is the proxy in the bottle's environment, or "".
func proxyOf(getenv func(string) string) string {
	for _, name := range []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"} {
		if v := getenv(name); v != "" {
			return v
		}
	}
	return ""
}

// egressState says what this bottle can reach, from what the backend put in
// its environment: BOT_BOTTLE_EGRESS when it set one, else the proxy
// variables (a bottle with an allowlist gets a proxy, one without gets no
// network at all).
func egressState(getenv func(string) string) string {
	proxy := proxyOf(getenv)
	mode := getenv(envEgress)
	if mode == "" {
		mode = "off"
		if proxy != "" {
			mode = "proxy"
		}
	}
	switch {
	case mode == "off":
		return fmt.Sprintf("Egress is off: this bottle has no network, so names do not resolve. Ask the operator for a host with: %s", askEgress)
	case mode == "proxy" && proxy != "":
		return fmt.Sprintf("Egress goes through the bottle's proxy (%s): only allowed hosts are reachable, a refused one answers 403 Forbidden. `bottle egress` lists the recent refusals. Ask the operator for a host with: %s", clean(proxy), askEgress)
	default:
		return fmt.Sprintf("Egress is limited to the hosts of an allowlist the backend enforces (%s): a refused connection fails, and the operator sees it in the audit. Ask the operator for a host with: %s", clean(mode), askEgress)
	}
}

// maxRefusalsAnswer bounds what is read of the proxy's answer.
const maxRefusalsAnswer = 1 << 20

// listEgress prints the state, then, where there is a proxy, the bottle's
// recent refusals with the line to ask for each.
func (e env) listEgress(ctx context.Context, c egressListCmd, getenv func(string) string) error {
	proxy := proxyOf(getenv)
	mode := getenv(envEgress)
	if proxy == "" || (mode != "" && mode != "proxy") {
		if c.JSON {
			return errors.New("no proxy in this bottle: the operator sees its refusals (bot-bottle audit IDENTITY --egress)")
		}
		fmt.Fprintln(e.stdout, egressState(getenv))
		return nil
	}
	got, err := fetchRefusals(ctx, proxy)
	if err != nil {
		if !c.JSON {
			fmt.Fprintln(e.stdout, egressState(getenv))
		}
		return fmt.Errorf("cannot read the recent refusals from the proxy: %w", err)
	}
	if c.JSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(got)
	}
	fmt.Fprintln(e.stdout, egressState(getenv))
	if len(got.Refusals) == 0 {
		fmt.Fprintln(e.stdout, "\nNo refusals since the proxy started.")
		return nil
	}
	fmt.Fprintln(e.stdout, "\nRecent refusals, oldest first:")
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LAST\tTIMES\tHOST\tREASON\tASK")
	for _, r := range got.Refusals {
		ask := r.Ask
		if ask == "" {
			ask = "- (" + short(clean(r.Message), 100) + ")"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", clean(r.Time), r.Count, short(clean(fmt.Sprintf("%s:%d", r.Host, r.Port)), 80), short(clean(r.Reason), 60), clean(ask))
	}
	return tw.Flush()
}

// fetchRefusals GETs the refusals from the proxy itself, never through it.
func fetchRefusals(ctx context.Context, proxy string) (egressrule.Refusals, error) {
	var out egressrule.Refusals
	u, err := url.Parse(proxy)
	if err != nil || u.Host == "" {
		return out, fmt.Errorf("proxy %q is not a URL", clean(proxy))
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+u.Host+egressrule.RefusalsPath, nil)
	if err != nil {
		return out, err
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxRefusalsAnswer))
	if err != nil {
		return out, err
	}
	if resp.StatusCode != http.StatusOK {
		return out, fmt.Errorf("%s: %s", resp.Status, short(clean(strings.TrimSpace(string(body))), 200))
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return out, fmt.Errorf("the proxy's answer: %w", err)
	}
	if out.Refusals == nil {
		out.Refusals = []egressrule.Refusal{}
	}
	return out, nil
}
