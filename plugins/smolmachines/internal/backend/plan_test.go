package backend

import (
	"strings"
	"testing"

	"github.com/bot-bottle/bot-bottle/sdk"
)

func TestResolveEgressDropsPortsWithWarning(t *testing.T) {
	lp := &launchPlan{}
	err := lp.resolveEgress(sdk.Spec{Egress: []string{"api.anthropic.com:443", "api.anthropic.com:80", "*.example.com", "10.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(lp.AllowHosts, ","); got != "10.0.0.1,api.anthropic.com,example.com" {
		t.Errorf("allow hosts = %s", got)
	}
	if len(lp.warnings) != 1 || !strings.Contains(lp.warnings[0], "port 443") {
		t.Errorf("warnings = %q", lp.warnings)
	}
	if err := (&launchPlan{}).resolveEgress(sdk.Spec{Egress: []string{"http://x/y"}}); err == nil {
		t.Error("a URL was accepted as an egress host")
	}
}

func TestCreateArgsCarryOnlySecretReferences(t *testing.T) {
	lp := &launchPlan{Machine: "bb-a-12345", ImageKind: kindRegistry, Image: "alpine", Workdir: "/workspace",
		SecretNames: []string{"API_KEY"}, Env: []string{sdk.EnvIdentity + "=a-12345"}, AllowHosts: []string{"h.example"},
		Labels: map[string]string{sdk.LabelIdentity: "a-12345"}}
	args := strings.Join(lp.createArgs("alpine"), " ")
	for _, want := range []string{"--secret-env API_KEY=API_KEY", "-e BOT_BOTTLE_IDENTITY=a-12345", "--allow-host h.example",
		"--label dev.bot-bottle.identity=a-12345", "--image alpine", "-- sleep infinity"} {
		if !strings.Contains(args, want) {
			t.Errorf("create args %q lack %q", args, want)
		}
	}
	lp.ImageKind, lp.Image = kindSnapshot, "/s/bb.smolmachine"
	args = strings.Join(lp.createArgs(lp.Image), " ")
	if !strings.Contains(args, "--from /s/bb.smolmachine") || strings.Contains(args, "--image") {
		t.Errorf("snapshot create args = %q", args)
	}
}

func TestCheckIdentity(t *testing.T) {
	for _, bad := range []string{"", "Upper-12345", "a/b", "../x", "a--b", "x-"} {
		if checkIdentity(bad) == nil {
			t.Errorf("identity %q accepted", bad)
		}
	}
	if err := checkIdentity("claude-7k2qz"); err != nil {
		t.Error(err)
	}
}

func TestConfigRejectsUnknownKeys(t *testing.T) {
	if _, err := parseConfig([]byte(`{"smolvm":"/x","memory":"4g"}`)); err == nil || !strings.Contains(err.Error(), "memory") {
		t.Errorf("parseConfig = %v", err)
	}
	if c, err := parseConfig(nil); err != nil || c.Smolvm != "" {
		t.Errorf("empty config = %+v, %v", c, err)
	}
}

func TestBottleStatus(t *testing.T) {
	for state, want := range map[string]string{"stopped": "exited", "running": "running", "created": "created",
		"failed": "failed", "unreachable": "unreachable", "frozen": "frozen"} {
		if got := bottleStatus(state); got != want {
			t.Errorf("bottleStatus(%q) = %q, want %q", state, got, want)
		}
	}
}
