package main_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/testenv"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// TestDashboardPTYDocker is issue 7's acceptance #2 on the real Docker
// backend: a shell bottle files a capability request with the in-bottle
// helper; the dashboard shows it; approve stops the bottle preserved and
// shows the resume hint. Then the dashboard attaches to a second running
// bottle, a typed command's output appears, and Ctrl-P Ctrl-Q comes back to
// the dashboard with the bottle still running.
func TestDashboardPTYDocker(t *testing.T) {
	cli := testenv.RequireDocker(t)
	ctx := context.Background()
	if _, err := cli.ImageInspect(ctx, "debian:bookworm-slim"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the shell agent's base image is missing (run: make base-image): %v", err)
		}
		t.Skipf("skipping: the shell agent's base image is missing (run: make base-image): %v", err)
	}
	runID := testenv.RunID(t, cli)
	env, home := cliEnv(t)
	// The Docker plugin, built as a user builds it, installed in the home.
	plugins := filepath.Join(home, "plugins")
	build := exec.Command("go", "build", "-o", filepath.Join(plugins, "bot-bottle-plugin-docker"), "../../plugins/docker")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the docker plugin: %v\n%s", err, out)
	}
	hcl := fmt.Sprintf("default_backend = \"docker\"\n\nplugin \"docker\" {\n  config {\n    labels = { %q = %q }\n  }\n}\n", testenv.Label, runID)
	if err := os.WriteFile(filepath.Join(home, "plugins.hcl"), []byte(hcl), 0o600); err != nil {
		t.Fatal(err)
	}

	asker := startOn(t, env, "docker", "bash", "-c", `bottle request capability --run "touch /opt/jq" --reason "parse json"; echo helper=$?; sleep 600`)
	talker := startOnTerminal(t, env, "docker") // the agent's own interactive shell, with a terminal
	req := waitPending(t, env)

	scr := startPTY(t, 160, 40, env, filepath.Join(binDir, "bot-bottle"), "dashboard", "--refresh", "500ms")
	// Other bottles may share the engine; only ours are asserted on.
	scr.waitFor(60*time.Second, asker, talker, req, "+RUN touch /opt/jq")
	scr.waitUntil(60*time.Second, "shows both bottles running", func(s string) bool {
		return regexp.MustCompile(asker+` +shell +docker +running`).MatchString(s) &&
			regexp.MustCompile(talker+` +shell +docker +running`).MatchString(s)
	})

	scr.typ("\t")
	scr.typ("a")
	scr.waitFor(60*time.Second, "approved "+req, "bot-bottle resume "+asker)
	if _, err := os.Stat(filepath.Join(home, "state", asker, ".preserve")); err != nil {
		t.Errorf("the approved bottle is not preserved: %v", err)
	}
	df, err := os.ReadFile(filepath.Join(home, "state", asker, "Dockerfile"))
	if err != nil || !strings.Contains(string(df), "RUN touch /opt/jq") {
		t.Errorf("per-bottle Dockerfile: %q, %v", df, err)
	}
	// The bottle is gone from the engine, its state kept.
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _ := exec.Command("docker", "ps", "-a", "-q", "--filter", "label="+sdk.LabelIdentity+"="+asker).Output()
		if strings.TrimSpace(string(out)) == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the approved bottle's container is still there: %s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	scr.waitFor(30*time.Second, "no pending requests")

	// Attach to the talker, run a command in it, see the output, detach.
	scr.typ("\t/" + talker + "\r")
	scr.waitFor(10*time.Second, "Bottles (1 of 2)")
	scr.typ("\r")
	scr.waitGone(30*time.Second, "bot-bottle dashboard")
	time.Sleep(500 * time.Millisecond) // let the shell draw its prompt
	scr.typ("echo dash-$((6*7))-ok\r")
	scr.waitFor(30*time.Second, "dash-42-ok")
	scr.typ("\x10\x11") // Ctrl-P Ctrl-Q
	scr.waitFor(30*time.Second, "bot-bottle dashboard", "back from "+talker)
	if out := runCLI(t, env, "list"); !strings.Contains(out, talker) {
		t.Errorf("the talker is gone after detach:\n%s", out)
	} else {
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, talker) && !strings.Contains(l, "running") {
				t.Errorf("the talker is not running after detach: %s", l)
			}
		}
	}
	scr.typ("q")
	if err := scr.wait(20 * time.Second); err != nil {
		t.Errorf("dashboard exit: %v\n%s", err, scr.text())
	}
}

var detachedID = regexp.MustCompile(`(shell-[a-z0-9]{5}) is running detached`)

// startOnTerminal starts a detached shell bottle from a terminal, as an
// operator does, so that the bottle gets one to attach to later.
func startOnTerminal(t *testing.T, env []string, backend string) string {
	t.Helper()
	scr := startPTY(t, 160, 40, env, filepath.Join(binDir, "bot-bottle"), "start", "shell", "--backend", backend, "--detach")
	if err := scr.wait(120 * time.Second); err != nil {
		t.Fatalf("start on a terminal: %v\n%s", err, scr.text())
	}
	m := detachedID.FindStringSubmatch(scr.text())
	if m == nil {
		t.Fatalf("no identity on the terminal:\n%s", scr.text())
	}
	return removedAtCleanup(t, env, m[1])
}
