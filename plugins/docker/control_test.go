package main_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"golang.org/x/sys/unix"

	"github.com/bot-bottle/bot-bottle/internal/testenv"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// runnableCopy is a copy of bin that every user can run.
func runnableCopy(t *testing.T, bin string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bbt-ctl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, filepath.Base(bin))
	if err := os.WriteFile(path, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// controlDirOf is the host directory the shared proxy proxyName has its
// control socket in (mounted into it alone).
func controlDirOf(proxyName string) string {
	return filepath.Join(pluginDir(), proxyName+".control")
}

// execWatch counts the `docker exec`s the engine makes in a container.
type execWatch struct {
	cancel context.CancelFunc
	mu     sync.Mutex
	seen   []string
	marker chan struct{}
}

const execMarker = "--help"

// watchExecs starts counting the execs in the test's shared proxies.
func (e *env) watchExecs() *execWatch {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &execWatch{cancel: cancel, marker: make(chan struct{}, 16)}
	msgs, errs := e.cli.Events(ctx, events.ListOptions{Filters: filters.NewArgs(
		filters.Arg("type", "container"), filters.Arg("event", "exec_create"),
		filters.Arg("label", testenv.Label+"="+e.label), filters.Arg("label", "dev.bot-bottle.role=egress-shared-proxy"))})
	ready := make(chan struct{})
	go func() {
		close(ready)
		for {
			select {
			case m := <-msgs:
				if strings.HasSuffix(string(m.Action), " "+execMarker) {
					w.marker <- struct{}{}
					continue
				}
				w.mu.Lock()
				w.seen = append(w.seen, m.Actor.ID+" "+string(m.Action))
				w.mu.Unlock()
			case <-errs:
				return
			}
		}
	}()
	<-ready
	e.t.Cleanup(cancel)
	return w
}

// execs are the execs seen since the last call, once the engine has
// reported every exec made before it: it makes one of its own (a marker)
// in the proxy id and waits for its event, which comes after theirs. Only
// those in the proxy id count: the engine's label filter lets others'
// through.
func (w *execWatch) execs(t testing.TB, e *env, id string) []string {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	insp, err := e.cli.ContainerInspect(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	created, err := e.cli.ContainerExecCreate(ctx, id, container.ExecOptions{Cmd: []string{insp.Path, "egress-proxy", execMarker}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.cli.ContainerExecStart(ctx, created.ID, container.ExecStartOptions{Detach: true}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.marker:
	case <-time.After(30 * time.Second):
		t.Fatal("the engine never reported the marker exec")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, s := range w.seen {
		if a, ok := strings.CutPrefix(s, id+" "); ok {
			out = append(out, a)
		}
	}
	w.seen = nil
	return out
}

// controlBottle launches a detached egress bottle of e on tn with its
// egress log in logDir, and returns its handle and its proxy's id.
func (e *env) controlBottle(ctx context.Context, agent sdk.Agent, logDir string) (sdk.Handle, string, string) {
	e.t.Helper()
	id := e.identity("ctl")
	spec := e.spec(agent, id, "sleep", "300")
	spec.Detach, spec.Egress = true, []string{"allowed.bb.test:80"}
	spec.EgressLog = filepath.Join(logDir, id+".jsonl")
	_, h, _ := e.launch(ctx, spec)
	insp, err := e.cli.ContainerInspect(ctx, handleProxy(e.t, h))
	if err != nil {
		e.t.Fatal(err)
	}
	// A failed test's cleanup removes the proxy by its label, around the
	// plugin: its control directory and link with it.
	e.t.Cleanup(func() {
		os.RemoveAll(controlDirOf(handleProxy(e.t, h)))
		os.Remove(filepath.Join(pluginDir(), insp.ID[:12]+".control"))
	})
	return h, insp.ID, spec.EgressLog
}

// fetched says whether the bottle fetched the allowed upstream, and that
// its egress log has the connection: the log the plugin handed the proxy.
func (e *env) fetched(ctx context.Context, h sdk.Handle, egressLog string) {
	e.t.Helper()
	res := e.sh(ctx, h, `wget -q -O - http://allowed.bb.test/`)
	if res.ExitCode != 0 || string(res.Stdout) != "hello\n" {
		e.t.Errorf("%s through the proxy: %d %q %q", h.Identity, res.ExitCode, res.Stdout, res.Stderr)
	}
	evs := testenv.EgressEvents(e.t, egressLog)
	if len(evs) != 1 || evs[0].Identity != h.Identity || !evs[0].Allowed {
		e.t.Errorf("%s's egress log: %+v, want its one allowed connection", h.Identity, evs)
	}
}

// A warm egress start, a live rules update, a revoke's refusal and a stop
// reach the home's proxy over its control socket, without one `docker
// exec`; the bottle's egress log handed over from the host is written. The
// control directory is the proxy user's, private, and in no bottle: not
// among its mounts, not in its filesystem.
func TestEgressControlDirect(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 5*time.Minute)
	tn := e.network(ctx)
	tn.upstream(ctx, "hello", 0, "allowed.bb.test")
	e.configure(map[string]any{"egress_networks": []string{tn.name}})
	agent := e.agent("ctl")
	logDir := t.TempDir()
	// The first bottle makes the proxy, and waits for it to listen on
	// its socket file.
	w := e.watchExecs()
	first, proxyID, firstLog := e.controlBottle(ctx, agent, logDir)
	defer e.stop(ctx, sdk.StopRequest{Handle: &first})
	e.fetched(ctx, first, firstLog)
	if execs := w.execs(t, e, proxyID); len(execs) != 0 {
		t.Errorf("the start that made the proxy exec'd in it: %q", execs)
	}

	h, id, egressLog := e.controlBottle(ctx, agent, logDir)
	if id != proxyID {
		t.Fatalf("the second bottle has proxy %s, want the home's %s", id, proxyID)
	}
	e.fetched(ctx, h, egressLog)
	if err := e.p.be.UpdateEgress(ctx, h, []string{"allowed.bb.test:80", "other.bb.test:80"}); err != nil {
		t.Fatalf("update egress: %v", err)
	}
	if err := e.p.be.RevokeCredential(ctx, h, "absent"); err == nil || !strings.Contains(err.Error(), "none in force") {
		t.Errorf("revoke of a credential the bottle lacks: %v", err)
	}
	if execs := w.execs(t, e, proxyID); len(execs) != 0 {
		t.Errorf("the plugin exec'd in the proxy: %q", execs)
	}

	// Where the control socket is, who owns it, and that no bottle has it.
	dir := controlDirOf(handleProxy(t, h))
	uid := uint32(os.Getuid())
	if uid == 0 {
		uid = 65534
	}
	for path, mode := range map[string]os.FileMode{dir: os.ModeDir | 0o700, filepath.Join(dir, "control.sock"): os.ModeSocket | 0o600} {
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != mode || fi.Sys().(*syscall.Stat_t).Uid != uid {
			t.Errorf("%s: mode %v uid %d, want %v and the proxy's user %d", path, fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid, mode, uid)
		}
	}
	for _, b := range []sdk.Handle{first, h} {
		insp, err := e.cli.ContainerInspect(ctx, "bot-bottle-"+b.Identity)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range insp.Mounts {
			if m.Source != "" && (dir == m.Source || strings.HasPrefix(dir, strings.TrimSuffix(m.Source, "/")+"/")) {
				t.Errorf("bottle %s mounts %s, which holds the proxy's control directory", b.Identity, m.Source)
			}
		}
		if res := e.sh(ctx, b, `ls -a /run/egress-control 2>&1; find / -xdev -type s 2>/dev/null`); strings.Contains(string(res.Stdout), "control.sock") {
			t.Errorf("bottle %s sees a control socket: %q", b.Identity, res.Stdout)
		}
	}

	e.stop(ctx, sdk.StopRequest{Handle: &h})
	if execs := w.execs(t, e, proxyID); len(execs) != 0 {
		t.Errorf("the stop exec'd in the proxy: %q", execs)
	}
}

// A proxy whose socket file is gone is driven through `docker exec` as
// before: start, rules, stop, and the egress log still handed over. A
// socket there that is not the proxy's (another user's process, or a
// proxy of the proxy's user outside its container, as another engine's
// proxy of the same name would be) gets no request: the plugin connects,
// finds the peer is not the proxy's container, hangs up before it sends a
// byte and goes through exec. When
// the proxy goes, its control directory and link go with it; the next
// proxy of the same key replaces a stale socket left in its directory and
// answers on it again.
func TestEgressControlFallback(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 5*time.Minute)
	tn := e.network(ctx)
	tn.upstream(ctx, "hello", 0, "allowed.bb.test")
	e.configure(map[string]any{"egress_networks": []string{tn.name}, "keep_egress_proxy": false}) // the last stop removes the proxy: its control directory and link go with it
	agent := e.agent("ctl")
	logDir := t.TempDir()
	first, proxyID, _ := e.controlBottle(ctx, agent, logDir)
	proxyName := handleProxy(t, first)
	dir := controlDirOf(proxyName)
	sock := filepath.Join(dir, "control.sock")
	w := e.watchExecs()

	// No socket: exec.
	if err := os.Remove(sock); err != nil {
		t.Fatal(err)
	}
	h, _, egressLog := e.controlBottle(ctx, agent, logDir)
	e.fetched(ctx, h, egressLog)
	if err := e.p.be.UpdateEgress(ctx, h, []string{"allowed.bb.test:80", "other.bb.test:80"}); err != nil {
		t.Fatalf("update egress without the socket: %v", err)
	}
	e.stop(ctx, sdk.StopRequest{Handle: &h})
	if execs := w.execs(t, e, proxyID); len(execs) != 3 || !strings.Contains(execs[0], " add ") || !strings.Contains(execs[1], " rules ") || !strings.Contains(execs[2], " forget ") {
		t.Errorf("without the socket the plugin exec'd %q, want add, rules, forget", execs)
	}

	// A socket of someone else's: refused before any request.
	fake, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	fake.SetUnlinkOnClose(false)
	got := make(chan int, 16)
	go func() {
		for {
			c, err := fake.AcceptUnix()
			if err != nil {
				close(got)
				return
			}
			c.SetDeadline(time.Now().Add(30 * time.Second))
			n, _ := io.Copy(io.Discard, c)
			c.Close()
			got <- int(n)
		}
	}()
	if err := e.p.be.UpdateEgress(ctx, first, []string{"allowed.bb.test:80"}); err != nil {
		t.Fatalf("update egress past a socket that is not the proxy's: %v", err)
	}
	if execs := w.execs(t, e, proxyID); len(execs) != 1 || !strings.Contains(execs[0], " rules ") {
		t.Errorf("past a socket that is not the proxy's the plugin exec'd %q, want rules", execs)
	}
	select {
	case n := <-got:
		if n != 0 {
			t.Errorf("the plugin sent %d bytes to a socket that is not the proxy's", n)
		}
	case <-time.After(10 * time.Second):
		t.Error("the plugin never tried the socket")
	}
	fake.Close() // leaves the file: a stale socket

	// A proxy of the proxy's user, on the file, but not in the proxy's
	// container (another engine's, say): refused too, by its cgroup.
	// It has the directory open: nobody cannot pass the plugin's own.
	df, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer df.Close()
	other := exec.Command(runnableCopy(t, pluginBin), "egress-proxy", "serve", "--control", "@bbt-ctl-"+e.label, "--control-dir", "/proc/self/fd/3")
	other.ExtraFiles = []*os.File{df}
	if os.Getuid() == 0 {
		other.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	var logs syncBuffer
	other.Stderr = &logs
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- other.Wait() }()
	t.Cleanup(func() { other.Process.Kill(); <-exited })
	logs.waitFor(t, "control_file=/proc/self/fd/3/"+filepath.Base(sock), 10*time.Second)
	if err := e.p.be.UpdateEgress(ctx, first, []string{"allowed.bb.test:80", "other.bb.test:80"}); err != nil {
		t.Fatalf("update egress past another proxy's socket: %v", err)
	}
	if execs := w.execs(t, e, proxyID); len(execs) != 1 || !strings.Contains(execs[0], " rules ") {
		t.Errorf("past another proxy's socket the plugin exec'd %q, want rules", execs)
	}
	logs.waitFor(t, `msg="control request refused" op=""`, 10*time.Second)
	if strings.Contains(logs.String(), "op=rules") {
		t.Errorf("another proxy got the request:\n%s", logs.String())
	}
	other.Process.Kill() // leaves its file: a stale socket

	// The last stop removes the proxy with its control directory and link.
	e.stop(ctx, sdk.StopRequest{Handle: &first})
	for _, p := range []string{dir, filepath.Join(pluginDir(), proxyID[:12]+".control")} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is left after the proxy went: %v", p, err)
		}
	}

	// A stale socket where the next proxy of the key listens: replaced.
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	w.cancel()
	w = e.watchExecs()
	again, newID, egressLog := e.controlBottle(ctx, agent, logDir)
	if handleProxy(t, again) != proxyName || newID == proxyID {
		t.Fatalf("the next bottle has proxy %s (%s), want a new %s", handleProxy(t, again), newID, proxyName)
	}
	if execs := w.execs(t, e, newID); len(execs) != 0 {
		t.Errorf("the start that made the new proxy exec'd in it: %q", execs)
	}
	e.fetched(ctx, again, egressLog)
	if err := e.p.be.UpdateEgress(ctx, again, []string{"allowed.bb.test:80", "other.bb.test:80"}); err != nil {
		t.Fatal(err)
	}
	if execs := w.execs(t, e, newID); len(execs) != 0 {
		t.Errorf("the new proxy was exec'd: %q", execs)
	}
	e.stop(ctx, sdk.StopRequest{Handle: &again})
	e.assertNoShared(ctx)
	if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s is left after the proxy went: %v", dir, err)
	}
}

// A start that makes a proxy removes, in the background, the control
// links and directories that proxies removed around the plugin left: old
// ones with no listener. A young one (a proxy being made) stays.
func TestEgressControlSweep(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 3*time.Minute)
	tn := e.network(ctx)
	tn.upstream(ctx, "hello", 0, "allowed.bb.test")
	e.configure(map[string]any{"egress_networks": []string{tn.name}})
	old := time.Now().Add(-time.Hour)
	deadDir := func(name string, aged bool) string {
		dir := filepath.Join(pluginDir(), name+".control")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "control.sock"), Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		ln.SetUnlinkOnClose(false)
		ln.Close()
		if aged {
			if err := os.Chtimes(dir, old, old); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	gone := deadDir("bbt-gone-"+e.label, true)
	young := deadDir("bbt-young-"+e.label, false)
	link := filepath.Join(pluginDir(), e.label[len(e.label)-12:]+".control")
	if err := os.Symlink(filepath.Join(pluginDir(), "bbt-nothing-"+e.label, "control.sock"), link); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(link) })
	ts := []unix.Timespec{unix.NsecToTimespec(old.UnixNano()), unix.NsecToTimespec(old.UnixNano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, link, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}

	h, _, _ := e.controlBottle(ctx, e.agent("ctl"), t.TempDir())
	defer e.stop(ctx, sdk.StopRequest{Handle: &h})
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, gerr := os.Lstat(gone)
		_, lerr := os.Lstat(link)
		if errors.Is(gerr, os.ErrNotExist) && errors.Is(lerr, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("left after a proxy was made: %s (%v), %s (%v)", gone, gerr, link, lerr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := os.Lstat(young); err != nil {
		t.Errorf("a young control directory went: %v", err)
	}
	if _, err := os.Lstat(controlDirOf(handleProxy(t, h))); err != nil {
		t.Errorf("the running proxy's control directory went: %v", err)
	}
}
