package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/egress"
)

// A bottle without a proxy says, in `bottle egress` and in `bottle --help`,
// that egress is off and how to ask; one with a proxy says it goes through
// it. Both give the exact line to ask with.
func TestEgressState(t *testing.T) {
	for _, c := range []struct {
		name  string
		env   map[string]string
		wants []string
	}{
		{"off", nil, []string{"Egress is off: this bottle has no network", askEgress}},
		{"off-by-backend", map[string]string{envEgress: "off"}, []string{"Egress is off: this bottle has no network", askEgress}},
		{"allowlist", map[string]string{envEgress: "allowlist"}, []string{"limited to the hosts of an allowlist the backend enforces", askEgress}},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, args := range [][]string{{"egress"}, {"--help"}} {
				var out, errOut bytes.Buffer
				code := run(context.Background(), args, func(k string) string { return c.env[k] }, &out, &errOut)
				// kong wraps help text: compare with the line breaks undone.
				got := strings.Join(strings.Fields(out.String()), " ")
				if code != 0 {
					t.Fatalf("bottle %v: exit %d, %s", args, code, errOut.String())
				}
				for _, w := range c.wants {
					if !strings.Contains(got, w) {
						t.Errorf("bottle %v does not say %q:\n%s", args, w, out.String())
					}
				}
			}
		})
	}
}

// The capability usage line does not show both --dockerfile and --run as
// required; neither given is a usage error that names both.
func TestCapabilityNeedsOneChange(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"request", "capability", "--help"}, func(string) string { return "" }, &out, &errOut); code != 0 {
		t.Fatalf("--help: exit %d", code)
	}
	usage, _, _ := strings.Cut(out.String(), "\n")
	if strings.Contains(usage, "--run") || strings.Contains(usage, "--dockerfile") {
		t.Errorf("usage line shows the either-or flags as required: %q", usage)
	}
	if !strings.Contains(out.String(), "exactly one of --run CMD or --dockerfile FILE") {
		t.Errorf("help does not say one of them is needed:\n%s", out.String())
	}
	code, _, msg := runIn(t, t.TempDir(), testID, "request", "capability", "--reason", "r")
	if code != exitUsage || !strings.Contains(msg, "--run CMD or --dockerfile FILE") {
		t.Errorf("no change: exit %d, %q", code, msg)
	}
}

// startProxy runs a real egress proxy for testID on loopback that allows
// nothing, and returns its URL as a backend puts it in HTTPS_PROXY.
func startProxy(t *testing.T) string {
	t.Helper()
	p, err := egress.New(egress.Config{Identity: testID, Events: egress.NewEventLog(io.Discard), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return "http://" + ln.Addr().String()
}

// refuse makes the proxy at proxyURL refuse a CONNECT to hostport.
func refuse(t *testing.T, proxyURL, hostport string) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(proxyURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "CONNECT "+hostport+" HTTP/1.1\r\nHost: "+hostport+"\r\n\r\n")
	got, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(got), "HTTP/1.1 403 ") {
		t.Fatalf("CONNECT %s: %q", hostport, got)
	}
}

// In a bottle with a proxy, `bottle egress` says so and lists the recent
// refusals the proxy keeps for this bottle, each with the line to ask;
// --help says how egress goes without asking the proxy anything.
func TestEgressListsRefusals(t *testing.T) {
	proxy := startProxy(t)
	env := map[string]string{"HTTPS_PROXY": proxy, envEgress: "proxy"}
	getenv := func(k string) string { return env[k] }
	bottle := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(context.Background(), args, getenv, &out, &errOut)
		return code, out.String(), errOut.String()
	}

	code, out, msg := bottle("egress")
	if code != 0 || !strings.Contains(out, "through the bottle's proxy ("+proxy+")") || !strings.Contains(out, "No refusals since the proxy started.") {
		t.Fatalf("before any refusal: exit %d\n%s%s", code, out, msg)
	}
	refuse(t, proxy, "denied.example.test:443")
	refuse(t, proxy, "denied.example.test:443")
	code, out, msg = bottle("egress")
	if code != 0 {
		t.Fatalf("bottle egress: exit %d: %s", code, msg)
	}
	var line string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "denied.example.test:443") {
			line = strings.Join(strings.Fields(l), " ")
		}
	}
	if !strings.Contains(out, "Recent refusals") || !strings.Contains(line, " 2 denied.example.test:443 not in the allowlist bottle request egress denied.example.test:443 --reason WHY") {
		t.Errorf("the refusal and its line to ask are not listed:\n%s", out)
	}

	code, out, msg = bottle("egress", "--json")
	var got egress.Refusals
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || got.Identity != testID || len(got.Refusals) != 1 {
		t.Fatalf("--json: exit %d %s\n%s", code, msg, out)
	}
	// The helper's mirror of the proxy's answer has every field.
	var mine refusals
	json.Unmarshal([]byte(out), &mine)
	back, _ := json.Marshal(mine)
	var again egress.Refusals
	json.Unmarshal(back, &again)
	if !reflect.DeepEqual(again, got) {
		t.Errorf("the helper's refusal type drops fields:\n%+v\n%+v", again, got)
	}

	code, out, _ = bottle("--help")
	if code != 0 || !strings.Contains(strings.Join(strings.Fields(out), " "), "through the bottle's proxy") {
		t.Errorf("--help: exit %d\n%s", code, out)
	}

	// A proxy that cannot be read is an error that says so.
	env["HTTPS_PROXY"] = "http://127.0.0.1:1"
	code, _, msg = bottle("egress")
	if code != exitError || !strings.Contains(msg, "cannot read the recent refusals from the proxy") {
		t.Errorf("no proxy listening: exit %d, %q", code, msg)
	}
}
