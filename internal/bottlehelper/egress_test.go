package bottlehelper

import (
	"bytes"
	"context"
	"strings"
	"testing"
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
		{"proxy", map[string]string{"HTTPS_PROXY": "http://10.9.0.2:3128"}, []string{"through the bottle's proxy (http://10.9.0.2:3128)", "403 Forbidden", askEgress}},
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
