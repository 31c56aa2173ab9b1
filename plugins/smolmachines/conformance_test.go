package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/backendtest"
)

// TestConformance runs the SDK's exported conformance suite against the real
// plugin binary (a fresh process wherever the suite asks for one) and the
// strict fake smolvm; every smolvm call it made must also keep the
// contract's rules.
func TestConformance(t *testing.T) { runConformance(t, newRig(t, false)) }

// TestConformanceRealSmolvm is the same suite against the smolvm on $PATH,
// with BOT_BOTTLE_SMOLVM_REAL=1 (see the README).
func TestConformanceRealSmolvm(t *testing.T) {
	requireRealSmolvm(t)
	runConformance(t, newRig(t, true))
}

func runConformance(t *testing.T, r *rig) {
	backendtest.RunConformance(t, backendtest.Harness{
		New:   func(t testing.TB) sdk.Backend { return backendtest.Start(t, pluginBin, r.env...) },
		Agent: sdk.Agent{Name: "conf", Image: "alpine", Workdir: "/tmp", Egress: []string{"example.com"}},
		NewInHome: func(t testing.TB, home string) sdk.Backend {
			return backendtest.Start(t, pluginBin, append(r.env, sdk.EnvHomeID+"="+home)...)
		},
		Project: true,
		// The fake runs the guest as host processes: it records a :ro
		// volume but cannot enforce it, so only a real smolvm is held to
		// the queue's read-only mount.
		Queue: r.real,
		// A snapshot is a packed machine file in the core's snapshot dir.
		SnapshotFiles: true,
		SnapshotContains: func(_ context.Context, ref, needle string) (bool, error) {
			b, err := os.ReadFile(ref)
			if errors.Is(err, os.ErrNotExist) {
				return false, fmt.Errorf("snapshot %s: %w", ref, sdk.ErrNotFound)
			}
			return bytes.Contains(b, []byte(needle)), err
		},
	})
	r.checkCallRules(nil)
}
