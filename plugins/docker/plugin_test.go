package main_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"

	"github.com/bot-bottle/bot-bottle/internal/testenv"
	"github.com/bot-bottle/bot-bottle/sdk"
)

const secretValue = "s3cr3t-do-not-leak-4711"

func TestInfo(t *testing.T) {
	cli := testenv.RequireDocker(t)
	t.Parallel()
	p := startPlugin(t)
	ctx := ctxT(t, 30*time.Second)
	info, err := p.be.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "docker" || !info.Has(sdk.CapCommit) || !info.Has(sdk.CapExec) || !info.Has(sdk.CapCopy) || !info.Has(sdk.CapLiveEgress) || !info.Has(sdk.CapEgressAudit) {
		t.Errorf("info = %+v", info)
	}
	v, err := cli.ServerVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Details["engine"] != v.Version {
		t.Errorf("engine detail %q, want %q", info.Details["engine"], v.Version)
	}
}

// Without an engine, Info still answers and Prepare says where it looked, on
// one line.
func TestEngineUnreachable(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "no-docker.sock")
	p := startPlugin(t, "DOCKER_HOST=unix://"+sock)
	ctx := ctxT(t, 30*time.Second)
	info, err := p.be.Info(ctx)
	if err != nil {
		t.Fatalf("Info failed without an engine: %v", err)
	}
	if info.Details["engine"] != "unreachable" {
		t.Errorf("engine detail %q, want unreachable", info.Details["engine"])
	}
	_, err = p.be.Prepare(ctx, sdk.Spec{Identity: "shell-abcde", Agent: sdk.Agent{Name: "shell", Image: "x"}})
	if err == nil {
		t.Fatal("Prepare succeeded without an engine")
	}
	msg := err.Error()
	if !strings.Contains(msg, "cannot reach the Docker Engine at unix://"+sock) || strings.Contains(msg, "\n") {
		t.Errorf("error %q: want one line naming the engine address", msg)
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, time.Minute)
	a := e.agent("bad")
	for name, tc := range map[string]struct {
		spec   sdk.Spec
		config map[string]any
		want   string
	}{
		"config":   {sdk.Spec{Identity: "bad-aaaaa", Agent: a}, map[string]any{"memory": "lots"}, `memory "lots"`},
		"identity": {sdk.Spec{Identity: "../etc", Agent: a}, nil, "invalid bottle identity"},
		"cwd":      {sdk.Spec{Identity: "bad-aaaaa", Agent: a, Cwd: "/does/not/exist"}, nil, "project directory"},
		"source":   {sdk.Spec{Identity: "bad-aaaaa", Agent: sdk.Agent{Name: "empty"}}, nil, "neither a Dockerfile nor an image"},
	} {
		p := e.p
		if tc.config != nil {
			p = e.startPlugin(tc.config)
		}
		_, err := p.be.Prepare(ctx, tc.spec)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %v, want one line mentioning %q", name, err, tc.want)
		}
	}
}

// The acceptance's first scenario at the plugin level: a command in a
// bind-mounted project prints, exits 7, sees its secret, and Stop removes
// everything; the secret is in no plan, handle or log.
func TestRunWithCwd(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 3*time.Minute)
	cwd := t.TempDir()
	if err := os.Chmod(cwd, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cwd, "marker"), []byte("marker-content-42\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a := e.agent("cwd")
	id := e.identity("cwd")
	spec := e.spec(a, id, "sh", "-c", `cat /workspace/marker; [ "$BB_TOKEN" = "`+secretValue+`" ] && echo token-seen >&2; echo "$BOT_BOTTLE_IDENTITY" > /workspace/from-guest; exit 7`)
	spec.Cwd = cwd
	spec.Env = map[string]string{"BB_TOKEN": secretValue}

	plan, h, _ := e.launch(ctx, spec)
	pre := preflightText(plan)
	for _, want := range []string{"image source: agent Dockerfile " + a.Dockerfile, "mount: " + cwd + " -> /workspace", "env: BB_TOKEN", "limits: memory 4g, pids 512"} {
		if !strings.Contains(pre, want) {
			t.Errorf("preflight lacks %q:\n%s", want, pre)
		}
	}
	for what, b := range map[string]string{"preflight": pre, "plan data": string(plan.Data), "warnings": strings.Join(plan.Warnings, "\n"), "handle": string(h.Data)} {
		if strings.Contains(b, secretValue) {
			t.Errorf("%s holds the secret value", what)
		}
	}

	s := e.run(ctx, h, nil)
	if s.status.Code != 7 || s.status.Detached {
		t.Errorf("exit = %+v, want code 7", s.status)
	}
	if s.stdout != "marker-content-42\n" {
		t.Errorf("stdout = %q", s.stdout)
	}
	if strings.TrimSpace(s.stderr) != "token-seen" {
		t.Errorf("stderr = %q, want the agent to see its token", s.stderr)
	}
	// The mount is live both ways.
	if b, err := os.ReadFile(filepath.Join(cwd, "from-guest")); err != nil || strings.TrimSpace(string(b)) != id {
		t.Errorf("host sees from-guest = %q, %v", b, err)
	}

	bottles, err := e.p.be.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, b := range bottles {
		if b.Identity == id {
			found = true
			if b.Agent != "cwd" || b.Status != sdk.StatusExited || b.Handle == nil || !strings.HasPrefix(b.Image, "bot-bottle-agent/cwd:") || b.StartedAt == "" {
				t.Errorf("listed as %+v", b)
			}
		}
	}
	if !found {
		t.Errorf("List lacks %s: %+v", id, bottles)
	}

	removed := e.stop(ctx, sdk.StopRequest{Handle: &h, Identity: id})
	if len(removed) != 1 || removed[0] != "container bot-bottle-"+id {
		t.Errorf("removed %v, want the container (no egress, so no network)", removed)
	}
	e.assertGone(ctx, id)
	// Stop is idempotent.
	if again := e.stop(ctx, sdk.StopRequest{Handle: &h}); len(again) != 0 {
		t.Errorf("second stop removed %v", again)
	}
	if strings.Contains(e.p.logs.String(), secretValue) {
		t.Error("plugin logs hold the secret value")
	}
}

func TestPipedStdin(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 3*time.Minute)
	id := e.identity("pipe")
	_, h, _ := e.launch(ctx, e.spec(e.agent("pipe"), id, "sh", "-c", "tr a-z A-Z; echo eof-seen >&2"))
	s := e.run(ctx, h, strings.NewReader("hello\nworld\n"))
	if s.status.Code != 0 || s.stdout != "HELLO\nWORLD\n" || strings.TrimSpace(s.stderr) != "eof-seen" {
		t.Errorf("session = %+v, want HELLO WORLD on stdout, eof-seen on stderr, exit 0", s)
	}
	e.stop(ctx, sdk.StopRequest{Handle: &h})
	e.assertGone(ctx, id)
}

// Without input, the agent's stdin is closed rather than left open forever.
func TestNoStdinMeansEOF(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 3*time.Minute)
	id := e.identity("nostdin")
	_, h, _ := e.launch(ctx, e.spec(e.agent("nostdin"), id, "sh", "-c", "cat; echo done"))
	s := e.run(ctx, h, nil)
	if s.status.Code != 0 || s.stdout != "done\n" {
		t.Errorf("session = %+v", s)
	}
	e.stop(ctx, sdk.StopRequest{Handle: &h})
}

func TestTTYResize(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 3*time.Minute)
	id := e.identity("tty")
	spec := e.spec(e.agent("tty"), id, "sh")
	spec.TTY = true
	_, h, _ := e.launch(ctx, spec)

	inR, inW := io.Pipe()
	defer inW.Close()
	resize := make(chan sdk.TermSize, 1)
	var out syncBuffer
	type result struct {
		st  sdk.ExitStatus
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := e.p.be.Attach(ctx, sdk.AttachRequest{Handle: h, TTY: true, Stdin: true, Size: sdk.TermSize{Rows: 24, Cols: 80}},
			sdk.AttachStreams{Stdin: inR, Stdout: &out, Resize: resize})
		done <- result{st, err}
	}()
	// Type once the prompt is there, as a person would: the engine can only
	// size a terminal after the agent has started.
	out.waitFor(t, "$ ", 20*time.Second)
	io.WriteString(inW, "echo \"term=$TERM\"\n")
	out.waitFor(t, "term=xterm", 5*time.Second)
	// A size travels on its own path, next to the input; ask until the
	// shell sees it.
	waitSize := func(want string) {
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(out.String(), want) && time.Now().Before(deadline) {
			io.WriteString(inW, "stty size\n")
			time.Sleep(200 * time.Millisecond)
		}
		if !strings.Contains(out.String(), want) {
			t.Fatalf("stty size never showed %s: %q", want, out.String())
		}
	}
	waitSize("24 80")
	resize <- sdk.TermSize{Rows: 50, Cols: 132}
	waitSize("50 132")
	io.WriteString(inW, "exit 3\n")
	select {
	case r := <-done:
		if r.err != nil || r.st.Code != 3 {
			t.Errorf("attach = %+v, %v; want exit 3", r.st, r.err)
		}
	case <-ctx.Done():
		t.Fatal("the TTY session did not end")
	}
	e.stop(ctx, sdk.StopRequest{Handle: &h})
	e.assertGone(ctx, id)
}

// A detached bottle keeps running when an attach is cancelled, and a second
// attach gets its input and exit code.
func TestDetachAndReattach(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 3*time.Minute)
	id := e.identity("detach")
	spec := e.spec(e.agent("detach"), id, "sh", "-c", "read x; echo got-$x; exit 4")
	spec.Detach = true
	_, h, _ := e.launch(ctx, spec)

	// The core detaches by cancelling, not by a deadline (a deadline also
	// travels to the plugin, which may end the stream first).
	actx, cancel := context.WithCancel(ctx)
	time.AfterFunc(500*time.Millisecond, cancel)
	st, err := e.p.be.Attach(actx, sdk.AttachRequest{Handle: h}, sdk.AttachStreams{Stdout: io.Discard})
	cancel()
	if err != nil || !st.Detached {
		t.Fatalf("cancelled attach = %+v, %v; want detached", st, err)
	}
	insp, err := e.cli.ContainerInspect(ctx, "bot-bottle-"+id)
	if err != nil || !insp.State.Running {
		t.Fatalf("container not running after detach: %v", err)
	}
	// A fresh plugin process reattaches from the handle alone.
	e.p = e.startPlugin(nil)
	s := e.run(ctx, h, strings.NewReader("hi\n"))
	if s.status.Code != 4 || s.stdout != "got-hi\n" {
		t.Errorf("reattach = %+v", s)
	}
	e.stop(ctx, sdk.StopRequest{Handle: &h})
	e.assertGone(ctx, id)
}

// A detach while the first attach is still starting the agent, before any
// output or on its first byte, leaves the agent running: the start is not
// the session's to cancel, and the detach returns once it is done. (It
// failed one CI run: a start cancelled half-way left the container created.)
func TestDetachDuringFirstStart(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 4*time.Minute)
	agent := e.agent("first")
	// 0: on the first byte of output; otherwise that long after the call.
	for _, after := range []time.Duration{0, 5 * time.Millisecond, 20 * time.Millisecond, 60 * time.Millisecond, 150 * time.Millisecond} {
		id := e.identity("first")
		_, h, _ := e.launch(ctx, e.spec(agent, id, "sh", "-c", "echo up; sleep 300"))
		actx, cancel := context.WithCancel(ctx)
		var out io.Writer = io.Discard
		if after == 0 {
			out = writerFunc(func(p []byte) (int, error) { cancel(); return len(p), nil })
		} else {
			time.AfterFunc(after, cancel)
		}
		st, err := e.p.be.Attach(actx, sdk.AttachRequest{Handle: h}, sdk.AttachStreams{Stdout: out, Stderr: io.Discard})
		cancel()
		if err != nil || !st.Detached {
			t.Fatalf("detach %v into the first attach = %+v, %v; want detached", after, st, err)
		}
		insp, err := e.cli.ContainerInspect(ctx, "bot-bottle-"+id)
		if err != nil {
			t.Fatal(err)
		}
		if !insp.State.Running {
			t.Errorf("detach %v into the first attach: right after it the agent is %q, want running", after, insp.State.Status)
		}
		e.stop(ctx, sdk.StopRequest{Handle: &h})
		e.assertGone(ctx, id)
	}
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestExecAndCopy(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 3*time.Minute)
	id := e.identity("copy")
	spec := e.spec(e.agent("copy"), id, "sleep", "300")
	spec.Detach = true
	_, h, _ := e.launch(ctx, spec)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	body := []byte("transcript line\n")
	tw.WriteHeader(&tar.Header{Name: "notes/hello.txt", Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
	tw.Write(body)
	tw.Close()
	if err := e.p.be.CopyIn(ctx, h, "/home/agent", buf.Bytes()); err != nil {
		t.Fatalf("copy in: %v", err)
	}
	res, err := e.p.be.Exec(ctx, sdk.ExecRequest{Handle: h, Command: []string{"sh", "-c", "cat notes/hello.txt; stat -c %u notes/hello.txt; echo oops >&2; exit 5"}, Workdir: "/home/agent"})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 5 || string(res.Stdout) != "transcript line\n1000\n" || string(res.Stderr) != "oops\n" {
		t.Errorf("exec = code %d, stdout %q, stderr %q", res.ExitCode, res.Stdout, res.Stderr)
	}
	res, err = e.p.be.Exec(ctx, sdk.ExecRequest{Handle: h, Command: []string{"sh", "-c", "tr a-z A-Z >> notes/hello.txt"}, Workdir: "/home/agent", Stdin: []byte("from exec\n")})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("exec with stdin = %+v, %v", res, err)
	}

	out, err := e.p.be.CopyOut(ctx, h, "/home/agent/notes/hello.txt")
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(bytes.NewReader(out))
	hdr, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(tr)
	if hdr.Name != "hello.txt" || string(got) != "transcript line\nFROM EXEC\n" {
		t.Errorf("copy out: %s = %q", hdr.Name, got)
	}
	_, err = e.p.be.CopyOut(ctx, h, "/no/such/file")
	if !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("copy out of a missing path: %v, want ErrNotFound", err)
	}
	e.stop(ctx, sdk.StopRequest{Handle: &h})
	e.assertGone(ctx, id)
	if _, err := e.p.be.Exec(ctx, sdk.ExecRequest{Handle: h, Command: []string{"true"}}); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("exec in a stopped bottle: %v, want ErrNotFound", err)
	}
}

func TestCommitAndResume(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 5*time.Minute)
	a := e.agent("snap")
	id := e.identity("snap")
	spec := e.spec(a, id, "sleep", "300")
	spec.Detach = true
	spec.Env = map[string]string{"BB_TOKEN": secretValue}
	_, h, _ := e.launch(ctx, spec)
	// The core switches an approved RUN back to this user.
	if h.ImageUser != "agent" {
		t.Errorf("launch reported image user %q, want the built image's agent", h.ImageUser)
	}
	res, err := e.p.be.Exec(ctx, sdk.ExecRequest{Handle: h, Command: []string{"sh", "-c", "echo before-commit > /home/agent/note"}})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("exec = %+v, %v", res, err)
	}
	cr, err := e.p.be.Commit(ctx, h, t.TempDir())
	if err != nil {
		t.Fatalf("commit: %v", err)
	}
	if !strings.HasPrefix(cr.Image, "bot-bottle/"+id+":") || len(cr.Image) != len("bot-bottle/"+id+":20060102T150405Z") {
		t.Errorf("snapshot ref %q", cr.Image)
	}
	ii, raw, err := e.cli.ImageInspectWithRaw(ctx, cr.Image)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(secretValue)) {
		t.Errorf("snapshot image holds the secret value: %s", raw)
	}
	hist, err := e.cli.ImageHistory(ctx, cr.Image)
	if err != nil {
		t.Fatal(err)
	}
	for _, hi := range hist {
		if strings.Contains(hi.CreatedBy, secretValue) || strings.Contains(hi.Comment, secretValue) {
			t.Errorf("snapshot history holds the secret: %+v", hi)
		}
	}
	if ii.Config.User != "agent" || ii.Config.Labels[sdk.LabelIdentity] != id || ii.Config.Labels[testenv.Label] != e.label {
		t.Errorf("snapshot config: user %q, labels %v", ii.Config.User, ii.Config.Labels)
	}
	// No raw commit is left beside the snapshot.
	left, err := e.cli.ImageList(ctx, image.ListOptions{All: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range left {
		if im.Labels["dev.bot-bottle.kind"] == "commit-tmp" && im.Labels[sdk.LabelIdentity] == id {
			t.Errorf("raw commit %s left behind", im.ID)
		}
	}

	e.stop(ctx, sdk.StopRequest{Handle: &h})
	e.assertGone(ctx, id)
	if _, err := e.cli.ImageInspect(ctx, cr.Image); err != nil {
		t.Fatalf("Stop removed the snapshot: %v", err)
	}

	// Resume: same identity, from the snapshot.
	rs := e.spec(a, id, "cat", "/home/agent/note")
	rs.CommittedImage = cr.Image
	rs.Resume = true
	plan, h2, _ := e.launch(ctx, rs)
	if !hasLine(plan, "image source", "committed image "+cr.Image) || len(plan.Warnings) != 0 {
		t.Errorf("plan = %+v", plan)
	}
	if h2.ImageUser != "agent" {
		t.Errorf("launch from the snapshot reported image user %q, want its agent", h2.ImageUser)
	}
	s := e.run(ctx, h2, nil)
	if s.status.Code != 0 || s.stdout != "before-commit\n" {
		t.Errorf("resumed session = %+v", s)
	}
	e.stop(ctx, sdk.StopRequest{Handle: &h2})

	// With the snapshot gone, resume falls back to the Dockerfile and says so.
	if _, err := e.cli.ImageRemove(ctx, cr.Image, image.RemoveOptions{Force: true, PruneChildren: true}); err != nil {
		t.Fatal(err)
	}
	rs.Command = []string{"sh", "-c", "cat /home/agent/note 2>/dev/null || echo no-note"}
	plan, h3, pl := e.launch(ctx, rs)
	wantWarn := "committed image " + cr.Image + " is gone; falling back to agent Dockerfile " + a.Dockerfile
	if len(plan.Warnings) != 1 || plan.Warnings[0] != wantWarn {
		t.Errorf("warnings = %q, want %q", plan.Warnings, wantWarn)
	}
	if !hasLine(plan, "image source", "agent Dockerfile "+a.Dockerfile) {
		t.Errorf("preflight = %+v", plan.Preflight)
	}
	if !strings.Contains(pl.String(), "is gone; falling back") {
		t.Errorf("launch progress does not say it fell back:\n%s", pl)
	}
	if s := e.run(ctx, h3, nil); s.stdout != "no-note\n" {
		t.Errorf("fallback session = %+v", s)
	}
	e.stop(ctx, sdk.StopRequest{Handle: &h3})
	e.assertGone(ctx, id)
}

func hasLine(p sdk.Plan, key, value string) bool {
	for _, l := range p.Preflight {
		if l.Key == key && l.Value == value {
			return true
		}
	}
	return false
}

func TestCopyCwd(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 3*time.Minute)
	proj := t.TempDir()
	files := map[string]string{"proj.txt": "original\n", "ignored.txt": "nope\n", ".dockerignore": "ignored.txt\n"}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(proj, n), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	id := e.identity("copycwd")
	spec := e.spec(e.agent("copycwd"), id, "sh", "-c",
		"cat /workspace/proj.txt; ls -A /workspace | tr '\\n' ' '; echo; echo new > /workspace/written && echo changed > /workspace/proj.txt && echo wrote")
	spec.Cwd = proj
	spec.CopyCwd = true
	plan, h, _ := e.launch(ctx, spec)
	if !hasLine(plan, "project", proj+" copied into a per-bottle image layer at /workspace (the host tree is not written)") {
		t.Errorf("preflight = %+v", plan.Preflight)
	}
	s := e.run(ctx, h, nil)
	lines := strings.Split(s.stdout, "\n")
	if s.status.Code != 0 || len(lines) < 3 || lines[0] != "original" || lines[2] != "wrote" {
		t.Fatalf("session = %+v", s)
	}
	listing := strings.Fields(lines[1])
	if !contains(listing, "proj.txt") || contains(listing, "ignored.txt") || contains(listing, ".bot-bottle.Dockerfile") {
		t.Errorf("workspace holds %v: want proj.txt, without the ignored file or the private Dockerfile", listing)
	}
	if b, _ := os.ReadFile(filepath.Join(proj, "proj.txt")); string(b) != "original\n" {
		t.Errorf("host proj.txt = %q: the copy wrote through", b)
	}
	if _, err := os.Stat(filepath.Join(proj, "written")); !os.IsNotExist(err) {
		t.Errorf("a file written inside reached the host tree: %v", err)
	}
	removed := e.stop(ctx, sdk.StopRequest{Handle: &h})
	if !contains(removed, "image bot-bottle-cwd/"+id+":latest") {
		t.Errorf("removed %v, want the per-bottle image", removed)
	}
	e.assertGone(ctx, id)
}

func TestHardening(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 3*time.Minute)
	a := e.agent("hard")
	a.CapAdd = []string{"NET_BIND_SERVICE"}
	id := e.identity("hard")
	spec := e.spec(a, id, "sh", "-c", "grep -E '^(CapBnd|NoNewPrivs)' /proc/self/status; id -u; echo nics: $(ls /sys/class/net)")
	e.configure(map[string]any{"memory": "256m", "pids_limit": 64})
	queue := t.TempDir()
	spec.QueueDir = queue
	_, h, _ := e.launch(ctx, spec)

	insp, err := e.cli.ContainerInspect(ctx, "bot-bottle-"+id)
	if err != nil {
		t.Fatal(err)
	}
	hc := insp.HostConfig
	if hc.Privileged || !contains(hc.CapDrop, "ALL") || !(contains(hc.CapAdd, "NET_BIND_SERVICE") || contains(hc.CapAdd, "CAP_NET_BIND_SERVICE")) {
		t.Errorf("privileged %v, cap drop %v, cap add %v", hc.Privileged, hc.CapDrop, hc.CapAdd)
	}
	seccomp := false
	for _, o := range hc.SecurityOpt {
		seccomp = seccomp || strings.HasPrefix(o, "seccomp={")
	}
	if !contains(hc.SecurityOpt, "no-new-privileges") || !seccomp || len(hc.SecurityOpt) != 2 {
		t.Errorf("security opts %.200q, want no-new-privileges and a seccomp profile", hc.SecurityOpt)
	}
	if hc.Init == nil || !*hc.Init {
		t.Errorf("init %v, want the engine's init", hc.Init)
	}
	if hc.Memory != 256<<20 || hc.PidsLimit == nil || *hc.PidsLimit != 64 {
		t.Errorf("memory %d, pids %v", hc.Memory, hc.PidsLimit)
	}
	for _, m := range insp.Mounts {
		if m.Source != queue || m.Destination != sdk.GuestQueueDir {
			t.Errorf("unexpected mount %s -> %s", m.Source, m.Destination)
		}
	}
	if len(insp.Mounts) != 1 {
		t.Errorf("mounts %+v, want only the queue dir", insp.Mounts)
	}
	for _, env := range insp.Config.Env {
		if env == sdk.EnvQueueDir+"="+sdk.GuestQueueDir {
			goto envOK
		}
	}
	t.Errorf("env %v lacks %s", insp.Config.Env, sdk.EnvQueueDir)
envOK:
	// No egress allowed: no network at all.
	if hc.NetworkMode != "none" {
		t.Errorf("network mode %q, want none", hc.NetworkMode)
	}
	if insp.Config.Labels[sdk.LabelAgent] != "hard" || insp.Config.Labels[sdk.LabelIdentity] != id {
		t.Errorf("container labels %v", insp.Config.Labels)
	}

	s := e.run(ctx, h, nil)
	// NET_BIND_SERVICE is capability 10: the only bit left in the bounding set.
	for _, want := range []string{"CapBnd:\t0000000000000400", "NoNewPrivs:\t1", "\n1000\n", "nics: lo\n"} {
		if !strings.Contains(s.stdout, want) {
			t.Errorf("inside the bottle: %q lacks %q", s.stdout, want)
		}
	}
	e.stop(ctx, sdk.StopRequest{Handle: &h})
	e.assertGone(ctx, id)
}

func TestSecondLaunchDoesNotBuild(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 3*time.Minute)
	a := e.agent("cache")
	imageOf := func(pl *progressLog, id string) string {
		insp, err := e.cli.ContainerInspect(ctx, "bot-bottle-"+id)
		if err != nil {
			t.Fatal(err)
		}
		return insp.Image
	}
	id1 := e.identity("cache")
	_, h1, pl1 := e.launch(ctx, e.spec(a, id1, "true"))
	if len(pl1.stage("build")) == 0 {
		t.Fatalf("first launch did not build:\n%s", pl1)
	}
	img1 := imageOf(pl1, id1)
	e.stop(ctx, sdk.StopRequest{Handle: &h1})

	// Touching files changes no content.
	now := time.Now().Add(time.Hour)
	os.Chtimes(a.Dockerfile, now, now)
	id2 := e.identity("cache")
	_, h2, pl2 := e.launch(ctx, e.spec(a, id2, "true"))
	if b := pl2.stage("build"); len(b) != 0 {
		t.Errorf("second launch built:\n%s", pl2)
	}
	if img2 := imageOf(pl2, id2); img2 != img1 {
		t.Errorf("second launch runs %s, first ran %s", img2, img1)
	}
	e.stop(ctx, sdk.StopRequest{Handle: &h2})

	// A changed context builds again.
	if err := os.WriteFile(filepath.Join(a.ContextDir, "extra"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	id3 := e.identity("cache")
	_, h3, pl3 := e.launch(ctx, e.spec(a, id3, "true"))
	if len(pl3.stage("build")) == 0 {
		t.Errorf("a changed context did not build:\n%s", pl3)
	}
	e.stop(ctx, sdk.StopRequest{Handle: &h3})
}

// A launch cancelled midway cleans up after itself, and Stop by identity
// finds nothing left.
func TestCancelledLaunch(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 3*time.Minute)
	id := e.identity("cancel")
	spec := e.spec(e.agent("cancel"), id, "true")
	spec.Egress = []string{"example.invalid:443"}
	plan, err := e.p.be.Prepare(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	_, err = e.p.be.Launch(lctx, spec, plan, func(p sdk.Progress) {
		if p.Stage == "network" {
			cancel()
		}
	})
	if err == nil {
		t.Fatal("cancelled launch returned a handle")
	}
	e.stop(ctx, sdk.StopRequest{Identity: id})
	e.assertGone(ctx, id)
}

// The plugin dies mid-launch: what it created stays, List shows it, and a
// fresh plugin process removes it by identity alone.
func TestStopByIdentityAfterCrash(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 3*time.Minute)
	// Killed at the first network (the home's way out, as its egress side
	// is made) and at the second (the bottle's, taken once the proxy
	// serves it).
	for kill := 1; kill <= 2; kill++ {
		crashAt(t, e, ctx, kill)
	}
}

// settled waits until what the identity and the shared egress side left
// on the engine stays the same for a while (the engine finishes a request
// whose sender is gone), and returns it.
func (e *env) settled(ctx context.Context, id string) []string {
	e.t.Helper()
	read := func() []string {
		left := append(e.leftovers(ctx, id), e.sharedLeft(ctx)...)
		slices.Sort(left)
		return left
	}
	last, same := read(), 0
	for deadline := time.Now().Add(20 * time.Second); same < 4 && time.Now().Before(deadline); {
		time.Sleep(250 * time.Millisecond)
		now := read()
		if slices.Equal(now, last) {
			same++
		} else {
			last, same = now, 0
		}
	}
	return last
}

func crashAt(t *testing.T, e *env, ctx context.Context, kill int) {
	id := e.identity("crash")
	spec := e.spec(e.agent("crash"), id, "true")
	// An allowlist gets the bottle a network and a listener on the home's
	// egress proxy: more to leave.
	spec.Egress = []string{"example.invalid:443"}
	plan, err := e.p.be.Prepare(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	pid := e.p.client.ReattachConfig().Pid
	seen := 0
	_, err = e.p.be.Launch(ctx, spec, plan, func(p sdk.Progress) {
		if p.Stage == "network" {
			if seen++; seen == kill {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	if err == nil {
		// The signal lost the race: the bottle's network is taken at the
		// end of a warm launch (its container is made meanwhile), so little
		// may be left to do after that progress. A plugin killed right
		// after the launch, before the core kept its handle, leaves the
		// same to remove by identity alone.
		syscall.Kill(pid, syscall.SIGKILL)
	}
	// What it left: the bottle's listener on the home's proxy (and the
	// agent's container if the create got there). A create the plugin sent
	// just before the kill may land on the engine after it: read what is
	// left once the engine has done with it, as a later prune would.
	if left := e.settled(ctx, id); len(left) == 0 {
		t.Fatal("the crashed launch left nothing: the test proves nothing")
	}
	e.p = e.startPlugin(nil)
	bottles, err := e.p.be.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// List shows it, or (killed while the home's egress side was made)
	// what it left of that, idle; Stop of each, as prune does, removes it.
	ours := map[string]bool{id: true}
	for _, r := range e.sharedLeft(ctx) {
		_, name, _ := strings.Cut(r, " ")
		ours[strings.TrimPrefix(name, "/")] = true
	}
	var listed []string
	for _, b := range bottles {
		if ours[b.Identity] {
			listed = append(listed, b.Identity)
		}
	}
	if len(listed) == 0 {
		t.Fatalf("List shows nothing of the crashed bottle %s (left: %v)", id, e.sharedLeft(ctx))
	}
	var removed []string
	for _, name := range listed {
		removed = append(removed, e.stop(ctx, sdk.StopRequest{Identity: name, RemoveSnapshots: true})...)
	}
	if len(removed) == 0 {
		t.Errorf("Stop of %v removed nothing", listed)
	}
	e.assertGone(ctx, id)
	// The proxy served nobody else: it went too.
	e.assertNoShared(ctx)
}
