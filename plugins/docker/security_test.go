package main_test

import (
	"archive/tar"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/testenv"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// preflightText is a plan's preflight and warnings as the core prints them.
func preflightText(p sdk.Plan) string {
	var b strings.Builder
	for _, l := range p.Preflight {
		b.WriteString(l.Key + ": " + l.Value + "\n")
	}
	for _, w := range p.Warnings {
		b.WriteString("warning: " + w + "\n")
	}
	return b.String()
}

func ownerOf(t *testing.T, p string) (uid, gid uint32) {
	t.Helper()
	st, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	return sys.Uid, sys.Gid
}

// A project owned by uid 4321: the image's user "agent" (1000) runs as 4321,
// writes the project, and what it writes is 4321's on the host; its home is
// its own. A second bottle reuses the remapped image.
func TestProjectOwnerUID(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 3*time.Minute)
	proj := t.TempDir()
	if err := os.Chown(proj, 4321, 4322); err != nil {
		t.Fatal(err)
	}
	a := e.agent("uidmap")
	cmd := []string{"sh", "-c", `echo ids=$(id -u):$(id -g) name=$(id -un) home=$(stat -c %u $HOME); echo hi > /workspace/written`}
	id := e.identity("uidmap")
	spec := e.spec(a, id, cmd...)
	spec.Cwd = proj
	plan, h, pl := e.launch(ctx, spec)
	if pre := preflightText(plan); !strings.Contains(pre, "user: agent (the image's user) as uid 4321 gid 4322: remapped to the owner of "+proj) {
		t.Errorf("preflight does not name the mapping:\n%s", pre)
	}
	s := e.run(ctx, h, nil)
	if s.status.Code != 0 || !strings.Contains(s.stdout, "ids=4321:4322 name=agent home=4321") {
		t.Fatalf("session %+v\nprogress:\n%s", s, pl)
	}
	if uid, gid := ownerOf(t, filepath.Join(proj, "written")); uid != 4321 || gid != 4322 {
		t.Errorf("host file owned by %d:%d, want 4321:4322", uid, gid)
	}
	e.stop(ctx, sdk.StopRequest{Handle: &h})

	id2 := e.identity("uidmap")
	spec2 := e.spec(a, id2, cmd...)
	spec2.Cwd = proj
	_, h2, pl2 := e.launch(ctx, spec2)
	if b := pl2.stage("build"); len(b) != 0 {
		t.Errorf("second launch built:\n%s", pl2)
	}
	if !strings.Contains(pl2.String(), "using cached image bot-bottle-uidmap/") {
		t.Errorf("second launch did not reuse the remapped image:\n%s", pl2)
	}
	if s := e.run(ctx, h2, nil); !strings.Contains(s.stdout, "ids=4321:4322") {
		t.Errorf("second bottle: %+v", s)
	}
	e.stop(ctx, sdk.StopRequest{Handle: &h2})
	e.assertGone(ctx, id2)
}

// A project owned by root: the agent keeps its non-root user, cannot write,
// and the preflight says what to do.
func TestRootOwnedProject(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 3*time.Minute)
	proj := t.TempDir() // the tests run as root
	if err := os.Chmod(proj, 0o755); err != nil {
		t.Fatal(err)
	}
	id := e.identity("rootproj")
	spec := e.spec(e.agent("rootproj"), id, "sh", "-c", `id -u; touch /workspace/x 2>/dev/null && echo wrote || echo cannot-write`)
	spec.Cwd = proj
	plan, h, _ := e.launch(ctx, spec)
	pre := preflightText(plan)
	for _, want := range []string{"belongs to root, and a bottle is never given uid 0", "warning: the agent cannot write " + proj, "--copy-cwd"} {
		if !strings.Contains(pre, want) {
			t.Errorf("preflight lacks %q:\n%s", want, pre)
		}
	}
	s := e.run(ctx, h, nil)
	if s.stdout != "1000\ncannot-write\n" {
		t.Errorf("stdout = %q, want the agent as 1000, unable to write", s.stdout)
	}
	e.stop(ctx, sdk.StopRequest{Handle: &h})
}

// A root agent on a bind-mounted project is warned about and cannot leave a
// setuid or setgid file there: not by chmod, install -m or tar.
func TestNoSetuidInProject(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 3*time.Minute)
	proj := t.TempDir()
	f, err := os.Create(filepath.Join(proj, "s.tar"))
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	for _, hdr := range []*tar.Header{
		{Name: "suid", Mode: 0o4755, Size: 3, Typeflag: tar.TypeReg},
		{Name: "sgid", Mode: 0o2755, Size: 3, Typeflag: tar.TypeReg},
		{Name: "sdir/", Mode: 0o2755, Typeflag: tar.TypeDir},
	} {
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if hdr.Size > 0 {
			tw.Write([]byte("#!\n"))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// Debian's coreutils and GNU tar, run as root (the image's default).
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM debian:bookworm-slim\nLABEL test.nonce="+e.label+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a := sdk.Agent{Name: "rootagent", Dockerfile: filepath.Join(dir, "Dockerfile"), ContextDir: dir, Workdir: "/workspace"}
	id := e.identity("rootagent")
	spec := e.spec(a, id, "sh", "-c", `cd /workspace
echo x > f; chmod 4755 f; echo chmod-u=$?
chmod g+s f; echo chmod-g=$?
chmod 0755 f; echo chmod-plain=$?
install -m 4755 /bin/true inst; echo install=$?
tar -xpf s.tar; echo tar=$?
mkdir -m 2755 d; echo mkdir=$?
id -u`)
	spec.Cwd = proj
	plan, h, _ := e.launch(ctx, spec)
	if pre := preflightText(plan); !strings.Contains(pre, "warning: the agent runs as root on the bind-mounted "+proj) || !strings.Contains(pre, "no setuid/setgid file modes") {
		t.Errorf("preflight does not warn of a root agent:\n%s", pre)
	}
	s := e.run(ctx, h, nil)
	t.Logf("inside:\n%s%s", s.stdout, s.stderr)
	for _, want := range []string{"chmod-plain=0\n", "\n0\n", "install="} {
		if !strings.Contains(s.stdout, want) {
			t.Errorf("stdout lacks %q: a plain chmod must work, as root", want)
		}
	}
	for _, refused := range []string{"chmod-u=0", "chmod-g=0"} {
		if strings.Contains(s.stdout, refused) {
			t.Errorf("%s: a setuid/setgid chmod succeeded", refused)
		}
	}
	seen := 0
	filepath.WalkDir(proj, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Error(err)
			return nil
		}
		seen++
		st, err := os.Lstat(p)
		if err != nil {
			t.Error(err)
			return nil
		}
		if st.Mode()&(fs.ModeSetuid|fs.ModeSetgid) != 0 {
			t.Errorf("%s on the host has mode %v", p, st.Mode())
		}
		return nil
	})
	if seen < 4 {
		t.Errorf("only %d entries in the project: the commands did not run", seen)
	}
	e.stop(ctx, sdk.StopRequest{Handle: &h})
}

// 200 orphaned children that exit leave no zombies, and the bottle can
// still fork, under a pids limit below 200: PID 1 is the engine's init.
func TestInitReapsOrphans(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 3*time.Minute)
	id := e.identity("reap")
	spec := e.spec(e.agent("reap"), id, "sh", "-c", `echo pid1=$(cat /proc/1/comm)
i=0; while [ $i -lt 200 ]; do (sleep 0 &); i=$((i+1)); done
n=0; while [ $n -lt 50 ]; do
  z=0; for s in /proc/[0-9]*/stat; do read -r l < $s 2>/dev/null; case "$l" in *") Z "*) z=$((z+1));; esac; done
  [ $z -eq 0 ] && break; n=$((n+1)); sleep 0.1
done
echo zombies=$z
echo $(echo forked)`)
	e.configure(map[string]any{"pids_limit": 64})
	_, h, _ := e.launch(ctx, spec)
	s := e.run(ctx, h, nil)
	for _, want := range []string{"pid1=docker-init\n", "zombies=0\n", "forked\n"} {
		if !strings.Contains(s.stdout, want) {
			t.Errorf("stdout %q lacks %q (stderr %q)", s.stdout, want, s.stderr)
		}
	}
	e.stop(ctx, sdk.StopRequest{Handle: &h})
}

// A remap that fails midway (no chown in the image) fails the launch in one
// line and leaves no intermediate image that passes for the cached agent
// image: a later bottle of the agent must not run some half-built layer.
func TestFailedRemapLeavesNoImpostor(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 3*time.Minute)
	bb := testenv.Busybox{User: "agent", Lines: []string{"USER root", `RUN ["/bin/busybox", "rm", "/bin/chown"]`, "USER agent"}, Files: map[string]string{"nonce": e.label}}
	dir := bb.Context(t)
	a := sdk.Agent{Name: "nochown", Dockerfile: filepath.Join(dir, "Dockerfile"), ContextDir: dir, Workdir: "/workspace"}
	proj := t.TempDir()
	if err := os.Chown(proj, 4321, 4321); err != nil {
		t.Fatal(err)
	}
	spec := e.spec(a, e.identity("nochown"), "true")
	spec.Cwd = proj
	plan, err := e.p.be.Prepare(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.p.be.Launch(ctx, spec, plan, nil)
	if err == nil || !strings.Contains(err.Error(), "remap agent to uid 4321 gid 4321") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("launch error %v, want one line saying the remap failed", err)
	}
	imgs, err := e.cli.ImageList(ctx, imageListByLabel("dev.bot-bottle.kind", "agent"))
	if err != nil {
		t.Fatal(err)
	}
	byDigest := map[string]int{}
	for _, im := range imgs {
		if im.Labels[testenv.Label] == e.label {
			byDigest[im.Labels["dev.bot-bottle.digest"]]++
		}
	}
	if len(byDigest) != 1 {
		t.Errorf("agent images by digest: %v, want the one agent image", byDigest)
	}
	for d, n := range byDigest {
		if n != 1 {
			t.Errorf("%d images pass for the agent image of digest %s", n, d)
		}
	}
}
