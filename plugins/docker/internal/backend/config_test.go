package backend

import (
	"strings"
	"testing"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// The plugin config is the one New read: what the environment says later
// is not read again by a launch's checks or a stop's keepProxy.
func TestConfigParsedOnce(t *testing.T) {
	spec := sdk.Spec{Identity: "a-1", Agent: sdk.Agent{Name: "agent"}}

	t.Setenv(sdk.EnvPluginConfig, `{"keep_egress_proxy": false, "pids_limit": 300}`)
	b := New(nil, "test")
	t.Setenv(sdk.EnvPluginConfig, `{"memory": "lots"}`)
	set, err := b.checkSpec(spec)
	if err != nil {
		t.Fatalf("checkSpec read the config again: %v", err)
	}
	if set.PidsLimit != 300 {
		t.Errorf("pids_limit = %d, want New's 300", set.PidsLimit)
	}
	if b.keepProxy() {
		t.Error("keepProxy: New's config says keep_egress_proxy = false")
	}

	// A config that does not parse: every launch refuses with why, and
	// nothing is kept.
	bad := New(nil, "test")
	t.Setenv(sdk.EnvPluginConfig, `{}`)
	if _, err := bad.checkSpec(spec); err == nil || !strings.Contains(err.Error(), "memory") {
		t.Errorf("checkSpec with New's bad config: %v, want the memory refusal", err)
	}
	if bad.keepProxy() {
		t.Error("keepProxy with a config that does not parse keeps the proxy")
	}
	if !New(nil, "test").keepProxy() {
		t.Error("keepProxy of the default config: keep_egress_proxy is on by default")
	}
}
