package main

import (
	"testing"

	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/conformance"
)

// TestConformance runs the SDK's conformance suite against the real plugin
// process and the strict fake smolvm; every smolvm call it made must also
// keep the contract's rules.
func TestConformance(t *testing.T) {
	r := newRig(t, false)
	conformance.Run(t, conformance.Harness{
		Backend: r.client,
		Agent:   sdk.Agent{Name: "conf", Image: "alpine", Workdir: "/tmp", Egress: []string{"example.com"}},
	})
	r.checkCallRules(nil)
}
