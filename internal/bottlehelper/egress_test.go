package bottlehelper

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/queue"
	"github.com/bot-bottle/bot-bottle/sdk/egressrule"
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

// startProxy answers RefusalsPath as a proxy does (its list, oldest first,
// in the one wire shape egressrule.Refusals), counting each refuse call.
// The real proxy's keeping of refusals is tested in plugins/internal/egress
// and end to end in a real bottle by testdata/docker/egress_refusals.txtar;
// this package may not import the backends' code.
func startProxy(t *testing.T) (proxyURL string, refuse func(hostport string)) {
	t.Helper()
	var mu sync.Mutex
	list := egressrule.Refusals{Identity: testID, Refusals: []egressrule.Refusal{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != egressrule.RefusalsPath {
			http.Error(w, "not a proxy request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		json.NewEncoder(w).Encode(list)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func(hostport string) {
		mu.Lock()
		defer mu.Unlock()
		host, port, _ := net.SplitHostPort(hostport)
		n, _ := strconv.Atoi(port)
		now := time.Now().UTC().Format(time.RFC3339)
		for i := range list.Refusals {
			if list.Refusals[i].Host == host {
				list.Refusals[i].Count++
				return
			}
		}
		list.Refusals = append(list.Refusals, egressrule.Refusal{
			Host: host, Port: n, Time: now, FirstTime: now, Count: 1, Method: "CONNECT", Status: 403,
			Reason: "not in the allowlist", Message: "egress to " + hostport + " refused",
			Ask: "bottle request egress " + hostport + " --reason WHY",
		})
	}
}

// In a bottle with a proxy, `bottle egress` says so and lists the recent
// refusals the proxy keeps for this bottle, each with the line to ask;
// --help says how egress goes without asking the proxy anything.
func TestEgressListsRefusals(t *testing.T) {
	proxy, refuse := startProxy(t)
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
	refuse("denied.example.test:443")
	refuse("denied.example.test:443")
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
	var got egressrule.Refusals
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || got.Identity != testID || len(got.Refusals) != 1 || got.Refusals[0].Count != 2 {
		t.Fatalf("--json: exit %d %s\n%s", code, msg, out)
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

// The lines a refusal suggests (the shapes the egress proxy writes: a
// bare host:port for a host not allowed, a quoted rule for a request no
// rule allows), run as they are by a shell with the real helper on PATH,
// submit a request the core ingests, carrying the rule in its canonical
// form; and a rule the grammar refuses is a usage error naming why.
func TestAskLinesRoundTrip(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatalf("this test runs the ask lines with sh: %v", err)
	}
	for _, c := range []struct{ line, want string }{
		{"bottle request egress denied.example.test:443 --reason WHY", "denied.example.test:443"},
		{"bottle request egress '[2001:db8::1]:443' --reason WHY", "[2001:db8::1]:443"},
		{"bottle request egress 'GET rules.example.test:443/other/x' --reason WHY", "GET rules.example.test:443/other/x"},
		{"bottle request egress 'POST api.example.test:8443/v1/a(b)*c;d=e@f,g' --reason WHY", "POST api.example.test:8443/v1/a(b)*c;d=e@f,g"},
		{"bottle request egress 'head,get Rules.Example.test/docs/' --reason WHY", "GET,HEAD rules.example.test:443/docs/"},
		{"bottle request egress '!rules.example.test/admin' --reason WHY", "!rules.example.test:443/admin"},
	} {
		t.Run(c.want, func(t *testing.T) {
			q, dir := bottleQueue(t)
			cmd := exec.Command(sh, "-c", c.line+" --no-wait")
			cmd.Env = []string{envQueueDir + "=" + dir, envIdentity + "=" + testID, "PATH=" + filepath.Dir(helperBin) + ":/usr/bin:/bin"}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", c.line, err, out)
			}
			r := hostIngest(t, q)
			if r.Kind != queue.KindEgress || r.Host != c.want || r.Reason != "WHY" {
				t.Errorf("%s: the core got %s %q (reason %q), want egress %q", c.line, r.Kind, r.Host, r.Reason, c.want)
			}
		})
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "inbox"), 0o755); err != nil {
		t.Fatal(err)
	}
	for arg, want := range map[string]string{"GET rules.example.test/a/../b": "canonical", "FETCH rules.example.test/": "method", "GET rules.example.test/a b": ""} {
		code, _, msg := runIn(t, dir, testID, "request", "egress", arg, "--reason", "r", "--no-wait")
		if code != exitUsage || !strings.Contains(msg, "invalid request") || !strings.Contains(msg, want) || strings.Count(msg, "\n") != 1 {
			t.Errorf("%q: exit %d, %q; want a one-line usage error naming %q", arg, code, msg, want)
		}
	}
}
