package main_test

import (
	"path/filepath"
	"testing"

	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/backendtest"
)

// TestConformance holds the core's test backend to the same contract as a
// real one, so that what the CLI tests prove with it carries over.
func TestConformance(t *testing.T) {
	bin := backendtest.Build(t, ".", "test")
	root := "BB_TESTPLUGIN_ROOT=" + filepath.Join(t.TempDir(), "root")
	backendtest.RunConformance(t, backendtest.Harness{
		New:   func(t testing.TB) sdk.Backend { return backendtest.Start(t, bin, root) },
		Agent: sdk.Agent{Name: "conf", Image: "host"},
		// A host process in the project (or a copy of it). It has the
		// host's network, queue and helper paths, and one root is one home,
		// so it declares nothing else.
		Project: true,
	})
}
