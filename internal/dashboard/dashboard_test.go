package dashboard_test

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/exp/teatest"

	"github.com/bot-bottle/bot-bottle/internal/audit"
	"github.com/bot-bottle/bot-bottle/internal/dashboard"
	"github.com/bot-bottle/bot-bottle/internal/operatortest"
	"github.com/bot-bottle/bot-bottle/internal/queue"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bbdash")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	if err := operatortest.Build(dir, map[string]string{
		"bot-bottle-plugin-test": "internal/testplugin",
		"bottle":                 "cmd/bottle",
	}); err != nil {
		os.RemoveAll(dir)
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const width, height = 200, 50

// dash runs the real dashboard program over a lifecycle-backed source, the
// one `bot-bottle dashboard` uses, with a screen to read.
func dash(t *testing.T, w *operatortest.World, opts dashboard.Options) (*teatest.TestModel, *screen) {
	t.Helper()
	return dashSized(t, w, opts, width, height)
}

func dashSized(t *testing.T, w *operatortest.World, opts dashboard.Options, width, height int) (*teatest.TestModel, *screen) {
	t.Helper()
	if opts.Refresh == 0 {
		opts.Refresh = 100 * time.Millisecond
	}
	src := &dashboard.LifecycleSource{Env: w.Env, DecidedBy: "user:tester"}
	ctx, cancel := context.WithCancel(context.Background())
	tm := teatest.NewTestModel(t, dashboard.New(ctx, src, opts), teatest.WithInitialTermSize(width, height))
	t.Cleanup(func() {
		_ = tm.Quit()
		tm.WaitFinished(t, teatest.WithFinalTimeout(10*time.Second))
		cancel()
	})
	return tm, newScreen(tm.Output(), width, height)
}

func keys(tm *teatest.TestModel, ks ...string) {
	for _, k := range ks {
		switch k {
		case "tab":
			tm.Send(tea.KeyMsg{Type: tea.KeyTab})
		case "enter":
			tm.Send(tea.KeyMsg{Type: tea.KeyEnter})
		case "esc":
			tm.Send(tea.KeyMsg{Type: tea.KeyEsc})
		case "down":
			tm.Send(tea.KeyMsg{Type: tea.KeyDown})
		default:
			if burst, ok := strings.CutPrefix(k, "burst:"); ok {
				// Keys typed faster than the terminal is read: one message.
				tm.Send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(burst)})
				continue
			}
			tm.Type(k)
		}
	}
}

func only(t *testing.T, reqs []queue.Request, kind queue.Kind, identity string) queue.Request {
	t.Helper()
	for _, r := range reqs {
		if r.Kind == kind && r.Identity == identity {
			return r
		}
	}
	t.Fatalf("no %s request of %s in %+v", kind, identity, reqs)
	return queue.Request{}
}

// TestScreenListsBottlesAndRequests: two running bottles, a capability
// request from one (filed by the real helper) and an egress request from
// the other; the screen lists both bottles with their columns, both
// requests, and the selected capability request's Dockerfile diff.
func TestScreenListsBottlesAndRequests(t *testing.T) {
	w := operatortest.New(t, binDir)
	a := w.StartDetached(t, "shell", "sleep", "600")
	b := w.StartDetached(t, "shell", "sleep", "600")
	w.File(t, a, "request", "capability", "--run", "apt-get install -y ripgrep", "--reason", "need rg to search")
	w.Pending(t) // ingested first, so it is the older and listed first
	w.File(t, b, "request", "egress", "docs.example.test:443", "--reason", "read the API docs")
	reqs := w.Pending(t)
	capReq, egReq := only(t, reqs, queue.KindCapability, a), only(t, reqs, queue.KindEgress, b)

	tm, scr := dash(t, w, dashboard.Options{})
	txt := scr.waitFor(t, 10*time.Second, a, b, capReq.ID, egReq.ID, "2 bottles (2 running)")
	for _, want := range []string{
		"IDENTITY", "AGENT", "BACKEND", "STATUS", "UPTIME", "CWD", "PRESERVED", "IMAGE", "EGRESS",
		"running", "test", "shell",
		"RUN apt-get install -y ripgrep", "need rg to search",
		"docs.example.test:443", "read the API docs",
		"2 bottles (2 running) · 2 pending requests",
	} {
		if !strings.Contains(txt, want) {
			t.Errorf("screen lacks %q:\n%s", want, txt)
		}
	}
	// The capability request (the older one) is selected: its diff shows.
	scr.waitFor(t, 5*time.Second, "+++ Dockerfile (requested)", "+RUN apt-get install -y ripgrep", "# approved request "+capReq.ID)

	// Moving to the egress request shows its host, reason and allowlist.
	keys(tm, "tab", "down")
	scr.waitFor(t, 5*time.Second, "egress request "+egReq.ID+" from "+b, "host: docs.example.test:443", "allowed now: -")
	for _, l := range strings.Split(scr.text(), "\n") {
		if len([]rune(l)) > width {
			t.Errorf("line wider than the terminal: %q", l)
		}
	}
}

// TestApproveCapabilityShowsResumeHint: pressing approve on a capability
// request goes through lifecycle.Approve (the `bot-bottle approve` path):
// the decision is recorded for the operator, the bottle is stopped
// preserved with the per-bottle Dockerfile, and the status line shows the
// resume hint.
func TestApproveCapabilityShowsResumeHint(t *testing.T) {
	w := operatortest.New(t, binDir)
	id := w.StartDetached(t, "shell", "sleep", "600")
	w.File(t, id, "request", "capability", "--run", "apt-get install -y jq", "--reason", "parse json")
	req := w.Pending(t)[0]

	tm, scr := dash(t, w, dashboard.Options{})
	scr.waitFor(t, 10*time.Second, req.ID, "running")
	keys(tm, "tab", "a")
	scr.waitFor(t, 20*time.Second, "approved "+req.ID, "bot-bottle resume "+id)

	got, err := queue.Open(w.Home).Get(req.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != queue.StatusApproved || got.DecidedBy != "user:tester" {
		t.Errorf("request after approve: %s by %q", got.Status, got.DecidedBy)
	}
	if ok, _ := w.Env.Store.IsPreserved(id); !ok {
		t.Error("bottle is not preserved")
	}
	df, err := w.Env.Store.ReadDockerfile(id)
	if err != nil || !strings.Contains(string(df), "RUN apt-get install -y jq") {
		t.Errorf("per-bottle Dockerfile %q, %v", df, err)
	}
	if h, _ := w.Env.Store.ReadHandle(id); h != nil {
		t.Error("the bottle still has a running handle after the approval")
	}
	evs, err := w.Env.Audit(id)
	if err != nil {
		t.Fatal(err)
	}
	var decided bool
	for _, ev := range evs {
		if ev.Kind == audit.KindDecision && ev.RequestID == req.ID && ev.Actor == "user:tester" &&
			strings.Contains(fmt.Sprint(ev.Fields["dockerfile_diff"]), "+RUN apt-get install -y jq") {
			decided = true
		}
	}
	if !decided {
		t.Errorf("no audited decision with the diff: %+v", evs)
	}
	// The request leaves the pane and the bottle shows stopped, preserved.
	scr.waitUntil(t, 10*time.Second, "drops the request and shows the bottle preserved", func(s string) bool {
		return strings.Contains(s, "no pending requests") && strings.Contains(s, "yes")
	})
	// A second approve (another dashboard, a supervisor) is refused.
	if _, err := w.NewEnv(t).Approve(context.Background(), req.ID, "user:late"); err == nil {
		t.Error("a second approval succeeded")
	}
}

// TestDenyAsksForReason: deny opens a reason prompt, its confirmation step
// (as commit and stop ask y/n): esc cancels, an empty reason is refused on
// the spot, a real one is recorded and shown.
func TestDenyAsksForReason(t *testing.T) {
	w := operatortest.New(t, binDir)
	id := w.StartDetached(t, "shell", "sleep", "600")
	w.File(t, id, "request", "egress", "evil.example.test", "--reason", "exfiltrate")
	req := w.Pending(t)[0]

	tm, scr := dash(t, w, dashboard.Options{})
	scr.waitFor(t, 10*time.Second, req.ID)
	keys(tm, "tab", "d")
	scr.waitFor(t, 5*time.Second, "deny "+req.ID+", reason")
	// The prompt is deny's confirmation step: esc backs out, deciding nothing.
	keys(tm, "esc")
	scr.waitFor(t, 5*time.Second, "deny cancelled")
	if r, _ := queue.Open(w.Home).Get(req.ID); r.Status != queue.StatusPending {
		t.Fatalf("esc at the deny prompt decided the request: %s", r.Status)
	}
	keys(tm, "d")
	scr.waitFor(t, 5*time.Second, "deny "+req.ID+", reason")
	keys(tm, "enter")
	scr.waitFor(t, 5*time.Second, "a denial needs a reason")
	if r, _ := queue.Open(w.Home).Get(req.ID); r.Status != queue.StatusPending {
		t.Fatalf("an empty reason decided the request: %s", r.Status)
	}
	keys(tm, "not on my watch", "enter")
	scr.waitFor(t, 10*time.Second, "denied "+req.ID, "not on my watch")
	r, err := queue.Open(w.Home).Get(req.ID)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != queue.StatusDenied || r.DecisionReason != "not on my watch" || r.DecidedBy != "user:tester" {
		t.Errorf("after deny: %+v", r)
	}
	// A denial changes nothing about the bottle.
	if h, _ := w.Env.Store.ReadHandle(id); h == nil {
		t.Error("the bottle stopped after a denial")
	}
}

// TestHangingBackendMarkedUnreachable: a backend whose List never answers
// does not hold the screen: requests show at once, and the bottles show
// within the deadline, marked unreachable.
func TestHangingBackendMarkedUnreachable(t *testing.T) {
	w := operatortest.New(t, binDir)
	id := w.StartDetached(t, "shell", "sleep", "600")
	w.File(t, id, "request", "egress", "docs.example.test", "--reason", "docs")
	req := w.Pending(t)[0]
	t.Setenv("BB_TESTPLUGIN_HANG_LIST", "1")

	const deadline = time.Second
	start := time.Now()
	_, scr := dash(t, w, dashboard.Options{ListDeadline: deadline})
	scr.waitFor(t, deadline/2, "asking the backends", req.ID)
	txt := scr.waitFor(t, deadline+3*time.Second, "unreachable")
	took := time.Since(start)
	t.Logf("unreachable shown after %s (deadline %s)", took.Round(time.Millisecond), deadline)
	if took < deadline {
		t.Errorf("unreachable after %s, before the deadline %s: the hang was not waited out", took, deadline)
	}
	// lifecycle words the warning by which of its deadline and the plugin's
	// own error comes first; either way it names the plugin.
	if !regexp.MustCompile(id+` +shell +test +unreachable`).MatchString(txt) || !strings.Contains(txt, "! test plugin: ") {
		t.Errorf("the bottle's row or the warning is missing:\n%s", txt)
	}
	// The screen stays live while the backend hangs: its clock moves on.
	clock := func(s string) string {
		first, _, _ := strings.Cut(s, "\n")
		return first[strings.LastIndex(first, " ")+1:]
	}
	was := clock(txt)
	scr.waitUntil(t, 3*time.Second, "moves its clock on from "+was, func(s string) bool { return clock(s) != was })
}

// TestFilterStopAndCommit: the filter narrows both panes; stop asks first
// and "n" keeps the bottle; stop-and-preserve keeps its state with the
// resume hint; commit on a backend without the capability says so.
func TestFilterStopAndCommit(t *testing.T) {
	w := operatortest.New(t, binDir)
	a := w.StartDetached(t, "shell", "sleep", "600")
	b := w.StartDetached(t, "shell", "sleep", "600")
	// What lifecycle prints goes to the screen, as `bot-bottle dashboard`
	// wires it.
	log := &dashboard.Log{}
	w.Env.Err = log

	tm, scr := dash(t, w, dashboard.Options{Log: log})
	scr.waitFor(t, 10*time.Second, a, b, "2 bottles (2 running)")
	keys(tm, "/", b, "enter")
	txt := scr.waitFor(t, 5*time.Second, "Bottles (1 of 2)")
	if strings.Contains(txt, a) {
		t.Errorf("filtered screen still shows %s:\n%s", a, txt)
	}

	// commit asks first: "n" (or any key but y) commits nothing
	keys(tm, "c")
	scr.waitFor(t, 5*time.Second, "commit "+b+"? it is then kept until bot-bottle rm (y/n)")
	keys(tm, "n")
	scr.waitFor(t, 5*time.Second, "cancelled")
	if ok, _ := w.Env.Store.IsPreserved(b); ok {
		t.Fatal("declining the commit kept the bottle")
	}
	keys(tm, "c")
	scr.waitFor(t, 5*time.Second, "commit "+b+"? it is then kept")
	keys(tm, "y")
	scr.waitFor(t, 10*time.Second, "commit "+b+" failed", "cannot commit")

	keys(tm, "s")
	scr.waitFor(t, 5*time.Second, "stop "+b+" and remove its state? (y/n)")
	keys(tm, "n")
	scr.waitFor(t, 5*time.Second, "cancelled")
	if h, _ := w.Env.Store.ReadHandle(b); h == nil {
		t.Fatal("declining the stop stopped the bottle")
	}

	keys(tm, "p")
	// lifecycle's own words join the status line of the action.
	scr.waitFor(t, 20*time.Second, "stopped "+b+", preserved · "+b+" is preserved; resume it with", "bot-bottle resume "+b)
	if ok, _ := w.Env.Store.IsPreserved(b); !ok {
		t.Error("stop-and-preserve did not preserve")
	}
	scr.waitFor(t, 10*time.Second, "stopped", "yes", "→ bring "+b+" back with")
	// The hint goes with its bottle: removed elsewhere, it is not resumable.
	if err := w.Env.Remove(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	scr.waitUntil(t, 10*time.Second, "drops the hint of the removed "+b, func(s string) bool {
		return !strings.Contains(s, "bring "+b+" back") && strings.Contains(s, "Bottles (0 of 1)")
	})

	// Clearing the filter brings the other bottle back; stop it for good.
	keys(tm, "esc")
	scr.waitFor(t, 5*time.Second, a)
	keys(tm, "burst:/"+a, "enter")
	scr.waitFor(t, 5*time.Second, `filter "`+a+`"`)
	keys(tm, "s", "y")
	scr.waitFor(t, 20*time.Second, "stopped "+a)
	deadline := time.Now().Add(10 * time.Second)
	for {
		ids, _ := w.Env.Store.Identities()
		if !contains(ids, a) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("state of %s still there after stop: %v", a, ids)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// TestDiffFlagsPrivilege: a capability request whose RUN makes a file
// setuid shows a marker above its diff; an ordinary one shows none.
func TestDiffFlagsPrivilege(t *testing.T) {
	w := operatortest.New(t, binDir)
	a := w.StartDetached(t, "shell", "sleep", "600")
	w.File(t, a, "request", "capability", "--run", "apt-get install -y x && chmod u+s /usr/bin/x", "--reason", "need x")
	w.Pending(t)
	_, scr := dash(t, w, dashboard.Options{})
	txt := scr.waitFor(t, 10*time.Second, "+RUN apt-get install -y x && chmod u+s /usr/bin/x")
	if !strings.Contains(txt, "! raises privilege: sets a setuid/setgid mode (chmod u+s)") {
		t.Errorf("the diff view does not flag the setuid:\n%s", txt)
	}
}
