package main_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/bot-bottle/bot-bottle/internal/testenv"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// TestDockerScripts drives the real bot-bottle and Docker backend plugin
// against the real engine. Every resource the scripts make carries the test
// label (through the docker plugin's `labels` config) and is removed at the
// end, failed or not.
func TestDockerScripts(t *testing.T) {
	cli := testenv.RequireDocker(t)
	if _, err := cli.ImageInspect(context.Background(), "debian:bookworm-slim"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the shell agent's base image is missing (run: make base-image): %v", err)
		}
		t.Skipf("skipping: the shell agent's base image is missing (run: make base-image): %v", err)
	}
	runID := testenv.RunID(t, cli)
	// The egress scripts' upstream servers and probes.
	upImage := testenv.Busybox{}.Image(t, cli, runID)
	p := scriptParams("testdata/docker")
	setup := p.Setup
	p.Setup = func(env *testscript.Env) error {
		if err := setup(env); err != nil {
			return err
		}
		env.Setenv("RUNID", runID)
		// Scripts run in parallel: each also labels its own resources.
		scriptID := fmt.Sprintf("%s-%x", runID, sha256.Sum256([]byte(env.WorkDir)))[:24]
		env.Setenv("SCRIPTID", scriptID)
		home := env.Getenv("BOT_BOTTLE_HOME")
		if err := os.MkdirAll(home, 0o700); err != nil {
			return err
		}
		env.Setenv("UPIMG", upImage)
		return os.WriteFile(filepath.Join(home, "plugins.hcl"), []byte(dockerPluginsHCL(runID, scriptID)), 0o600)
	}
	p.Condition = scriptCondition
	p.Cmds["testnet"] = cmdTestNet
	p.Cmds["upstream"] = cmdUpstream
	p.Cmds["tlsupstream"] = cmdTLSUpstream
	p.Cmds["capture"] = cmdCapture
	p.Cmds["dockergone"] = cmdDockerGone
	p.Cmds["dockerup"] = cmdDockerUp
	p.Cmds["dockernoshared"] = cmdDockerNoShared
	p.Cmds["stdoutvar"] = cmdStdoutVar
	p.Cmds["distinctids"] = cmdDistinctIDs
	p.Cmds["badconfig"] = cmdBadConfig
	testscript.Run(t, p)
}

// dockerPluginsHCL is the plugins.hcl of a docker script: every resource
// labelled with the run and the script, and the proxy of a bottle with
// egress joining egressNets.
func dockerPluginsHCL(runID, scriptID string, egressNets ...string) string {
	extra := ""
	if len(egressNets) > 0 {
		q := make([]string, len(egressNets))
		for i, n := range egressNets {
			q[i] = fmt.Sprintf("%q", n)
		}
		extra = "    egress_networks = [" + strings.Join(q, ", ") + "]\n"
	}
	return fmt.Sprintf("default_backend = \"docker\"\n\nplugin \"docker\" {\n  config {\n    memory     = \"4g\"\n    pids_limit = 512\n    labels     = { %q = %q, %q = %q }\n%s  }\n}\n", testenv.Label, runID, "test.bot-bottle.script", scriptID, extra)
}

// dockergone ID: no container, network or volume of bottle ID is left.
func cmdDockerGone(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: dockergone IDENTITY")
	}
	for _, what := range [][]string{
		{"ps", "-a", "-q", "--filter", "label=" + sdk.LabelIdentity + "=" + args[0]},
		{"network", "ls", "-q", "--filter", "label=" + sdk.LabelIdentity + "=" + args[0]},
		{"volume", "ls", "-q", "--filter", "label=" + sdk.LabelIdentity + "=" + args[0]},
	} {
		if neg && what[0] == "volume" {
			continue // only bottles with egress have one
		}
		if err := ts.Exec("docker", what...); err != nil {
			ts.Fatalf("docker %v: %v", what, err)
		}
		if left := strings.TrimSpace(ts.ReadFile("stdout")); (left == "") == neg {
			ts.Fatalf("docker %s for %s: %q", what[0], args[0], left)
		}
	}
}

// dockernoshared: nothing of the home's shared egress side (its proxy,
// its networks) of this script is left.
func cmdDockerNoShared(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: dockernoshared")
	}
	filter := "label=test.bot-bottle.script=" + ts.Getenv("SCRIPTID")
	for _, what := range [][]string{
		{"ps", "-a", "--format", "{{.Names}}", "--filter", filter},
		{"network", "ls", "--format", "{{.Name}}", "--filter", filter},
	} {
		if err := ts.Exec("docker", what...); err != nil {
			ts.Fatalf("docker %v: %v", what, err)
		}
		for _, name := range strings.Fields(ts.ReadFile("stdout")) {
			if strings.HasPrefix(name, "bot-bottle-egress-") {
				ts.Fatalf("left of the shared egress side: %s %s", what[0], name)
			}
		}
	}
}

// dockerup IDENTITY: the bottle's agent container is running. When it is
// not, the failure says what the engine knows of it (state, exit code, OOM,
// when it finished), so that a rare failure explains itself.
func cmdDockerUp(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: dockerup IDENTITY")
	}
	filter := "label=" + sdk.LabelIdentity + "=" + args[0]
	if err := ts.Exec("docker", "ps", "-q", "--filter", filter); err != nil {
		ts.Fatalf("docker ps: %v", err)
	}
	if strings.TrimSpace(ts.ReadFile("stdout")) != "" {
		return
	}
	_ = ts.Exec("docker", "ps", "-a", "--filter", filter, "--format",
		"{{.Names}} {{.Status}}")
	all := ts.ReadFile("stdout")
	_ = ts.Exec("docker", "inspect", "--format",
		"{{.Name}} status={{.State.Status}} exit={{.State.ExitCode}} oom={{.State.OOMKilled}} error={{.State.Error}} started={{.State.StartedAt}} finished={{.State.FinishedAt}}",
		"bot-bottle-"+args[0])
	ts.Fatalf("no running container for %s; containers: %q; inspect: %q", args[0], all, ts.ReadFile("stdout")+ts.ReadFile("stderr"))
}

// stdoutvar VAR: the last command's stdout, trimmed, into $VAR.
func cmdStdoutVar(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: stdoutvar VAR")
	}
	ts.Setenv(args[0], strings.TrimSpace(ts.ReadFile("stdout")))
}

var startedPattern = regexp.MustCompile(`bot-bottle: starting ([a-z0-9-]+-[a-z0-9]{5})`)

// distinctids N: stderr names N distinct started bottles.
func cmdDistinctIDs(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: distinctids N")
	}
	seen := map[string]bool{}
	for _, m := range startedPattern.FindAllStringSubmatch(ts.ReadFile("stderr"), -1) {
		seen[m[1]] = true
	}
	if fmt.Sprint(len(seen)) != args[0] {
		ts.Fatalf("%d distinct identities, want %s", len(seen), args[0])
	}
}
