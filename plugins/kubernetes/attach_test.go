package main_test

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/backendtest"
)

// TestDetachDuringFirstStart: a detach while the first attach is still
// opening the agent's gate (at once, or a little into the call), through
// the real plugin process, leaves the agent started: right after it List
// reports the bottle running (a gated pod is only created, which prune
// would not keep), and a fresh process's attach gets the agent's own exit.
func TestDetachDuringFirstStart(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	be := backendtest.Start(t, e.pluginBin, e.configEnv()...)
	for i, after := range []time.Duration{0, 100 * time.Millisecond, 400 * time.Millisecond} {
		id := fmt.Sprintf("first%d-%s", i, e.runID)
		spec := sdk.Spec{Identity: id, Agent: e.agent("first"), Command: []string{"sh", "-c", "sleep 5; exit 6"}}
		plan, err := be.Prepare(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		h, err := be.Launch(ctx, spec, plan, func(sdk.Progress) {})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = be.Stop(context.Background(), sdk.StopRequest{Handle: &h, Identity: id}) })
		actx, detach := context.WithCancel(ctx)
		if after == 0 {
			detach()
		} else {
			time.AfterFunc(after, detach)
		}
		st, err := be.Attach(actx, sdk.AttachRequest{Handle: h}, sdk.AttachStreams{Stdout: io.Discard, Stderr: io.Discard})
		detach()
		if err != nil || !st.Detached {
			t.Fatalf("a detach %v into the first attach: %+v, %v; want detached", after, st, err)
		}
		bs, err := be.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		status := "not listed"
		for _, b := range bs {
			if b.Identity == id {
				status = b.Status
			}
		}
		if status != sdk.StatusRunning {
			t.Errorf("right after a detach %v into the first attach List reports %s as %s, want running", after, id, status)
			continue
		}
		st, err = backendtest.Start(t, e.pluginBin, e.configEnv()...).Attach(ctx, sdk.AttachRequest{Handle: h}, sdk.AttachStreams{Stdout: io.Discard, Stderr: io.Discard})
		if err != nil || st.Detached || st.Code != 6 {
			t.Errorf("a fresh attach after a detach %v into the first: %+v, %v; want the agent's exit 6", after, st, err)
		}
	}
}
