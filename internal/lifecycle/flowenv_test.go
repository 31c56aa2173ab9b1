package lifecycle_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bot-bottle/bot-bottle/internal/audit"
	"github.com/bot-bottle/bot-bottle/internal/queue"
)

// A flow's Env.Getenv is its only environment: a passed-through variable
// that only it has reaches the bottle, and its value is kept out of the
// audit (here, echoed back in a request's reason).
func TestPassedThroughEnvIsTheFlowsGetenv(t *testing.T) {
	const name, value = "BB_FLOW_ONLY_TOKEN", "tok-7f3a-only-in-the-flows-getenv"
	if _, ok := os.LookupEnv(name); ok {
		t.Fatalf("%s is set in the test's process", name)
	}
	r := newRig(t)
	r.env.Getenv = func(k string) string {
		if k == name {
			return value
		}
		return ""
	}
	hcl := "description = \"host shell\"\nimage = \"host\"\ncommand = [\"sh\", \"-c\", \"exit 0\"]\nenv = [\"" + name + "\"]\n"
	if err := os.WriteFile(filepath.Join(r.env.Home, "agents", "tsh", "agent.hcl"), []byte(hcl), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	id := r.detached()
	// What the test backend got as Spec.Env.
	data, err := os.ReadFile(filepath.Join(r.env.Home, "tproot", "bottles", id+".env"))
	if err != nil {
		t.Fatal(err)
	}
	var env map[string]string
	if err := json.Unmarshal(data, &env); err != nil {
		t.Fatal(err)
	}
	if env[name] != value {
		t.Fatalf("the spec's env has %s=%q, want the flow's value\n%s", name, env[name], r.msgs)
	}

	dir, err := queue.Open(r.env.Home).Dir(id)
	if err != nil {
		t.Fatal(err)
	}
	file(t, dir, "eeeeeeeeeeeeeeee1", queue.Submission{Kind: queue.KindEgress, Host: "docs.example.test", Reason: "my token is " + value})
	if reqs, err := r.env.Requests(ctx); err != nil || len(reqs) != 1 {
		t.Fatalf("requests: %+v, %v", reqs, err)
	}
	evs, err := audit.Open(r.env.Home).Read(id)
	if err != nil {
		t.Fatal(err)
	}
	var request bool
	for _, ev := range evs {
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		request = request || ev.Kind == audit.KindRequest
		if strings.Contains(string(b), value) {
			t.Errorf("the audit holds the passed-through value: %s", b)
		}
	}
	if !request {
		t.Fatalf("no request in the audit: %+v", evs)
	}
}
