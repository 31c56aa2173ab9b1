package main

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
