package main_test

import (
	"testing"

	"github.com/bot-bottle/bot-bottle/sdk/conformance"
)

// TestConformance runs the SDK's conformance suite against the real plugin
// process and the real engine.
func TestConformance(t *testing.T) {
	e := newEnv(t)
	conformance.Run(t, conformance.Harness{
		Backend: e.p.be,
		Agent:   e.agent("conf"),
		Config:  e.config(nil),
	})
}
