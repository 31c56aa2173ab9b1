package main

import (
	"testing"

	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/backendtest"
)

// TestConformance runs the SDK's exported conformance suite against the real
// plugin binary (a fresh process wherever the suite asks for one) and the
// strict fake smolvm; every smolvm call it made must also keep the
// contract's rules.
func TestConformance(t *testing.T) {
	r := newRig(t, false)
	backendtest.RunConformance(t, backendtest.Harness{
		New:   func(t testing.TB) sdk.Backend { return backendtest.Start(t, pluginBin, r.env...) },
		Agent: sdk.Agent{Name: "conf", Image: "alpine", Workdir: "/tmp", Egress: []string{"example.com"}},
	})
	r.checkCallRules(nil)
}
