package main_test

import (
	"context"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/image"

	"github.com/bot-bottle/bot-bottle/internal/testenv"
	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/backendtest"
)

// TestConformance runs the SDK's exported conformance suite against the real
// plugin binary (a fresh process wherever the suite asks for one) and the
// real engine; nothing labelled with a bottle's identity may outlive its
// Stop, committed snapshots excepted.
func TestConformance(t *testing.T) {
	e := newEnv(t)
	backendtest.RunConformance(t, backendtest.Harness{
		New:   func(t testing.TB) sdk.Backend { return backendtest.Start(t, pluginBin, e.configEnv(nil)) },
		Agent: e.agent("conf"),
		Leftovers: func(ctx context.Context, identity string) ([]string, error) {
			all, err := testenv.Labelled(ctx, e.cli, sdk.LabelIdentity, identity)
			var left []string
			for _, r := range all {
				if !strings.Contains(r, "bot-bottle/"+identity+":") {
					left = append(left, r)
				}
			}
			return left, err
		},
		RemoveSnapshot: func(ctx context.Context, ref string) error {
			_, err := e.cli.ImageRemove(ctx, ref, image.RemoveOptions{Force: true, PruneChildren: true})
			return err
		},
	})
}
