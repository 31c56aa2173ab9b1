package host_test

import (
	"bytes"
	"context"
	"io"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/backendtest"
)

// The round trip of every protobuf conversion: each request the core sends
// is encoded by this package, decoded by package sdk's server and recorded
// by the backend; each answer goes the other way. Every value is filled in
// completely (checked by allSet), so a field that a conversion drops, on
// either side, fails its round trip.

var (
	rtHandle = sdk.Handle{Version: 3, Backend: "rt", Identity: "rt-7k2qz", Data: []byte{0, 1, 2, 0xff}, ImageUser: "agent"}
	rtAgent  = sdk.Agent{Name: "rt", Description: "round trip", Dockerfile: "/a/Dockerfile", ContextDir: "/a",
		Image: "img:1", Command: []string{"run"}, ResumeCommand: []string{"resume"}, Workdir: "/w",
		EnvNames: []string{"TOKEN"}, TranscriptPath: "/t", Egress: []string{"a.test:443"}, CapAdd: []string{"NET_ADMIN"}, User: "agent",
		Credentials: []sdk.Credential{{Name: "api", EnvName: "API_KEY", Hosts: []string{"api.test"}, Header: "Authorization",
			Prefix: "Bearer ", Placeholder: "bbph-api-00112233445566778899aabbccddeeff"}}}
	rtSpec = sdk.Spec{Identity: "rt-7k2qz", Agent: rtAgent, Cwd: "/p", CopyCwd: true, BottleDockerfile: "/s/Dockerfile",
		CommittedImage: "snap:1", QueueDir: "/q", Env: map[string]string{"TOKEN": "v"}, Egress: []string{"b.test:80"},
		Command: []string{"sh"}, TTY: true, Resume: true, EgressLog: "/e.jsonl", Detach: true, HelperBinary: "/bin/bottle", SnapshotDir: "/snap",
		Credentials: map[string]string{"api": "s3cret"}}
	rtInfo = sdk.Info{Name: "rt", Version: "1.2.3", APIVersions: []string{"1.0.0"},
		Capabilities: []sdk.Capability{sdk.CapCommit, sdk.CapExec, sdk.CapCopy, sdk.CapLiveEgress, sdk.CapEgressAudit, sdk.CapCredentials},
		Details:      map[string]string{"engine": "x"}}
	rtPlan     = sdk.Plan{Preflight: []sdk.PreflightLine{{Key: "k", Value: "v"}}, Warnings: []string{"w"}, Data: []byte("plan")}
	rtProgress = sdk.Progress{Stage: "build", Message: "step 1", ID: "abc", Current: 5, Total: 9}
	rtAttach   = sdk.AttachRequest{Handle: rtHandle, TTY: true, Size: sdk.TermSize{Rows: 24, Cols: 80}, Stdin: true}
	rtExit     = sdk.ExitStatus{Code: 7, Detached: true}
	rtExec     = sdk.ExecRequest{Handle: rtHandle, Command: []string{"ls"}, Workdir: "/w", Stdin: []byte("in"), User: "root"}
	rtExecRes  = sdk.ExecResult{ExitCode: 3, Stdout: []byte("out"), Stderr: []byte("err")}
	rtCommit   = sdk.CommitResult{Image: "snap:2", Notes: []string{"note"}}
	rtStop     = sdk.StopRequest{Handle: &rtHandle, Identity: "rt-7k2qz", RemoveSnapshots: true}
	rtBottle   = sdk.Bottle{Identity: "rt-7k2qz", Agent: "rt", Status: sdk.StatusRunning, StartedAt: "2026-01-02T03:04:05Z",
		Resources: []string{"container x"}, Image: "img:1", Handle: &rtHandle, Snapshots: []string{"bot-bottle/rt-7k2qz:1"}}
)

// recorder answers every call with the values above and records what it got.
type recorder struct {
	mu  sync.Mutex
	got map[string]any
}

func (r *recorder) rec(k string, v any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got[k] = v
}

func (r *recorder) Info(context.Context) (sdk.Info, error) { return rtInfo, nil }

func (r *recorder) Prepare(_ context.Context, s sdk.Spec) (sdk.Plan, error) {
	r.rec("prepare", s)
	return rtPlan, nil
}

func (r *recorder) Launch(_ context.Context, s sdk.Spec, p sdk.Plan, progress func(sdk.Progress)) (sdk.Handle, error) {
	r.rec("launch", s)
	r.rec("launch plan", p)
	progress(rtProgress)
	return rtHandle, nil
}

func (r *recorder) Attach(ctx context.Context, req sdk.AttachRequest, s sdk.AttachStreams) (sdk.ExitStatus, error) {
	r.rec("attach", req)
	in, _ := io.ReadAll(s.Stdin)
	r.rec("stdin", string(in))
	r.rec("resize", <-s.Resize)
	r.rec("signal", <-s.Signals)
	_, _ = s.Stdout.Write([]byte("to stdout"))
	_, _ = s.Stderr.Write([]byte("to stderr"))
	return rtExit, nil
}

func (r *recorder) Exec(_ context.Context, req sdk.ExecRequest) (sdk.ExecResult, error) {
	r.rec("exec", req)
	return rtExecRes, nil
}

func (r *recorder) CopyIn(_ context.Context, h sdk.Handle, path string, tar []byte) error {
	r.rec("copy in", []any{h, path, string(tar)})
	return nil
}

func (r *recorder) CopyOut(_ context.Context, h sdk.Handle, path string) ([]byte, error) {
	r.rec("copy out", []any{h, path})
	return []byte("tar out"), nil
}

func (r *recorder) Commit(_ context.Context, h sdk.Handle, dir string) (sdk.CommitResult, error) {
	r.rec("commit", []any{h, dir})
	return rtCommit, nil
}

func (r *recorder) Stop(_ context.Context, req sdk.StopRequest) ([]string, error) {
	r.rec("stop", req)
	return []string{"container x", "network y"}, nil
}

func (r *recorder) List(context.Context) ([]sdk.Bottle, error) { return []sdk.Bottle{rtBottle}, nil }

func (r *recorder) UpdateEgress(_ context.Context, h sdk.Handle, egress []string) error {
	r.rec("update egress", []any{h, egress})
	return nil
}

func (r *recorder) SyncQueue(_ context.Context, h sdk.Handle, dir string) error {
	r.rec("sync queue", []any{h, dir})
	return nil
}

func (r *recorder) RevokeCredential(_ context.Context, h sdk.Handle, name string) error {
	r.rec("revoke", []any{h, name})
	return nil
}

func TestConversionRoundTrip(t *testing.T) {
	for name, v := range map[string]any{"spec": rtSpec, "info": rtInfo, "plan": rtPlan, "progress": rtProgress,
		"attach": rtAttach, "exit": rtExit, "exec": rtExec, "exec result": rtExecRes, "commit": rtCommit,
		"stop": rtStop, "bottle": rtBottle} {
		allSet(t, name, reflect.ValueOf(v))
	}
	r := &recorder{got: map[string]any{}}
	c := backendtest.InProcess(t, r)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := func(what string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s round trip:\n got %#v\nwant %#v", what, got, want)
		}
	}

	info, err := c.Info(ctx)
	must(t, err)
	want("Info", info, rtInfo)

	plan, err := c.Prepare(ctx, rtSpec)
	must(t, err)
	want("Prepare spec", r.got["prepare"], rtSpec)
	want("Plan", plan, rtPlan)

	var events []sdk.Progress
	h, err := c.Launch(ctx, rtSpec, plan, func(p sdk.Progress) { events = append(events, p) })
	must(t, err)
	want("Launch spec", r.got["launch"], rtSpec)
	// Only a plan's Data goes back to the plugin; the rest was for the operator.
	want("Launch plan", r.got["launch plan"], sdk.Plan{Data: rtPlan.Data})
	want("Progress", events, []sdk.Progress{rtProgress})
	want("Handle", h, rtHandle)

	resize := make(chan sdk.TermSize, 1)
	signals := make(chan string, 1)
	resize <- sdk.TermSize{Rows: 50, Cols: 132}
	signals <- "INT"
	var out, errOut bytes.Buffer
	st, err := c.Attach(ctx, rtAttach, sdk.AttachStreams{Stdin: strings.NewReader("typed"), Stdout: &out, Stderr: &errOut,
		Resize: resize, Signals: signals})
	must(t, err)
	want("AttachRequest", r.got["attach"], rtAttach)
	want("stdin", r.got["stdin"], "typed")
	want("resize", r.got["resize"], sdk.TermSize{Rows: 50, Cols: 132})
	want("signal", r.got["signal"], "INT")
	want("stdout", out.String(), "to stdout")
	want("stderr", errOut.String(), "to stderr")
	want("ExitStatus", st, rtExit)

	res, err := c.Exec(ctx, rtExec)
	must(t, err)
	want("ExecRequest", r.got["exec"], rtExec)
	want("ExecResult", res, rtExecRes)

	must(t, c.CopyIn(ctx, rtHandle, "/in", []byte("tar in")))
	want("CopyIn", r.got["copy in"], []any{rtHandle, "/in", "tar in"})
	tar, err := c.CopyOut(ctx, rtHandle, "/out")
	must(t, err)
	want("CopyOut", r.got["copy out"], []any{rtHandle, "/out"})
	want("CopyOut tar", string(tar), "tar out")

	cr, err := c.Commit(ctx, rtHandle, "/snapdir")
	must(t, err)
	want("Commit", r.got["commit"], []any{rtHandle, "/snapdir"})
	want("CommitResult", cr, rtCommit)

	removed, err := c.Stop(ctx, rtStop)
	must(t, err)
	want("StopRequest", r.got["stop"], rtStop)
	want("Stop removed", removed, []string{"container x", "network y"})
	if _, err := c.Stop(ctx, sdk.StopRequest{Identity: "rt-7k2qz"}); err != nil {
		t.Fatal(err)
	}
	want("StopRequest without a handle", r.got["stop"], sdk.StopRequest{Identity: "rt-7k2qz"})

	bottles, err := c.List(ctx)
	must(t, err)
	want("Bottle", bottles, []sdk.Bottle{rtBottle})

	must(t, c.UpdateEgress(ctx, rtHandle, []string{"c.test:443"}))
	want("UpdateEgress", r.got["update egress"], []any{rtHandle, []string{"c.test:443"}})

	must(t, c.RevokeCredential(ctx, rtHandle, "api"))
	want("RevokeCredential", r.got["revoke"], []any{rtHandle, "api"})

	must(t, c.SyncQueue(ctx, rtHandle, "/home/q/rt-7k2qz"))
	want("SyncQueue", r.got["sync queue"], []any{rtHandle, "/home/q/rt-7k2qz"})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// allSet fails when any field of v, however deep, is its zero value: a
// fixture with a zero field cannot show that the field survives.
func allSet(t *testing.T, path string, v reflect.Value) {
	t.Helper()
	if v.IsZero() {
		t.Errorf("round-trip fixture: %s is zero; set it so its conversion is tested", path)
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			allSet(t, path+"."+v.Type().Field(i).Name, v.Field(i))
		}
	case reflect.Pointer:
		allSet(t, path, v.Elem())
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return // bytes: a zero byte is data
		}
		for i := range v.Len() {
			allSet(t, path+"[]", v.Index(i))
		}
	}
}
