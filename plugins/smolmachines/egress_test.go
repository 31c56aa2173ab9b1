package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bot-bottle/bot-bottle/internal/testenv"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// denyLog stands in for smolvm's VMM: it appends refusal lines, in the
// VMM's format, to egress-denials.log in the machine's data dir.
func (r *rig) denyLog(machine string, lines ...string) {
	r.t.Helper()
	cmd := exec.Command(filepath.Join(fakeBin, "smolvm"), "machine", "data-dir", "--name", machine)
	cmd.Env = r.env
	out, err := cmd.Output()
	if err != nil {
		r.t.Fatalf("smolvm machine data-dir: %v", err)
	}
	dir := strings.TrimSpace(string(out))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		r.t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "egress-denials.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		r.t.Fatal(err)
	}
	defer f.Close()
	for _, l := range lines {
		fmt.Fprintln(f, l)
	}
}

func summary(evs []sdk.EgressEvent) string {
	var b strings.Builder
	for _, ev := range evs {
		fmt.Fprintf(&b, "%s %s %s:%d %v\n", ev.Time, ev.Method, ev.Host, ev.Port, ev.Allowed)
	}
	return b.String()
}

// Refusals smolvm records (machine egress-events) reach the bottle's egress
// log when the bottle is listed and before Stop deletes the machine (and
// smolvm's record with it); importing again never duplicates, and a Stop
// without a handle finds the log through the machine's label.
func TestEgressRefusalsReachTheAudit(t *testing.T) {
	r := newRig(t, false)
	ctx := ctxT(t)
	logDir := t.TempDir()
	id := r.identity("audit")
	spec := sdk.Spec{Identity: id, Agent: registryAgent("audit"), Command: []string{"sleep", "60"}, Detach: true,
		Egress: []string{"api.example.com:443"}, EgressLog: filepath.Join(logDir, id+".jsonl")}
	plan, err := r.client.Prepare(ctx, spec)
	if err != nil {
		t.Fatalf("prepare: %v", err)
	}
	if !strings.Contains(strings.Join(flatPreflight(plan), "\n"), "egress audit: refused connections (smolvm machine egress-events) -> "+spec.EgressLog) {
		t.Errorf("preflight %q does not say where refusals go", flatPreflight(plan))
	}
	h, err := r.client.Launch(ctx, spec, plan, nil)
	if err != nil {
		t.Fatalf("launch: %v\nlogs:\n%s", err, r.logs)
	}
	machine := "bb-" + id
	r.denyLog(machine,
		"[2026-08-13T02:31:05.123456Z]: egress policy denied connect to 93.184.215.14:443",
		"[2026-08-13T02:31:06Z]: virtio-net: guest TCP SYN source=x destination=y",
		"[2026-08-13T02:31:07Z]: egress policy denied resolve evil.example")
	list := func() {
		t.Helper()
		if _, err := r.client.List(ctx); err != nil {
			t.Fatalf("list: %v", err)
		}
	}
	list()
	want := "2026-08-13T02:31:05.123456Z connect 93.184.215.14:443 false\n2026-08-13T02:31:07Z resolve evil.example:0 false\n"
	if got := summary(testenv.EgressEvents(t, spec.EgressLog)); got != want {
		t.Fatalf("after list:\n%swant:\n%s", got, want)
	}
	list()
	if got := summary(testenv.EgressEvents(t, spec.EgressLog)); got != want {
		t.Errorf("a second list duplicated events:\n%s", got)
	}
	// The same refusal again is a second event.
	r.denyLog(machine, "[2026-08-13T02:31:05.123456Z]: egress policy denied connect to 93.184.215.14:443")
	list()
	want += "2026-08-13T02:31:05.123456Z connect 93.184.215.14:443 false\n"
	if got := summary(testenv.EgressEvents(t, spec.EgressLog)); got != want {
		t.Errorf("after a repeated refusal:\n%swant:\n%s", got, want)
	}
	// Stop imports what came since, then deletes.
	r.denyLog(machine, "[2026-08-13T02:32:00Z]: egress policy denied sendto 10.9.8.7:53")
	if _, err := r.client.Stop(ctx, sdk.StopRequest{Handle: &h, Identity: id}); err != nil {
		t.Fatalf("stop: %v", err)
	}
	want += "2026-08-13T02:32:00Z sendto 10.9.8.7:53 false\n"
	evs := testenv.EgressEvents(t, spec.EgressLog)
	if got := summary(evs); got != want {
		t.Errorf("after stop:\n%swant:\n%s", got, want)
	}
	for _, ev := range evs {
		if ev.Identity != id || ev.Allowed || !strings.HasPrefix(ev.Reason, "refused by smolvm's egress policy") {
			t.Errorf("event %+v", ev)
		}
	}
	if r.hasMachine(machine) {
		t.Errorf("machine %s left after stop", machine)
	}

	// A launch that never returned a handle: Stop by identity finds the
	// log through the machine's label.
	id2 := r.identity("audit")
	spec2 := spec
	spec2.Identity, spec2.EgressLog = id2, filepath.Join(logDir, id2+".jsonl")
	plan2, err := r.client.Prepare(ctx, spec2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.client.Launch(ctx, spec2, plan2, nil); err != nil {
		t.Fatal(err)
	}
	for _, m := range r.machines() {
		if m["name"] == "bb-"+id2 {
			if l, _ := m["labels"].(map[string]any); l["dev.bot-bottle.egress-log"] != spec2.EgressLog {
				t.Errorf("machine labels %v lack the egress log", l)
			}
		}
	}
	r.denyLog("bb-"+id2, "[2026-08-13T03:00:00Z]: egress policy denied connect to 10.1.2.3:22")
	if _, err := r.client.Stop(ctx, sdk.StopRequest{Identity: id2}); err != nil {
		t.Fatalf("stop by identity: %v", err)
	}
	if got := summary(testenv.EgressEvents(t, spec2.EgressLog)); got != "2026-08-13T03:00:00Z connect 10.1.2.3:22 false\n" {
		t.Errorf("stop by identity imported:\n%s", got)
	}
	if got := summary(testenv.EgressEvents(t, spec.EgressLog)); got != want {
		t.Errorf("the first bottle's log changed:\n%s", got)
	}

	// A relative log path is refused in Prepare.
	bad := spec
	bad.EgressLog = "audit/x.jsonl"
	if _, err := r.client.Prepare(ctx, bad); err == nil || !strings.Contains(err.Error(), "egress log") {
		t.Errorf("prepare with a relative egress log: %v", err)
	}
}
