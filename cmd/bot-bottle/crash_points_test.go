package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"github.com/bot-bottle/bot-bottle/internal/lifecycle"
	"github.com/bot-bottle/bot-bottle/internal/testenv"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// TestDockerCrashPoints kills the core with SIGKILL at each named point of
// a start and of a resume (lifecycle.EnvTestHalt), on the real engine.
// Afterwards list tells the truth (an orphan is marked as one), prune
// leaves nothing of the bottle on the engine, and a kept bottle still
// resumes. BB_CRASH_ROUNDS repeats the whole walk (the issue asks for five
// rounds without a flake; make test runs one).
func TestDockerCrashPoints(t *testing.T) {
	cli := testenv.RequireDocker(t)
	if _, err := cli.ImageInspect(context.Background(), "debian:bookworm-slim"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("base image missing (run: make base-image): %v", err)
		}
		t.Skipf("skipping: base image missing (run: make base-image): %v", err)
	}
	runID := testenv.RunID(t, cli)
	rounds := 1
	if n := os.Getenv("BB_CRASH_ROUNDS"); n != "" {
		if _, err := fmt.Sscan(n, &rounds); err != nil {
			t.Fatal(err)
		}
	}
	startPoints := []string{lifecycle.HaltMinted, lifecycle.HaltPrepared, lifecycle.HaltBuilding, lifecycle.HaltLaunched, lifecycle.HaltAttached}
	resumePoints := []string{lifecycle.HaltPrepared, lifecycle.HaltBuilding, lifecycle.HaltLaunched, lifecycle.HaltAttached}
	for round := 0; round < rounds; round++ {
		for _, point := range startPoints {
			t.Run("start-"+point, func(t *testing.T) {
				h := newCrashHome(t, cli, runID)
				h.killedAt(point, "start", "shell", "--", "sleep", "300")
				id := h.onlyBottle()
				h.afterCrash(id, point)
				// A bottle that was never kept resumes too: its state was kept.
				h.run("resume", id, "--", "true")
				h.gone(id)
			})
		}
		for _, point := range resumePoints {
			t.Run("resume-"+point, func(t *testing.T) {
				h := newCrashHome(t, cli, runID)
				h.run("start", "shell", "--detach", "--", "sleep", "300")
				id := h.onlyBottle()
				h.run("stop", "--preserve", id)
				h.killedAt(point, "resume", id, "--", "sleep", "300")
				h.afterCrash(id, point)
				out := h.run("resume", id, "--", "sh", "-c", "echo came-back")
				if !strings.Contains(out, "came-back") {
					t.Fatalf("the kept bottle did not resume: %s", out)
				}
				if !h.listed(id).Preserved {
					t.Fatal("the kept bottle is no longer kept")
				}
				h.gone(id)
				h.run("rm", id)
			})
		}
	}
}

type crashHome struct {
	t    *testing.T
	cli  *client.Client
	home string
}

func newCrashHome(t *testing.T, cli *client.Client, runID string) *crashHome {
	home := t.TempDir()
	hcl := "plugin \"docker\" {\n  config {\n    labels = { \"" + testenv.Label + "\" = \"" + runID + "\" }\n  }\n}\n"
	if err := os.WriteFile(filepath.Join(home, "plugins.hcl"), []byte(hcl), 0o600); err != nil {
		t.Fatal(err)
	}
	return &crashHome{t: t, cli: cli, home: home}
}

func (h *crashHome) cmd(env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(binDir, "bot-bottle"), args...)
	cmd.Env = append(append(os.Environ(), "BOT_BOTTLE_HOME="+h.home), env...)
	return cmd
}

func (h *crashHome) run(args ...string) string {
	h.t.Helper()
	out, err := h.cmd(nil, args...).CombinedOutput()
	if err != nil {
		h.t.Fatalf("bot-bottle %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// killedAt runs bot-bottle with the halt point set and requires that it
// died of SIGKILL (the point was reached), not that it ended on its own.
func (h *crashHome) killedAt(point string, args ...string) {
	h.t.Helper()
	cmd := h.cmd([]string{lifecycle.EnvTestHalt + "=" + point}, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			h.t.Fatalf("bot-bottle %v did not die at %q: %v\n%s", args, point, err, out.String())
		}
	case <-time.After(3 * time.Minute):
		_ = cmd.Process.Kill()
		h.t.Fatalf("bot-bottle %v never reached %q\n%s", args, point, out.String())
	}
}

func (h *crashHome) onlyBottle() string {
	h.t.Helper()
	entries, err := os.ReadDir(filepath.Join(h.home, "state"))
	if err != nil || len(entries) != 1 {
		h.t.Fatalf("want one bottle in the state dir, got %v (%v)", entries, err)
	}
	return entries[0].Name()
}

func (h *crashHome) listed(id string) lifecycle.Row {
	h.t.Helper()
	var rows []lifecycle.Row
	if err := json.Unmarshal([]byte(h.run("list", "--json")), &rows); err != nil {
		h.t.Fatal(err)
	}
	for _, r := range rows {
		if r.Identity == id {
			return r
		}
	}
	h.t.Fatalf("%s is not listed: %+v", id, rows)
	return lifecycle.Row{}
}

// afterCrash: list tells the truth, prune leaves the engine clean, the
// state is still there.
func (h *crashHome) afterCrash(id, point string) {
	h.t.Helper()
	containersLeft := point == lifecycle.HaltLaunched || point == lifecycle.HaltAttached
	// The plugin dies with the core (Pdeathsig); what it had made stays
	// for prune, and nothing more is made after the kill.
	row := h.listed(id)
	// created: docker starts an attached agent at its first Attach.
	if containersLeft && (!row.Orphaned || (row.Status != "running" && row.Status != "created")) {
		h.t.Fatalf("after a kill at %s list says %+v; want an orphaned bottle the engine still has", point, row)
	}
	if !containersLeft && row.Orphaned {
		h.t.Fatalf("after a kill at %s list calls it orphaned with nothing on the engine: %+v", point, row)
	}
	dry := h.run("prune", "--dry-run")
	if containersLeft && !strings.Contains(dry, "would remove "+id) {
		h.t.Fatalf("prune --dry-run does not name %s:\n%s", id, dry)
	}
	if h.engineHas(id) == "" && containersLeft {
		h.t.Fatal("prune --dry-run removed something")
	}
	h.run("prune")
	if left := h.engineHas(id); left != "" {
		h.t.Fatalf("prune left %s on the engine", left)
	}
	if row := h.listed(id); row.Orphaned || row.Status == "running" {
		h.t.Fatalf("after prune list says %+v", row)
	}
	if _, err := os.Stat(filepath.Join(h.home, "state", id, "metadata.json")); err != nil {
		h.t.Fatalf("the crash lost the bottle's state: %v", err)
	}
}

func (h *crashHome) gone(id string) {
	h.t.Helper()
	if left := h.engineHas(id); left != "" {
		h.t.Fatalf("%s left on the engine", left)
	}
}

// engineHas names a container or network of bottle id, or "".
func (h *crashHome) engineHas(id string) string {
	h.t.Helper()
	ctx := context.Background()
	f := filters.NewArgs(filters.Arg("label", sdk.LabelIdentity+"="+id))
	cs, err := h.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		h.t.Fatal(err)
	}
	if len(cs) > 0 {
		return "container " + cs[0].ID[:12]
	}
	ns, err := h.cli.NetworkList(ctx, network.ListOptions{Filters: f})
	if err != nil {
		h.t.Fatal(err)
	}
	if len(ns) > 0 {
		return "network " + ns[0].Name
	}
	return ""
}
