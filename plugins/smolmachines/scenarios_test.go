package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/term"
	"google.golang.org/grpc/codes"

	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/host"
)

// scenarios run against the fake smolvm and, with BOT_BOTTLE_SMOLVM_REAL=1,
// against a real one.
var scenarios = []struct {
	name string
	run  func(t *testing.T, r *rig)
}{
	{"StartWithCwdPrintsFileAndExitCode", scenarioCwd},
	{"CopyCwdNeverWritesHostTree", scenarioCopyCwd},
	{"InteractiveTTYWithResize", scenarioTTY},
	{"CommitThenResumeUsesFrom", scenarioCommitResume},
	{"CommitUnpackableGivesClearError", scenarioUnpackable},
	{"DetachedAgentThenAttach", scenarioDetached},
	{"ExecAndCopy", scenarioExecCopy},
	{"ErrorsCarrySmolvmMessage", scenarioErrors},
}

func TestScenariosFake(t *testing.T) {
	for _, s := range scenarios {
		t.Run(s.name, func(t *testing.T) { s.run(t, newRig(t, false)) })
	}
}

func TestScenariosRealSmolvm(t *testing.T) {
	requireRealSmolvm(t)
	for _, s := range scenarios {
		t.Run(s.name, func(t *testing.T) { s.run(t, newRig(t, true)) })
	}
}

const secretValue = "s3cr3t-value-7f3a91"

func secretEnv() map[string]string { return map[string]string{"BB_TEST_SECRET": secretValue} }

func projectDir(t *testing.T) string {
	d := t.TempDir()
	if err := os.WriteFile(filepath.Join(d, "hello.txt"), []byte("hello from the project\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

// attachPipes attaches without a TTY and returns stdout, stderr, status.
func attachPipes(t *testing.T, r *rig, h sdk.Handle) (string, string, sdk.ExitStatus) {
	t.Helper()
	var out, errb bytes.Buffer
	st, err := r.client.Attach(ctxT(t), sdk.AttachRequest{Handle: h}, sdk.AttachStreams{Stdout: &out, Stderr: &errb})
	if err != nil {
		t.Fatalf("attach: %v\nlogs:\n%s", err, r.logs)
	}
	return out.String(), errb.String(), st
}

func scenarioCwd(t *testing.T, r *rig) {
	ctx := ctxT(t)
	proj, queue := projectDir(t), t.TempDir()
	helper := filepath.Join(t.TempDir(), "bottle")
	if err := os.WriteFile(helper, []byte("#!/bin/sh\necho helper-ok\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	id := r.identity("cwd")
	spec := sdk.Spec{Identity: id, Agent: registryAgent("cwd"), Cwd: proj, QueueDir: queue, HelperBinary: helper,
		Env: secretEnv(), Command: []string{"sh", "-c",
			`cat hello.txt; echo "secret=$BB_TEST_SECRET id=$BOT_BOTTLE_IDENTITY queue=$BOT_BOTTLE_QUEUE egress=$BOT_BOTTLE_EGRESS"; bottle; exit 7`}}
	plan, err := r.client.Prepare(ctx, spec)
	if err != nil {
		t.Fatalf("prepare: %v", err)
	}
	if !strings.Contains(strings.Join(plan.Warnings, "\n"), "cannot filter egress by port") {
		t.Errorf("no port warning in %q", plan.Warnings)
	}
	if bytes.Contains(plan.Data, []byte(secretValue)) || strings.Contains(strings.Join(flatPreflight(plan), "\n"), secretValue) {
		t.Error("secret value in the plan")
	}
	h, err := r.client.Launch(ctx, spec, plan, nil)
	if err != nil {
		t.Fatalf("launch: %v\nlogs:\n%s", err, r.logs)
	}
	if h.Backend != "smolmachines" || h.Identity != id || h.Version != 1 {
		t.Errorf("handle = %+v", h)
	}
	if bytes.Contains(h.Data, []byte(secretValue)) {
		t.Error("secret value in the handle")
	}
	out, errOut, st := attachPipes(t, r, h)
	if st.Code != 7 || st.Detached {
		t.Errorf("exit status = %+v, want code 7; stderr %q", st, errOut)
	}
	for _, want := range []string{"hello from the project", "secret=" + secretValue, "id=" + id, "queue=" + sdk.GuestQueueDir, "egress=" + sdk.EgressAllowlist, "helper-ok"} {
		if !strings.Contains(out, want) {
			t.Errorf("agent output %q lacks %q", out, want)
		}
	}
	var listed bool
	bottles, err := r.client.List(ctx)
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	for _, b := range bottles {
		if b.Identity == id {
			listed = true
			if b.Agent != "cwd" || b.Status != sdk.StatusRunning {
				t.Errorf("listed bottle = %+v", b)
			}
		}
	}
	if !listed {
		t.Errorf("List does not show %s: %+v", id, bottles)
	}
	removed, err := r.client.Stop(ctx, sdk.StopRequest{Handle: &h, Identity: id})
	if err != nil {
		t.Fatalf("stop: %v", err)
	}
	if len(removed) != 1 || removed[0] != "machine bb-"+id {
		t.Errorf("removed = %q", removed)
	}
	if r.hasMachine("bb-" + id) {
		t.Error("machine still there after Stop")
	}
	if removed, err := r.client.Stop(ctx, sdk.StopRequest{Identity: id}); err != nil || len(removed) != 0 {
		t.Errorf("second stop = %q, %v; want nothing, nil", removed, err)
	}
	if r.real {
		return
	}
	creates := r.callsWith("machine", "create")
	if len(creates) != 1 {
		t.Fatalf("%d create calls", len(creates))
	}
	c := creates[0].Argv
	if got := argValue(c, "--secret-env"); !equal(got, []string{"BB_TEST_SECRET=BB_TEST_SECRET"}) {
		t.Errorf("--secret-env = %q", got)
	}
	if !contains(creates[0].EnvNames, "BB_TEST_SECRET") {
		t.Error("smolvm create ran without the secret in its environment")
	}
	if got := argValue(c, "--allow-host"); !equal(got, []string{"api.example.com"}) {
		t.Errorf("--allow-host = %q", got)
	}
	if got := argValue(c, "-v"); !contains(got, realPath(t, proj)+":/workspace") || !contains(got, realPath(t, queue)+":"+sdk.GuestQueueDir+":ro") {
		t.Errorf("-v = %q", got)
	}
	if got := argValue(c, "--label"); !contains(got, sdk.LabelIdentity+"="+id) || !contains(got, sdk.LabelManaged+"=true") {
		t.Errorf("--label = %q", got)
	}
	if got := argValue(c, "--image"); !equal(got, []string{"alpine"}) {
		t.Errorf("--image = %q", got)
	}
	r.checkCallRules(secretEnv())
	assertNoSecretInFiles(t, secretEnv(), r.state)
	if strings.Contains(r.logs.String(), secretValue) {
		t.Error("secret value in the plugin's logs")
	}
}

func realPath(t *testing.T, p string) string {
	q, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func flatPreflight(p sdk.Plan) []string {
	var out []string
	for _, l := range p.Preflight {
		out = append(out, l.Key+": "+l.Value)
	}
	return out
}

func scenarioCopyCwd(t *testing.T, r *rig) {
	ctx := ctxT(t)
	proj := projectDir(t)
	id := r.identity("copy")
	spec := sdk.Spec{Identity: id, Agent: registryAgent("copy"), Cwd: proj, CopyCwd: true,
		Command: []string{"sh", "-c", "cat hello.txt && echo new > created.txt && echo changed >> hello.txt"}}
	h, err := r.client.Launch(ctx, spec, sdk.Plan{}, nil)
	if err != nil {
		t.Fatalf("launch: %v\nlogs:\n%s", err, r.logs)
	}
	out, _, st := attachPipes(t, r, h)
	if st.Code != 0 || !strings.Contains(out, "hello from the project") {
		t.Errorf("status %+v, output %q", st, out)
	}
	if _, err := os.Stat(filepath.Join(proj, "created.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the agent wrote into the host tree: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(proj, "hello.txt")); string(b) != "hello from the project\n" {
		t.Errorf("host hello.txt changed: %q", b)
	}
	res, err := r.client.Exec(ctx, sdk.ExecRequest{Handle: h, Command: []string{"cat", "created.txt"}})
	if err != nil || res.ExitCode != 0 || string(res.Stdout) != "new\n" {
		t.Errorf("exec cat created.txt = %+v, %v", res, err)
	}
	if r.real {
		return
	}
	for _, v := range argValue(r.callsWith("machine", "create")[0].Argv, "-v") {
		if strings.HasSuffix(v, ":/workspace") {
			t.Errorf("copy-cwd mounted the project: -v %s", v)
		}
	}
	if len(r.callsWith("machine", "cp")) == 0 {
		t.Error("copy-cwd made no machine cp call")
	}
}

// scenarioTTY drives an interactive shell through a real pty on the test
// side (as the core's terminal) and the plugin's own pty on the other.
func scenarioTTY(t *testing.T, r *rig) {
	ctx := ctxT(t)
	id := r.identity("tty")
	spec := sdk.Spec{Identity: id, Agent: registryAgent("tty"), TTY: true, Command: []string{"sh"}}
	h, err := r.client.Launch(ctx, spec, sdk.Plan{}, nil)
	if err != nil {
		t.Fatalf("launch: %v\nlogs:\n%s", err, r.logs)
	}
	master, slave, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { master.Close(); slave.Close() })
	if _, err := term.MakeRaw(int(slave.Fd())); err != nil {
		t.Fatal(err)
	}
	screen := &syncBuffer{}
	go func() { _, _ = io.Copy(screen, master) }()
	resize := make(chan sdk.TermSize, 1)
	type result struct {
		st  sdk.ExitStatus
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := r.client.Attach(ctx, sdk.AttachRequest{Handle: h, TTY: true, Stdin: true, Size: sdk.TermSize{Rows: 24, Cols: 80}},
			sdk.AttachStreams{Stdin: slave, Stdout: slave, Resize: resize})
		done <- result{st, err}
	}()
	waitFor := func(what string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(screen.String(), what) {
			if time.Now().After(deadline) {
				t.Fatalf("screen never showed %q; screen:\n%q\nlogs:\n%s", what, screen.String(), r.logs)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	typeIn := func(s string) {
		if _, err := master.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	typeIn("echo tty=$(tty >/dev/null && echo yes)\n")
	waitFor("tty=yes")
	typeIn("stty size\n")
	waitFor("24 80")
	resize <- sdk.TermSize{Rows: 33, Cols: 101}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(screen.String(), "33 101") {
		if time.Now().After(deadline) {
			t.Fatalf("resize never reached the guest; screen:\n%q", screen.String())
		}
		typeIn("stty size\n")
		time.Sleep(200 * time.Millisecond)
	}
	typeIn("exit 5\n")
	select {
	case res := <-done:
		if res.err != nil || res.st.Code != 5 {
			t.Errorf("attach = %+v, %v; want code 5", res.st, res.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("attach did not end after exit; screen:\n%q", screen.String())
	}
	if r.real {
		return
	}
	var sawTTY bool
	for _, c := range r.callsWith("machine", "exec") {
		if hasArg(c.Argv, "-it") {
			sawTTY = true
			if !c.StdinTTY {
				t.Errorf("exec -it ran without a terminal on stdin: %q", c.Argv)
			}
			if len(argValue(c.Argv, "-w")) != 1 {
				t.Errorf("exec -it without -w: %q", c.Argv)
			}
		}
	}
	if !sawTTY {
		t.Error("no exec -it call recorded")
	}
	r.checkCallRules(nil)
}

func scenarioCommitResume(t *testing.T, r *rig) {
	ctx := ctxT(t)
	snap := t.TempDir()
	id := r.identity("commit")
	spec := sdk.Spec{Identity: id, Agent: registryAgent("commit"), Env: secretEnv(), Command: []string{"true"}, SnapshotDir: snap}
	h, err := r.client.Launch(ctx, spec, sdk.Plan{}, nil)
	if err != nil {
		t.Fatalf("launch: %v\nlogs:\n%s", err, r.logs)
	}
	res, err := r.client.Exec(ctx, sdk.ExecRequest{Handle: h, Command: []string{"sh", "-c", `echo kept > "$1"`, "sh", "/root/marker"}})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("write marker: %+v, %v", res, err)
	}
	cr, err := r.client.Commit(ctx, h, snap)
	if err != nil {
		t.Fatalf("commit: %v\nlogs:\n%s", err, r.logs)
	}
	if cr.Image != filepath.Join(snap, "bb-"+id+".smolmachine") {
		t.Errorf("commit image = %q", cr.Image)
	}
	if fi, err := os.Stat(cr.Image); err != nil || fi.Size() == 0 {
		t.Fatalf("snapshot file: %v", err)
	}
	if ents, _ := os.ReadDir(snap); len(ents) != 1 {
		t.Errorf("snapshot dir holds %d entries, want only the .smolmachine", len(ents))
	}
	if _, err := r.client.Stop(ctx, sdk.StopRequest{Handle: &h}); err != nil {
		t.Fatalf("stop: %v", err)
	}

	id2 := r.identity("resumed")
	spec2 := sdk.Spec{Identity: id2, Agent: registryAgent("commit"), Env: secretEnv(), CommittedImage: cr.Image,
		Command: []string{"cat", "/root/marker"}, Resume: true}
	plan, err := r.client.Prepare(ctx, spec2)
	if err != nil {
		t.Fatalf("prepare resume: %v", err)
	}
	if !strings.Contains(strings.Join(flatPreflight(plan), "\n"), "committed snapshot "+cr.Image) {
		t.Errorf("preflight does not name the snapshot: %q", flatPreflight(plan))
	}
	h2, err := r.client.Launch(ctx, spec2, plan, nil)
	if err != nil {
		t.Fatalf("launch from snapshot: %v\nlogs:\n%s", err, r.logs)
	}
	out, _, st := attachPipes(t, r, h2)
	if st.Code != 0 || out != "kept\n" {
		t.Errorf("resumed bottle: status %+v, output %q", st, out)
	}

	// A snapshot that is gone: warn and fall back to the agent's image.
	gone := sdk.Spec{Identity: r.identity("gone"), Agent: registryAgent("commit"), CommittedImage: filepath.Join(snap, "missing.smolmachine"), Command: []string{"true"}}
	plan, err = r.client.Prepare(ctx, gone)
	if err != nil || !strings.Contains(strings.Join(plan.Warnings, "\n"), "is gone") {
		t.Errorf("prepare with a missing snapshot: warnings %q, %v", plan.Warnings, err)
	}
	if r.real {
		return
	}
	var fromCreate bool
	for _, c := range r.callsWith("machine", "create") {
		if argValue(c.Argv, "--name")[0] == "bb-"+id2 {
			fromCreate = true
			if got := argValue(c.Argv, "--from"); !equal(got, []string{cr.Image}) || len(argValue(c.Argv, "--image")) != 0 {
				t.Errorf("resume create = %q, want --from %s and no --image", c.Argv, cr.Image)
			}
		}
	}
	if !fromCreate {
		t.Error("no create call for the resumed bottle")
	}
	if len(r.callsWith("machine", "stop", "--name", "bb-"+id)) != 1 || len(r.callsWith("pack", "create", "--from-vm", "bb-"+id)) != 1 {
		t.Error("commit did not stop then pack the machine")
	}
	r.checkCallRules(secretEnv())
	assertNoSecretInFiles(t, secretEnv(), snap, r.state)
}

// scenarioUnpackable commits a machine booted from a local image archive.
func scenarioUnpackable(t *testing.T, r *rig) {
	if r.real {
		t.Skip("needs a bootable local archive; TestDockerfileAgent covers it with a real build")
	}
	ctx := ctxT(t)
	archive := filepath.Join(t.TempDir(), "image.tar")
	writeTar(t, archive, map[string]string{"manifest.json": "[]"})
	id := r.identity("local")
	agent := sdk.Agent{Name: "local", Image: archive, Command: []string{"true"}}
	h, err := r.client.Launch(ctx, sdk.Spec{Identity: id, Agent: agent}, sdk.Plan{}, nil)
	if err != nil {
		t.Fatalf("launch: %v\nlogs:\n%s", err, r.logs)
	}
	assertUnpackable(t, r, h, "bb-"+id)
	if len(argValue(r.callsWith("machine", "create")[0].Argv, "--allow-host")) != 0 || hasArg(r.callsWith("machine", "create")[0].Argv, "--net") {
		t.Error("empty allowlist still got network flags")
	}
}

func assertUnpackable(t *testing.T, r *rig, h sdk.Handle, machine string) {
	t.Helper()
	snap := t.TempDir()
	_, err := r.client.Commit(ctxT(t), h, snap)
	if err == nil {
		t.Fatal("commit of a machine from a local archive succeeded")
	}
	msg := err.Error()
	if !strings.Contains(msg, "cannot pack") || !strings.Contains(msg, "local image") || strings.Contains(msg, "\n") {
		t.Errorf("commit error is not the clear one-line reason: %q", msg)
	}
	if ents, _ := os.ReadDir(snap); len(ents) != 0 {
		t.Errorf("failed commit left %d files in the snapshot dir", len(ents))
	}
	for _, m := range r.machines() {
		if m["name"] == machine && m["state"] != "running" {
			t.Errorf("failed commit left the machine %v", m["state"])
		}
	}
}

func writeTar(t *testing.T, path string, files map[string]string) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for n, c := range files {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(c)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write([]byte(c))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func scenarioDetached(t *testing.T, r *rig) {
	ctx := ctxT(t)
	id := r.identity("detach")
	spec := sdk.Spec{Identity: id, Agent: registryAgent("detach"), Detach: true, Env: secretEnv(),
		Command: []string{"sh", "-c", `echo started; sleep 1; echo "done $BB_TEST_SECRET"; exit 4`}}
	h, err := r.client.Launch(ctx, spec, sdk.Plan{}, nil)
	if err != nil {
		t.Fatalf("launch: %v\nlogs:\n%s", err, r.logs)
	}
	// A fresh plugin process, as `bot-bottle attach` from another terminal
	// would start, with the secret in its inherited environment.
	r2 := *r
	r2.env = append(append([]string{}, r.env...), "BB_TEST_SECRET="+secretValue)
	c2 := r2.start()
	var out, errb bytes.Buffer
	st, err := c2.Attach(ctx, sdk.AttachRequest{Handle: h}, sdk.AttachStreams{Stdout: &out, Stderr: &errb})
	if err != nil {
		t.Fatalf("attach: %v\nlogs:\n%s", err, r.logs)
	}
	if st.Code != 4 || !strings.Contains(out.String(), "started") || !strings.Contains(out.String(), "done "+secretValue) {
		t.Errorf("attach to detached agent: %+v, stdout %q, stderr %q", st, out.String(), errb.String())
	}
	if r.real {
		return
	}
	var detached bool
	for _, c := range r.callsWith("machine", "exec") {
		detached = detached || hasArg(c.Argv, "-d")
	}
	if !detached {
		t.Error("the agent was not started with exec -d")
	}
	r.checkCallRules(secretEnv())
}

func scenarioExecCopy(t *testing.T, r *rig) {
	ctx := ctxT(t)
	id := r.identity("exec")
	h, err := r.client.Launch(ctx, sdk.Spec{Identity: id, Agent: registryAgent("exec"), Command: []string{"true"}}, sdk.Plan{}, nil)
	if err != nil {
		t.Fatalf("launch: %v\nlogs:\n%s", err, r.logs)
	}
	res, err := r.client.Exec(ctx, sdk.ExecRequest{Handle: h, Command: []string{"sh", "-c", "echo out; echo err >&2; exit 1"}})
	if err != nil || res.ExitCode != 1 || string(res.Stdout) != "out\n" || string(res.Stderr) != "err\n" {
		t.Errorf("guest exit 1 = %+v (%q/%q), %v; want code 1 from the guest", res, res.Stdout, res.Stderr, err)
	}
	res, err = r.client.Exec(ctx, sdk.ExecRequest{Handle: h, Command: []string{"cat"}, Stdin: []byte("piped in")})
	if err != nil || string(res.Stdout) != "piped in" {
		t.Errorf("exec with stdin = %q, %v", res.Stdout, err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: "a.txt", Mode: 0o644, Size: 3, Typeflag: tar.TypeReg})
	_, _ = tw.Write([]byte("abc"))
	_ = tw.Close()
	if err := r.client.CopyIn(ctx, h, "/root/in", buf.Bytes()); err != nil {
		t.Fatalf("copy in: %v", err)
	}
	tb, err := r.client.CopyOut(ctx, h, "/root/in")
	if err != nil {
		t.Fatalf("copy out: %v", err)
	}
	files := map[string]string{}
	tr := tar.NewReader(bytes.NewReader(tb))
	for {
		hd, err := tr.Next()
		if err != nil {
			break
		}
		b, _ := io.ReadAll(tr)
		files[strings.TrimPrefix(hd.Name, "./")] = string(b)
	}
	if files["in/a.txt"] != "abc" {
		t.Errorf("copy out returned %v", files)
	}
}

func scenarioErrors(t *testing.T, r *rig) {
	ctx := ctxT(t)
	id := r.identity("errs")
	h, err := r.client.Launch(ctx, sdk.Spec{Identity: id, Agent: registryAgent("errs"), Command: []string{"true"}}, sdk.Plan{}, nil)
	if err != nil {
		t.Fatalf("launch: %v", err)
	}
	// A second launch of the same identity collides on the machine name.
	_, err = r.client.Launch(ctx, sdk.Spec{Identity: id, Agent: registryAgent("errs"), Command: []string{"true"}}, sdk.Plan{}, nil)
	var re *host.RemoteError
	if !errors.As(err, &re) || re.Code != codes.Unknown || !strings.Contains(re.Msg, "smolvm: ") || !strings.Contains(re.Msg, "already exists") {
		t.Errorf("duplicate launch error = %v", err)
	}
	if _, err := r.client.Stop(ctx, sdk.StopRequest{Handle: &h}); err != nil {
		t.Fatal(err)
	}
	_, err = r.client.Exec(ctx, sdk.ExecRequest{Handle: h, Command: []string{"true"}})
	if err == nil || !strings.Contains(err.Error(), "smolvm: vm not found: bb-"+id) {
		t.Errorf("exec on a deleted machine = %v, want smolvm's not-found message", err)
	}
	if !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("exec on a deleted machine = %v, want ErrNotFound", err)
	}
	// Attach asks status first, which words "no such machine" its own way
	// (status_vm_json, src/cli/vm_common.rs:2532); it is a NotFound too.
	_, err = r.client.Attach(ctx, sdk.AttachRequest{Handle: h}, sdk.AttachStreams{})
	if err == nil || !strings.Contains(err.Error(), "machine status: machine 'bb-"+id+"' not found") || !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("attach on a deleted machine = %v, want smolvm's status not-found message as ErrNotFound", err)
	}
}
