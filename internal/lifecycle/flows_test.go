package lifecycle_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/bot-bottle/bot-bottle/internal/audit"
	"github.com/bot-bottle/bot-bottle/internal/config"
	"github.com/bot-bottle/bot-bottle/internal/lifecycle"
	"github.com/bot-bottle/bot-bottle/internal/pluginhost"
	"github.com/bot-bottle/bot-bottle/internal/queue"
	"github.com/bot-bottle/bot-bottle/internal/state"
	"github.com/bot-bottle/bot-bottle/internal/testbackend"
	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/backendtest"
	"github.com/bot-bottle/bot-bottle/sdk/host"
)

// inProcess serves one test backend value over real gRPC in this process,
// a fresh server per Start as a fresh plugin process would be.
type inProcess struct {
	t       *testing.T
	backend sdk.Backend
}

func (b inProcess) Start(ctx context.Context, name string) (*pluginhost.Plugin, error) {
	if name != "test" {
		return nil, fmt.Errorf("plugin %q is not installed", name)
	}
	p := backendtest.InProcess(b.t, b.backend)
	var gone atomic.Bool
	c, ok := p.Backend.(*host.Client)
	if !ok {
		return nil, fmt.Errorf("backendtest.InProcess gave a %T, not a *host.Client", p.Backend)
	}
	return pluginhost.InProcess(ctx, name, c, func() { gone.Store(true); p.Kill() }, gone.Load)
}

func (inProcess) Discover() ([]pluginhost.Found, []error) { return nil, nil }

type rig struct {
	t       *testing.T
	env     *lifecycle.Env
	backend sdk.Backend
	out     *bytes.Buffer
	msgs    *bytes.Buffer
}

// newRig is a home with one agent, "tsh", whose bottles run on the host
// through the test backend (with commit).
func newRig(t *testing.T) *rig { return rigAt(t, t.TempDir()) }

// rigAt is newRig on a given home, so that a second process (a test's child)
// can share it.
func rigAt(t *testing.T, home string) *rig {
	agentDir := filepath.Join(home, "agents", "tsh")
	if err := os.MkdirAll(agentDir, 0o700); err != nil {
		t.Fatal(err)
	}
	hcl := `description = "host shell"
image = "host"
command = ["sh", "-c", "exit 0"]
resume_command = ["sh", "-c", "exit 0"]
workdir = "/workspace"
`
	if err := os.WriteFile(filepath.Join(agentDir, "agent.hcl"), []byte(hcl), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, "plugins.hcl"), []byte("default_backend = \"test\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	store, err := state.Open(home)
	if err != nil {
		t.Fatal(err)
	}
	plugins, err := config.LoadPlugins(home)
	if err != nil {
		t.Fatal(err)
	}
	be := testbackend.New(filepath.Join(home, "tproot"), testbackend.Options{Commit: true})
	r := &rig{t: t, backend: be, out: &bytes.Buffer{}, msgs: &bytes.Buffer{}}
	r.env = &lifecycle.Env{Home: home, Store: store, Plugins: plugins, Backends: inProcess{t, be},
		Out: r.out, Err: r.msgs, Getenv: func(string) string { return "" }}
	t.Cleanup(func() {
		// Whatever a test left running goes with it.
		bs, _ := be.List(context.Background())
		for _, b := range bs {
			_, _ = be.Stop(context.Background(), sdk.StopRequest{Identity: b.Identity, RemoveSnapshots: true})
		}
	})
	return r
}

func (r *rig) start(cmd ...string) (string, int) {
	r.t.Helper()
	code, err := r.env.Start(context.Background(), lifecycle.StartOptions{Agent: "tsh", Command: cmd, Detach: len(cmd) > 0 && cmd[0] == "sleep"})
	if err != nil {
		r.t.Fatalf("start: %v\n%s", err, r.msgs)
	}
	ids, err := r.env.Store.List()
	if err != nil {
		r.t.Fatal(err)
	}
	if len(ids) == 0 {
		return "", code
	}
	return ids[len(ids)-1].Identity, code
}

func (r *rig) detached() string {
	r.t.Helper()
	id, _ := r.start("sleep", "30")
	if id == "" {
		r.t.Fatal("a detached start left no state")
	}
	return id
}

func (r *rig) exists(id string) bool {
	_, err := os.Stat(r.env.Store.Dir(id))
	return err == nil
}

func (r *rig) backendHas(id string) (sdk.Bottle, bool) {
	bs, err := r.backend.List(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	for _, b := range bs {
		if b.Identity == id {
			return b, true
		}
	}
	return sdk.Bottle{}, false
}

// tree is every file under dir with its bytes, to prove nothing changed.
func tree(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if fi.IsDir() {
			lines = append(lines, rel+"/")
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		lines = append(lines, rel+"="+string(data))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func TestStartOfADisposableBottleRemovesIt(t *testing.T) {
	r := newRig(t)
	id, code := r.start("sh", "-c", "echo hello; exit 7")
	if code != 7 {
		t.Fatalf("exit code %d, want 7", code)
	}
	if !strings.Contains(r.out.String(), "hello") {
		t.Fatalf("output %q", r.out)
	}
	ids, _ := r.env.Store.List()
	if len(ids) != 0 || id != "" {
		t.Fatalf("a disposable bottle's state is left: %v", ids)
	}
}

func TestStopWithoutPreserveRemovesADisposableBottle(t *testing.T) {
	r := newRig(t)
	id := r.detached()
	if err := r.env.Stop(context.Background(), id, false); err != nil {
		t.Fatal(err)
	}
	if r.exists(id) {
		t.Fatal("stop left the state of a bottle that was not kept")
	}
	if _, ok := r.backendHas(id); ok {
		t.Fatal("stop left the bottle on the backend")
	}
}

// A kept bottle whose resume fails is kept byte for byte, the audit says
// so, and revert followed by resume brings it back.
func TestFailedResumeKeepsTheBottle(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	id := r.detached()
	if err := r.env.Stop(ctx, id, true); err != nil {
		t.Fatal(err)
	}
	// What an approved capability whose RUN does not build leaves.
	if err := r.env.Store.WriteDockerfile(id, []byte("FROM host\nRUN false\n")); err != nil {
		t.Fatal(err)
	}
	if err := r.env.Store.WriteTranscript(id, []byte("transcript bytes")); err != nil {
		t.Fatal(err)
	}
	before := tree(t, r.env.Store.Dir(id))
	_, err := r.env.Resume(ctx, id, lifecycle.ResumeOptions{Command: []string{"true"}})
	if err == nil || !strings.Contains(err.Error(), "returned a non-zero code: 1") {
		t.Fatalf("resume: want the build's own error, got %v", err)
	}
	if after := tree(t, r.env.Store.Dir(id)); after != before {
		t.Fatalf("a failed resume changed the kept state:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if !strings.Contains(r.msgs.String(), "bot-bottle revert "+id) {
		t.Fatalf("the failure does not say how to drop the change:\n%s", r.msgs)
	}
	evs, err := audit.Open(r.env.Home).Read(id)
	if err != nil {
		t.Fatal(err)
	}
	if !hasKind(evs, audit.KindResumeFailed) {
		t.Fatalf("no %s event in the audit: %+v\n%s", audit.KindResumeFailed, evs, r.msgs)
	}
	rows, _, err := r.env.List(ctx)
	if err != nil || len(rows) != 1 || !rows[0].Preserved {
		t.Fatalf("list after the failure: %+v, %v", rows, err)
	}

	res, err := r.env.Revert(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.Dropped, "RUN false") {
		t.Fatalf("revert dropped %q", res.Dropped)
	}
	if _, ok := r.env.Store.DockerfilePath(id); ok {
		t.Fatal("revert left the Dockerfile that does not build")
	}
	code, err := r.env.Resume(ctx, id, lifecycle.ResumeOptions{Command: []string{"sh", "-c", "exit 4"}})
	if err != nil || code != 4 {
		t.Fatalf("resume after revert: %d, %v", code, err)
	}
	// Kept means kept until rm, across sessions.
	if !r.exists(id) {
		t.Fatal("a kept bottle was removed when its resumed session ended")
	}
	if _, err := r.env.Revert(ctx, id); err == nil {
		t.Fatal("a second revert with nothing changed succeeded")
	}
	if err := r.env.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	if r.exists(id) {
		t.Fatal("rm left the state")
	}
}

// commit → stop → resume → end: still kept with its snapshot; rm removes
// the bottle and its snapshots; prune removes a snapshot whose state is
// gone.
func TestSnapshotsBelongToTheirBottle(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	id := r.detached()
	ref, err := r.env.Commit(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.env.Stop(ctx, id, false); err != nil {
		t.Fatal(err)
	}
	if !r.exists(id) {
		t.Fatal("stop removed a committed (kept) bottle")
	}
	if _, err := r.env.Resume(ctx, id, lifecycle.ResumeOptions{Command: []string{"true"}}); err != nil {
		t.Fatal(err)
	}
	rows, _, err := r.env.List(ctx)
	if err != nil || len(rows) != 1 {
		t.Fatalf("list: %+v, %v", rows, err)
	}
	if !rows[0].Preserved || len(rows[0].Snapshots) != 1 || rows[0].Snapshots[0] != ref {
		t.Fatalf("the kept bottle is not listed with its snapshot %s: %+v", ref, rows[0])
	}
	if rows[0].Status == "orphan" || strings.HasPrefix(rows[0].Status, "orphan") {
		t.Fatalf("a kept bottle's snapshot shows as an orphan: %+v", rows[0])
	}
	// prune leaves a kept bottle's snapshots alone.
	if _, _, err := r.env.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	if b, ok := r.backendHas(id); !ok || len(b.Snapshots) != 1 {
		t.Fatalf("prune touched a kept bottle's snapshot: %+v", b)
	}
	if err := r.env.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	if b, ok := r.backendHas(id); ok {
		t.Fatalf("rm left %+v on the backend", b)
	}

	// A snapshot whose state was deleted by hand is prune's.
	id2 := r.detached()
	if _, err := r.env.Commit(ctx, id2); err != nil {
		t.Fatal(err)
	}
	if err := r.env.Stop(ctx, id2, false); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(r.env.Store.Dir(id2)); err != nil {
		t.Fatal(err)
	}
	rows, _, _ = r.env.List(ctx)
	if len(rows) != 1 || rows[0].InState || !strings.Contains(rows[0].Status, "snapshot") {
		t.Fatalf("an orphaned snapshot is not listed as one: %+v", rows)
	}
	removed, _, err := r.env.Prune(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b, ok := r.backendHas(id2); ok {
		t.Fatalf("prune left %+v (removed %v)", b, removed)
	}
}

// An approved RUN on a committed bottle builds FROM the snapshot, and the
// approver's diff is against that; a whole Dockerfile says it replaces it.
func TestCapabilityOnACommittedBottleBuildsOnItsSnapshot(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	id := r.detached()
	ref, err := r.env.Commit(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	run := queue.Request{ID: "r1", Identity: id, Kind: queue.KindCapability, Run: "touch /x"}
	p, err := r.env.Propose(run)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.Base, "FROM "+ref) || !strings.Contains(p.Next, "FROM "+ref) || !strings.Contains(p.Next, "RUN touch /x") {
		t.Fatalf("proposal is not on the snapshot:\nbase:\n%s\nnext:\n%s", p.Base, p.Next)
	}
	if len(p.Warnings) != 0 {
		t.Fatalf("a RUN on the snapshot warns: %v", p.Warnings)
	}
	whole := queue.Request{ID: "r2", Identity: id, Kind: queue.KindCapability, Dockerfile: "FROM other\n"}
	p, err = r.env.Propose(whole)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Warnings) != 1 || !strings.Contains(p.Warnings[0], "replaces") || !strings.Contains(p.Warnings[0], ref) {
		t.Fatalf("a whole Dockerfile on a committed bottle does not say it replaces the snapshot: %v", p.Warnings)
	}
}

func TestResumeOfARunningBottleIsRefused(t *testing.T) {
	r := newRig(t)
	id := r.detached()
	_, err := r.env.Resume(context.Background(), id, lifecycle.ResumeOptions{})
	if err == nil || !strings.Contains(err.Error(), "running detached") {
		t.Fatalf("resume of a running bottle: %v", err)
	}
	if !r.exists(id) {
		t.Fatal("the refused resume removed the bottle")
	}
}

func hasKind(evs []audit.Event, kind string) bool {
	for _, ev := range evs {
		if ev.Kind == kind {
			return true
		}
	}
	return false
}

// keeper is a backend whose stop of a bottle leaves something idle kept
// for the next start (as the docker plugin's egress proxy is), listed
// under its own name until Stop of that name removes it.
type keeper struct {
	sdk.Backend
	mu   sync.Mutex
	idle bool
}

const keptName = "kept-aaaaa"

func (k *keeper) List(ctx context.Context) ([]sdk.Bottle, error) {
	bs, err := k.Backend.List(ctx)
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.idle {
		bs = append(bs, sdk.Bottle{Identity: keptName, Status: sdk.StatusIdle, Resources: []string{"container " + keptName}})
	}
	return bs, err
}

func (k *keeper) Stop(ctx context.Context, req sdk.StopRequest) ([]string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if req.Identity == keptName {
		if !k.idle {
			return nil, nil
		}
		k.idle = false
		return []string{"container " + keptName}, nil
	}
	removed, err := k.Backend.Stop(ctx, req)
	k.idle = k.idle || len(removed) > 0
	return removed, err
}

// Prune leaves nothing idle that its own stops made so: what a backend
// keeps after the last stop of a crashed bottle goes in the same prune,
// and list shows it as idle, not as an orphan, before.
func TestPruneTakesWhatItsStopsLeftIdle(t *testing.T) {
	r := newRig(t)
	k := &keeper{Backend: r.backend}
	r.env.Backends = inProcess{t, k}
	ctx := context.Background()
	id := r.detached()
	if err := os.RemoveAll(r.env.Store.Dir(id)); err != nil {
		t.Fatal(err)
	}
	dry, _, err := r.env.PruneDryRun(ctx)
	if err != nil || len(dry) != 1 || !strings.HasPrefix(dry[0], id+":") {
		t.Fatalf("prune --dry-run: %v, %v, want the bottle %s only", dry, err, id)
	}
	removed, errs, err := r.env.Prune(ctx)
	if err != nil || len(errs) > 0 {
		t.Fatalf("prune: %v, %v", err, errs)
	}
	if !slices.Contains(removed, "container "+keptName) {
		t.Errorf("prune removed %v, not what its stop of %s left idle", removed, id)
	}
	if _, ok := r.backendHas(id); ok {
		t.Errorf("prune left %s", id)
	}
	bs, err := k.List(ctx)
	if err != nil || len(bs) != 0 {
		t.Errorf("after prune the backend lists %+v, %v", bs, err)
	}

	// Idle at the first look: listed as idle, and prune takes it.
	k.mu.Lock()
	k.idle = true
	k.mu.Unlock()
	rows, _, err := r.env.List(ctx)
	if err != nil || len(rows) != 1 || rows[0].Identity != keptName || rows[0].Status != sdk.StatusIdle {
		t.Fatalf("list: %+v, %v, want %s idle", rows, err, keptName)
	}
	if removed, _, err := r.env.Prune(ctx); err != nil || !slices.Contains(removed, "container "+keptName) {
		t.Errorf("prune of the idle %s: %v, %v", keptName, removed, err)
	}
}
