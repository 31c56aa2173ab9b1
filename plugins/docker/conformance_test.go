package main_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

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
		SnapshotContains: func(ctx context.Context, ref, needle string) (bool, error) {
			return imageContains(ctx, e.cli, ref, needle)
		},
		NewInHome: func(t testing.TB, home string) sdk.Backend {
			return backendtest.Start(t, pluginBin, e.configEnv(nil), sdk.EnvHomeID+"="+home)
		},
		Project:      true,
		ProjectUID:   4242,
		Egress:       backendtest.EgressEnforced,
		Queue:        true,
		Hardening:    &backendtest.Hardening{NoNewPrivs: true, NoCapabilities: true, NonRoot: true},
		BuildsImages: true,
	})
}

// imageContains looks for needle in the image's config and in every byte of
// its saved layers.
func imageContains(ctx context.Context, cli *client.Client, ref, needle string) (bool, error) {
	insp, raw, err := cli.ImageInspectWithRaw(ctx, ref)
	if cerrdefs.IsNotFound(err) {
		return false, fmt.Errorf("image %s: %w", ref, sdk.ErrNotFound)
	}
	if err != nil {
		return false, err
	}
	if bytes.Contains(raw, []byte(needle)) {
		return true, nil
	}
	rc, err := cli.ImageSave(ctx, []string{insp.ID})
	if err != nil {
		return false, err
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	return bytes.Contains(data, []byte(needle)), err
}

// TestImageContainsFindsEnv proves the conformance hook can fail: a raw
// engine commit of a container with a secret in its env is caught.
func TestImageContainsFindsEnv(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	needle := "needle-" + e.label
	labels := map[string]string{testenv.Label: e.label}
	c, err := e.cli.ContainerCreate(ctx, &container.Config{Image: "debian:bookworm-slim", Env: []string{"X=" + needle}, Labels: labels}, nil, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	ref := "bot-bottle-test/contains:" + e.label
	if _, err := e.cli.ContainerCommit(ctx, c.ID, container.CommitOptions{Reference: ref, Changes: []string{"LABEL " + testenv.Label + "=" + e.label}}); err != nil {
		t.Fatal(err)
	}
	if in, err := imageContains(ctx, e.cli, ref, needle); err != nil || !in {
		t.Fatalf("imageContains(%s) = %v, %v; want the committed env found", ref, in, err)
	}
	if _, err := imageContains(ctx, e.cli, ref+"-gone", needle); !errors.Is(err, sdk.ErrNotFound) {
		t.Fatalf("imageContains of a missing image = %v, want sdk.ErrNotFound", err)
	}
}
