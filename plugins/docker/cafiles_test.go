package main_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/bot-bottle/bot-bottle/internal/testenv"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// pluginDir is the docker plugin's own directory for this user.
func pluginDir() string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("bot-bottle-docker-%d", os.Getuid()))
}

// caDirs are the host directories holding identity's CA files.
func caDirs(t testing.TB, identity string) []string {
	t.Helper()
	ms, err := filepath.Glob(filepath.Join(pluginDir(), "ca", identity+".*"))
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// A bottle's CA files are a read-only mount of a directory of the plugin's
// own: there while the bottle is, in no snapshot of it, gone with it (and
// with a launch that fails); the image's roots in the bundle are read once
// per image and taken from the cache after.
func TestEgressCAFiles(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 4*time.Minute)
	roots := "-----BEGIN CERTIFICATE-----\nroots of " + e.label + "\n-----END CERTIFICATE-----\n"
	bb := testenv.Busybox{User: "agent", Files: map[string]string{"rootfs/etc/ssl/certs/ca-certificates.crt": roots, "nonce": e.label + "-cafiles"}}
	dir := bb.Context(t)
	a := sdk.Agent{Name: "cafiles", Dockerfile: filepath.Join(dir, "Dockerfile"), ContextDir: dir, Workdir: "/workspace"}
	var ids []string
	t.Cleanup(func() {
		for _, id := range ids {
			for _, d := range caDirs(t, id) {
				os.RemoveAll(d)
			}
		}
	})
	// The queue is mounted under the CA files' directory, as the core
	// has it.
	queue := t.TempDir()
	if err := os.Mkdir(filepath.Join(queue, sdk.QueueInbox), 0o777); err != nil {
		t.Fatal(err)
	}
	launch := func() (string, sdk.Handle) {
		id := e.identity("cafiles")
		ids = append(ids, id)
		spec := e.spec(a, id, "sleep", "300")
		spec.Detach, spec.Egress, spec.QueueDir = true, []string{"x.bb.test:80"}, queue
		_, h, _ := e.launch(ctx, spec)
		return id, h
	}

	id, h := launch()
	dirs := caDirs(t, id)
	if len(dirs) != 1 {
		t.Fatalf("CA directories of %s: %v, want one", id, dirs)
	}
	caPEM, err := os.ReadFile(filepath.Join(dirs[0], "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := os.ReadFile(filepath.Join(dirs[0], "ca-bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if string(bundle) != roots+"\n"+string(caPEM) || !strings.Contains(string(caPEM), "BEGIN CERTIFICATE") {
		t.Errorf("the bundle is not the image's roots plus the bottle's CA:\n%s", bundle)
	}
	res := e.sh(ctx, h, `cat /run/bot-bottle/ca-bundle.pem; echo ===; grep ' /run/bot-bottle/ca' /proc/mounts; ls -d /run/bot-bottle/queue/inbox`)
	inside, mounts, _ := strings.Cut(string(res.Stdout), "===\n")
	if inside != string(bundle) {
		t.Errorf("the bottle's bundle is not the host's:\n%s", res.Stdout)
	}
	for _, f := range []string{"/run/bot-bottle/ca.pem", "/run/bot-bottle/ca-bundle.pem"} {
		if !strings.Contains(mounts, " "+f+" ") {
			t.Errorf("%s is not a mount: %q", f, mounts)
		}
	}
	for _, l := range strings.Split(strings.TrimSpace(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 3 && strings.HasPrefix(f[1], "/run/bot-bottle/ca") && !strings.HasPrefix(f[3], "ro") {
			t.Errorf("not mounted read-only: %q", l)
		}
	}
	if !strings.Contains(mounts, "/run/bot-bottle/queue/inbox") {
		t.Errorf("the queue is not there beside the CA files: %q", mounts)
	}
	// The image's roots, cached by its ID.
	insp, err := e.cli.ContainerInspect(ctx, "bot-bottle-"+id)
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(pluginDir(), "roots", strings.TrimPrefix(insp.Image, "sha256:")+".pem")
	if got, err := os.ReadFile(cache); err != nil || string(got) != roots {
		t.Errorf("the roots cache %s = %q, %v; want the image's roots", cache, got, err)
	}
	// A snapshot holds no CA: the mount is not in it.
	cr, err := e.p.be.Commit(ctx, h, t.TempDir())
	if err != nil {
		t.Fatalf("commit: %v", err)
	}
	body := strings.Split(string(caPEM), "\n")[1]
	if found, err := imageContains(ctx, e.cli, cr.Image, body); err != nil || found {
		t.Errorf("the snapshot holds the bottle's CA: %v %v", found, err)
	}
	e.stop(ctx, sdk.StopRequest{Handle: &h, Identity: id, RemoveSnapshots: true})
	if left := caDirs(t, id); len(left) > 0 {
		t.Errorf("CA files left after stop: %v", left)
	}

	// The next bottle of the image takes its roots from the cache.
	planted := "-----BEGIN CERTIFICATE-----\nplanted in the cache\n-----END CERTIFICATE-----\n"
	if err := os.WriteFile(cache, []byte(planted), 0o600); err != nil {
		t.Fatal(err)
	}
	id2, h2 := launch()
	if res := e.sh(ctx, h2, `cat /run/bot-bottle/ca-bundle.pem`); !strings.HasPrefix(string(res.Stdout), planted) {
		t.Errorf("the second bottle's bundle did not come from the roots cache:\n%s", res.Stdout)
	}
	e.stop(ctx, sdk.StopRequest{Handle: &h2, Identity: id2})

	// A launch that fails at its container's create leaves no CA files.
	id3 := e.identity("cafiles")
	ids = append(ids, id3)
	blocker, err := e.cli.ContainerCreate(ctx, &container.Config{Image: insp.Image, Cmd: []string{"true"}, Labels: map[string]string{testenv.Label: e.label}}, nil, nil, nil, "bot-bottle-"+id3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.cli.ContainerRemove(context.Background(), blocker.ID, container.RemoveOptions{Force: true})
	})
	spec := e.spec(a, id3, "sleep", "300")
	spec.Detach, spec.Egress, spec.QueueDir = true, []string{"x.bb.test:80"}, queue
	plan, err := e.p.be.Prepare(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.p.be.Launch(ctx, spec, plan, nil); err == nil || !strings.Contains(err.Error(), "create container") {
		t.Fatalf("launch over a taken name: %v", err)
	}
	if left := caDirs(t, id3); len(left) > 0 {
		t.Errorf("CA files left after a failed launch: %v", left)
	}
	if left := e.leftovers(ctx, id3); len(left) > 0 {
		t.Errorf("left after a failed launch: %v", left)
	}
	e.pruneShared(ctx, e.p.be)
}
