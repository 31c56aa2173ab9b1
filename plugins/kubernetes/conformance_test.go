package main_test

import (
	"context"
	"testing"

	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/backendtest"
)

// TestConformance runs the SDK's conformance suite against the real plugin
// binary (a fresh process wherever the suite asks for one) on the real
// single-node test cluster; nothing labelled with a bottle's identity may
// outlive its Stop.
func TestConformance(t *testing.T) {
	e := newEnv(t)
	backendtest.RunConformance(t, backendtest.Harness{
		New:       func(t testing.TB) sdk.Backend { return backendtest.Start(t, e.pluginBin, e.configEnv()...) },
		Agent:     e.agent("conf"),
		Leftovers: func(ctx context.Context, id string) ([]string, error) { return e.leftovers(ctx, id) },
		NewInHome: func(t testing.TB, home string) sdk.Backend {
			return backendtest.Start(t, e.pluginBin, e.configEnv(sdk.EnvHomeID+"="+home)...)
		},
		Egress:    backendtest.EgressEnforced,
		Hardening: &backendtest.Hardening{NoNewPrivs: true, NoCapabilities: true, NonRoot: true, UID: "4242"},
	})
}
