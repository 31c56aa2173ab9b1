package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/backendtest"
)

// TestMain lets the test binary be a bottle's init too: in-process tests
// start bottles through /proc/self/exe, which is this binary.
func TestMain(m *testing.M) {
	if os.Args[0] == initName {
		os.Exit(runInit(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func rootConfig(t testing.TB, root string) json.RawMessage {
	t.Helper()
	c, err := json.Marshal(config{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// bottles is a backend with its root at root, for a test that launches
// bottles.
func bottles(t *testing.T, root string) *backend {
	t.Helper()
	requireNamespaces(t)
	return newBackend(rootConfig(t, root), "")
}

var probe struct {
	once sync.Once
	err  error
}

// requireNamespaces skips a test that needs the bottle's namespaces when
// this host refuses them, saying why (Launch's error names the likely
// cause: see runtime_userns.go). Under CI=true it fails instead, as a test
// that needs Docker does: CI must not pass by skipping.
func requireNamespaces(t *testing.T) {
	t.Helper()
	probe.once.Do(func() {
		root, err := os.MkdirTemp("", "skeleton-probe")
		if err != nil {
			probe.err = err
			return
		}
		defer os.RemoveAll(root)
		cfg, _ := json.Marshal(config{Root: root})
		b, ctx := newBackend(cfg, ""), context.Background()
		spec := sdk.Spec{Identity: "skel-probe", Command: []string{"true"}, Detach: true}
		_, probe.err = b.Launch(ctx, spec, sdk.Plan{}, func(sdk.Progress) {})
		_, _ = b.Stop(ctx, sdk.StopRequest{Identity: spec.Identity})
	})
	if probe.err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("this host cannot make a bottle's namespaces (CI=true: not skipping): %v", probe.err)
	}
	t.Skipf("this host cannot make a bottle's namespaces: %v", probe.err)
}

// TestConformance holds the built plugin to the contract the core relies
// on, driving it exactly as the core does (a fresh plugin process for each
// New), with a Leftovers hook that looks for what Stop must remove.
func TestConformance(t *testing.T) {
	requireNamespaces(t)
	bin := backendtest.Build(t, ".", name)
	root := t.TempDir()
	env := sdk.EnvPluginConfig + "=" + string(rootConfig(t, root))
	h := harness(root)
	h.New = func(t testing.TB) sdk.Backend { return backendtest.Start(t, bin, env) }
	h.NewInHome = func(t testing.TB, home string) sdk.Backend {
		return backendtest.Start(t, bin, env, sdk.EnvHomeID+"="+home)
	}
	backendtest.RunConformance(t, h)
}

// TestConformanceInProcess runs the same suite against the backend served
// inside the test process: over real gRPC still, and quicker to debug.
func TestConformanceInProcess(t *testing.T) {
	requireNamespaces(t)
	root := t.TempDir()
	cfg := rootConfig(t, root)
	h := harness(root)
	h.New = func(t testing.TB) sdk.Backend { return backendtest.InProcess(t, newBackend(cfg, "")) }
	h.NewInHome = func(t testing.TB, home string) sdk.Backend { return backendtest.InProcess(t, newBackend(cfg, home)) }
	backendtest.RunConformance(t, h)
}

// harness is what the skeleton declares, whichever way it is served: the
// project at the workdir, no network ever (an allowlist is a warning), the
// hardening of runtime_caps.go. Its queue and helper are at host paths, not
// the guest paths, so it declares no Queue.
func harness(root string) backendtest.Harness {
	return backendtest.Harness{
		Agent:     sdk.Agent{Name: "conf", Image: "unused: skeleton runs host binaries"},
		Leftovers: func(_ context.Context, id string) ([]string, error) { return leftovers(root, id), nil },
		Project:   true,
		Egress:    backendtest.EgressNoNetwork,
		Hardening: &backendtest.Hardening{NoNewPrivs: true, NoCapabilities: true},
	}
}

// leftovers lists what a bottle still has: its directory, and any live
// process whose environment names its identity (every process in a bottle
// inherits the init's environment).
func leftovers(root, id string) []string {
	var left []string
	if _, err := os.Lstat(filepath.Join(root, id)); err == nil {
		left = append(left, "directory "+filepath.Join(root, id))
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !slices.Contains(strings.Split(string(env), "\x00"), sdk.EnvIdentity+"="+id) {
			continue
		}
		if state, _, ok := procStat(e.Name()); ok && state != "Z" && state != "X" {
			cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			left = append(left, fmt.Sprintf("process %s (%s)", e.Name(), strings.ReplaceAll(strings.TrimSpace(string(cmdline)), "\x00", " ")))
		}
	}
	return left
}

// run launches cmd on b with spec adjusted by adjust, attaches until it
// exits and returns its stdout, stderr and exit code. The bottle is stopped
// when the test ends.
func run(t *testing.T, b *backend, adjust func(*sdk.Spec), cmd ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	spec := sdk.Spec{Identity: fmt.Sprintf("skel-%d", time.Now().UnixNano()), Command: cmd, Env: map[string]string{}}
	if adjust != nil {
		adjust(&spec)
	}
	t.Cleanup(func() { _, _ = b.Stop(context.Background(), sdk.StopRequest{Identity: spec.Identity}) })
	plan, err := b.Prepare(ctx, spec)
	if err != nil {
		t.Fatalf("prepare: %v", err)
	}
	h, err := b.Launch(ctx, spec, plan, func(sdk.Progress) {})
	if err != nil {
		t.Fatalf("launch: %v", err)
	}
	var out, errOut bytes.Buffer
	st, err := b.Attach(ctx, sdk.AttachRequest{Handle: h}, sdk.AttachStreams{Stdout: &out, Stderr: &errOut})
	if err != nil || st.Detached {
		t.Fatalf("attach: %+v, %v", st, err)
	}
	return out.String(), errOut.String(), st.Code
}

// TestIsolation checks what the namespaces promise: the hostname is the
// identity, pid 1 is the bottle's init and the agent sees only the
// bottle's processes, the only network interface is the loopback, and the
// bottle's variables and the passed-through secret are in its environment.
func TestIsolation(t *testing.T) {
	b := bottles(t, t.TempDir())
	var id string
	out, errOut, code := run(t, b, func(s *sdk.Spec) {
		id = s.Identity
		s.QueueDir = "/some/queue"
		s.Env["SKEL_SECRET"] = "hunter2-value"
	}, "sh", "-c", `cat /proc/sys/kernel/hostname; tr '\0' ' ' </proc/1/cmdline; echo; ls /proc | grep -c '^[0-9]'; grep -c : /proc/net/dev
echo "$BOT_BOTTLE_IDENTITY $BOT_BOTTLE_QUEUE $SKEL_SECRET"`)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 {
		t.Fatalf("output %q, want 5 lines", out)
	}
	if lines[0] != id {
		t.Errorf("hostname %q, want the identity %q", lines[0], id)
	}
	if !strings.HasPrefix(lines[1], initName+" ") {
		t.Errorf("pid 1 is %q, want the bottle's init", lines[1])
	}
	// init, sh, ls and grep (maybe not all at once): not the host's.
	if n, _ := strconv.Atoi(strings.TrimSpace(lines[2])); n < 2 || n > 4 {
		t.Errorf("the agent sees %d processes, want its own few", n)
	}
	if n := strings.TrimSpace(lines[3]); n != "1" {
		t.Errorf("%s network interfaces, want the loopback alone", n)
	}
	if want := id + " /some/queue hunter2-value"; lines[4] != want {
		t.Errorf("environment %q, want %q", lines[4], want)
	}
}

// TestNoCapabilities: the agent is uid 0 of the bottle without a single
// capability, so it cannot unmount the bottle's /proc to see the host's
// processes, not even from a user namespace of its own.
func TestNoCapabilities(t *testing.T) {
	b := bottles(t, t.TempDir())
	out, errOut, code := run(t, b, nil, "sh", "-c", `grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):' /proc/self/status
for f in /proc/1/fd/* /proc/1/cwd; do readlink "$f" >/dev/null 2>&1 && echo "init-fd-ok $f"; done
head -c1 /proc/1/mem >/dev/null 2>&1 && echo init-mem-ok
umount /proc 2>/dev/null && echo umount-ok || echo umount-denied
if command -v unshare >/dev/null; then
	unshare -r -m umount /proc 2>/dev/null && echo nested-umount-ok || echo nested-umount-denied
fi
ls /proc | grep -c '^[0-9]'`)
	if code != 0 {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	fields := map[string]string{}
	var rest []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.TrimSpace(v)
		} else {
			rest = append(rest, line)
		}
	}
	for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		if v := fields[k]; v != "0000000000000000" {
			t.Errorf("%s = %q in the bottle, want none", k, v)
		}
	}
	if fields["NoNewPrivs"] != "1" {
		t.Errorf("NoNewPrivs = %q, want 1", fields["NoNewPrivs"])
	}
	for _, l := range rest {
		if strings.HasPrefix(l, "init-") {
			t.Errorf("the agent reached into the init: %s", l)
		}
	}
	rest = slices.DeleteFunc(rest, func(l string) bool { return strings.HasPrefix(l, "init-") })
	if len(rest) < 2 || rest[0] != "umount-denied" {
		t.Fatalf("the agent unmounted /proc: %q", out)
	}
	if len(rest) == 3 && rest[1] != "nested-umount-denied" {
		t.Errorf("the agent unmounted /proc from a user namespace of its own: %q", out)
	}
	// init, sh, ls and grep (maybe not all at once): not the host's.
	if n, _ := strconv.Atoi(rest[len(rest)-1]); n < 2 || n > 4 {
		t.Errorf("after umount /proc the agent sees %d processes, want its own few", n)
	}
}

// TestHostDirsHidden: /tmp, /run, /dev/shm and the other bottles are out
// of the agent's sight (their sockets with them), its own bottle directory
// is read-only but for work/, and what it needs from under those (project,
// queue, helper) is still there, read-write where it should be.
func TestHostDirsHidden(t *testing.T) {
	root := t.TempDir()
	b := bottles(t, root)
	marker, err := os.CreateTemp("", "skel-host-marker")
	if err != nil {
		t.Fatal(err)
	}
	marker.Close()
	t.Cleanup(func() { os.Remove(marker.Name()) })
	if err := os.MkdirAll(filepath.Join(root, "skel-other"), 0o700); err != nil {
		t.Fatal(err)
	}
	if shm, err := os.CreateTemp("/dev/shm", "skel-host-marker"); err == nil {
		shm.Close()
		t.Cleanup(func() { os.Remove(shm.Name()) })
	}
	proj, queue, tools := t.TempDir(), t.TempDir(), t.TempDir()
	helper := filepath.Join(tools, "bottle")
	if err := os.WriteFile(helper, []byte("#!/bin/sh\necho helper-ok\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var id string
	out, errOut, code := run(t, b, func(s *sdk.Spec) {
		id = s.Identity
		s.Cwd, s.QueueDir, s.HelperBinary = proj, queue, helper
		s.Env["SKEL_DIR"] = filepath.Join(root, s.Identity)
		s.Env["SKEL_MARKER"] = marker.Name()
		s.Env["SKEL_OTHER"] = filepath.Join(root, "skel-other")
	}, "sh", "-c", `try() { if "$@" 2>/dev/null; then echo yes; else echo no; fi; }
echo "marker $(try test -e "$SKEL_MARKER")"
echo "other $(try test -e "$SKEL_OTHER")"
echo "run $(ls -A /run | wc -l)"
echo "shm $(ls -A /dev/shm | wc -l)"
echo "tmpwrite $(try touch /tmp/x)"
echo "exit $(try sh -c 'echo 0 > "$SKEL_DIR/exit"')"
echo "record $(try sh -c 'echo {} > "$SKEL_DIR/bottle.json"')"
echo "newfile $(try touch "$SKEL_DIR/new")"
echo "project $(try touch "$PWD/from-bottle")"
echo "queue $(try touch "$BOT_BOTTLE_QUEUE/req")"
echo "helper $(bottle)"`)
	if code != 0 {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	want := map[string]string{"marker": "no", "other": "no", "run": "0", "shm": "0", "tmpwrite": "yes",
		"exit": "no", "record": "no", "newfile": "no", "project": "yes", "queue": "yes", "helper": "helper-ok"}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(line, " ")
		if w, ok := want[k]; ok && strings.TrimSpace(v) != w {
			t.Errorf("%s: %q, want %q", k, strings.TrimSpace(v), w)
		}
		delete(want, k)
	}
	if len(want) > 0 {
		t.Errorf("no answer for %v in %q", want, out)
	}
	for _, f := range []string{filepath.Join(proj, "from-bottle"), filepath.Join(queue, "req")} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("the agent's write did not reach the host: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, id, "exit")); err != nil {
		t.Errorf("the init could not write the exit file: %v", err)
	}
}

// TestWorkDirWritable: without a project the agent works in its bottle's
// work/, which stays writable inside the read-only bottle directory.
func TestWorkDirWritable(t *testing.T) {
	b := bottles(t, t.TempDir())
	out, errOut, code := run(t, b, nil, "sh", "-c", "echo hi > f && cat f && touch ../nope")
	if code == 0 || !strings.HasPrefix(out, "hi\n") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want hi, then a refused write next to work/", code, out, errOut)
	}
}

// envHelper makes this test binary, run as a bottle's agent, a network
// probe (see TestNetwork).
const envHelper = "SKELETON_TEST_HELPER"

// TestNetwork: inside a bottle, 127.0.0.1 works (the loopback is up) and
// nothing else is reachable. The agent is this test binary, probing.
func TestNetwork(t *testing.T) {
	if os.Getenv(envHelper) != "" {
		probeNetwork()
		return
	}
	b := bottles(t, t.TempDir())
	out, errOut, code := run(t, b, func(s *sdk.Spec) { s.Env[envHelper] = "1" },
		os.Args[0], "-test.run=^TestNetwork$")
	if code != 0 || !strings.Contains(out, "loopback ok") || !strings.Contains(out, "outside unreachable") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func probeNetwork() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("loopback:", err)
		os.Exit(1)
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Close()
		}
	}()
	if c, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second); err == nil {
		c.Close()
		fmt.Println("loopback ok")
	} else {
		fmt.Println("loopback:", err)
	}
	if c, err := net.DialTimeout("tcp", "1.1.1.1:443", 5*time.Second); err != nil {
		fmt.Println("outside unreachable:", err)
	} else {
		c.Close()
		fmt.Println("outside reachable!")
	}
}

// TestSecretsNeverOnDisk: a passed-through value reaches the agent, and no
// file of the bottle (record, logs, pid…) holds it while it runs.
func TestSecretsNeverOnDisk(t *testing.T) {
	root := t.TempDir()
	b := bottles(t, root)
	ctx := context.Background()
	spec := sdk.Spec{Identity: "skel-secret", Command: []string{"sleep", "60"}, Detach: true,
		Env: map[string]string{"SKEL_SECRET": "s3cr3t-0xfeed"}}
	t.Cleanup(func() { _, _ = b.Stop(ctx, sdk.StopRequest{Identity: spec.Identity}) })
	h, err := b.Launch(ctx, spec, sdk.Plan{}, func(sdk.Progress) {})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(h.Data, []byte("s3cr3t")) {
		t.Errorf("the handle holds the secret: %s", h.Data)
	}
	_ = filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			if data, _ := os.ReadFile(p); bytes.Contains(data, []byte("s3cr3t")) {
				t.Errorf("%s holds the secret", p)
			}
		}
		return nil
	})
}

// TestStopKillsTheWholeTree: a bottle's background processes, however they
// were started, go with it.
func TestStopKillsTheWholeTree(t *testing.T) {
	root := t.TempDir()
	b := bottles(t, root)
	ctx := context.Background()
	spec := sdk.Spec{Identity: "skel-tree", Command: []string{"sh", "-c", "(setsid sleep 300 &); sleep 300 & sleep 300"}, Detach: true}
	// Whatever fails below, no init and no sleep 300 outlive the test.
	t.Cleanup(func() { _, _ = b.Stop(context.Background(), sdk.StopRequest{Identity: spec.Identity}) })
	h, err := b.Launch(ctx, spec, sdk.Plan{}, func(sdk.Progress) {})
	if err != nil {
		t.Fatal(err)
	}
	waitProcesses(t, root, spec.Identity, 4) // the init and three sleeps (and sh, unless it became the last)
	if _, err := b.Stop(ctx, sdk.StopRequest{Handle: &h, Identity: spec.Identity}); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(root, spec.Identity); len(left) > 0 {
		t.Errorf("after Stop: %v", left)
	}
}

// TestCopyCwd: the agent works in a copy of the project; the project is
// untouched.
func TestCopyCwd(t *testing.T) {
	proj := t.TempDir()
	if err := os.WriteFile(filepath.Join(proj, "f.txt"), []byte("original\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := bottles(t, t.TempDir())
	out, errOut, code := run(t, b, func(s *sdk.Spec) { s.Cwd, s.CopyCwd = proj, true },
		"sh", "-c", "cat f.txt; echo changed > f.txt; pwd")
	if code != 0 || !strings.HasPrefix(out, "original\n") || strings.Contains(out, proj+"\n") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if data, _ := os.ReadFile(filepath.Join(proj, "f.txt")); string(data) != "original\n" {
		t.Errorf("the project changed: %q", data)
	}
}

// TestMissingCommand: a command the host lacks fails at Prepare, with a
// message that says why.
func TestMissingCommand(t *testing.T) {
	b := newBackend(rootConfig(t, t.TempDir()), "")
	_, err := b.Prepare(context.Background(), sdk.Spec{Identity: "skel-missing", Command: []string{"no-such-command-here"}})
	if err == nil || !strings.Contains(err.Error(), "not on this host's PATH") {
		t.Fatalf("Prepare = %v", err)
	}
}

func TestPlanWarnings(t *testing.T) {
	b := newBackend(rootConfig(t, t.TempDir()), "")
	plan, err := b.Prepare(context.Background(), sdk.Spec{Identity: "skel-plan", Command: []string{"true"},
		Agent: sdk.Agent{Dockerfile: "/agents/shell/Dockerfile"}, Egress: []string{"example.com:443"}})
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(plan.Warnings, "\n")
	for _, want := range []string{"Dockerfile /agents/shell/Dockerfile is not used", "example.com:443 is not applied",
		"every file you can", "no boundary against an agent you do not trust", "Unix sockets outside /tmp, /run and /dev/shm",
		"supplementary groups", "forge what Attach replays"} {
		if !strings.Contains(all, want) {
			t.Errorf("warnings %q lack %q", all, want)
		}
	}
	if root := strings.Contains(all, "you are root"); root != (os.Getuid() == 0) {
		t.Errorf("warnings %q: a root warning is %v, running as uid %d", all, root, os.Getuid())
	}
	lines := map[string]string{}
	for _, l := range plan.Preflight {
		lines[l.Key] = l.Value
	}
	if !strings.Contains(lines["filesystem"], "shared read-write as you") || !strings.Contains(lines["isolation"], "no capabilities") {
		t.Errorf("preflight %v does not say what is shared and what is not", lines)
	}
}

func TestConfig(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", "/state")
	if b := newBackend(json.RawMessage("{}"), "0123abcd"); b.err != nil || b.root != "/state/bot-bottle-skeleton/0123abcd" {
		t.Errorf("default root: %q, %v", b.root, b.err)
	}
	if b := newBackend(json.RawMessage("{}"), ""); b.root != "/state/bot-bottle-skeleton/default" {
		t.Errorf("default root without a home id: %q", b.root)
	}
	t.Setenv("XDG_STATE_HOME", "")
	t.Setenv("HOME", "/home/u")
	if b := newBackend(json.RawMessage("{}"), "h"); b.root != "/home/u/.local/state/bot-bottle-skeleton/h" {
		t.Errorf("default root without XDG_STATE_HOME: %q", b.root)
	}
	for _, bad := range []string{`{"root": "relative"}`, `{"rot": "/typo"}`} {
		b := newBackend(json.RawMessage(bad), "")
		if b.err == nil {
			t.Errorf("config %s accepted", bad)
		}
		if _, err := b.List(context.Background()); err == nil {
			t.Errorf("config %s: List works without a root", bad)
		}
	}
}

// TestDetachedOutputAndExitCode: a detached agent's output and exit code
// wait for whoever attaches later, from a fresh backend value (as a fresh
// plugin process would be).
func TestDetachedOutputAndExitCode(t *testing.T) {
	root := t.TempDir()
	ctx := context.Background()
	spec := sdk.Spec{Identity: "skel-detached", Command: []string{"sh", "-c", "echo early; echo oops >&2; exit 5"}, Detach: true}
	b := bottles(t, root)
	t.Cleanup(func() { _, _ = b.Stop(ctx, sdk.StopRequest{Identity: spec.Identity}) })
	h, err := b.Launch(ctx, spec, sdk.Plan{}, func(sdk.Progress) {})
	if err != nil {
		t.Fatal(err)
	}
	// A fresh plugin process would see it exited, then attach.
	deadline := time.Now().Add(30 * time.Second)
	for status(t, b, spec.Identity) != sdk.StatusExited {
		if time.Now().After(deadline) {
			t.Fatalf("status %q 30s after the launch, want exited", status(t, b, spec.Identity))
		}
		time.Sleep(10 * time.Millisecond)
	}
	var out, errOut bytes.Buffer
	st, err := newBackend(rootConfig(t, root), "").Attach(ctx, sdk.AttachRequest{Handle: h},
		sdk.AttachStreams{Stdout: &out, Stderr: &errOut, Stdin: strings.NewReader("ignored")})
	if err != nil || st.Code != 5 || out.String() != "early\n" || errOut.String() != "oops\n" {
		t.Fatalf("attach: %+v, %v, stdout %q, stderr %q", st, err, out.String(), errOut.String())
	}
}

// status is what List says of the bottle id ("" when it is not listed).
func status(t *testing.T, b *backend, id string) string {
	t.Helper()
	bs, err := b.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, bt := range bs {
		if bt.Identity == id {
			return bt.Status
		}
	}
	return ""
}

// TestStartFailure: a command that cannot start ends the bottle like a
// shell would, with 127 and the reason on stderr.
func TestStartFailure(t *testing.T) {
	b := bottles(t, t.TempDir())
	_, errOut, code := run(t, b, nil, "/no/such/command")
	if code != 127 || !strings.Contains(errOut, "/no/such/command") {
		t.Fatalf("exit %d, stderr %q; want 127 and the reason", code, errOut)
	}
}

// TestStopDoesNotTrustTheBottleDirectory: the agent runs as you and can
// move its bottle's directory away (or forge it). Stop and List find the
// init through the kernel anyway, and Stop still ends every process.
func TestStopDoesNotTrustTheBottleDirectory(t *testing.T) {
	root := t.TempDir()
	b := bottles(t, root)
	ctx := context.Background()
	spec := sdk.Spec{Identity: "skel-moved", Command: []string{"sh", "-c", "sleep 300 & sleep 300"}, Detach: true}
	t.Cleanup(func() { _, _ = b.Stop(ctx, sdk.StopRequest{Identity: spec.Identity}) })
	if _, err := b.Launch(ctx, spec, sdk.Plan{}, func(sdk.Progress) {}); err != nil {
		t.Fatal(err)
	}
	waitProcesses(t, root, spec.Identity, 4) // init, sh, two sleeps
	dir := filepath.Join(root, spec.Identity)
	if err := os.Rename(dir, dir+"-moved"); err != nil {
		t.Fatal(err)
	}
	if st := status(t, b, spec.Identity); st != sdk.StatusRunning {
		t.Errorf("List says %q of a running bottle whose directory is gone, want running", st)
	}
	if _, err := b.Stop(ctx, sdk.StopRequest{Identity: spec.Identity}); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(root, spec.Identity); len(left) > 0 {
		t.Errorf("after Stop: %v", left)
	}
	if st := status(t, b, spec.Identity); st != "" {
		t.Errorf("List still has the bottle after Stop: %q", st)
	}
}

// TestStopIgnoresForgedInits: a process that only looks like a bottle's
// init (its command line), and is not pid 1 of a pid namespace right
// below the plugin, is never killed or listed.
func TestStopIgnoresForgedInits(t *testing.T) {
	root := t.TempDir()
	b := newBackend(rootConfig(t, root), "")
	fake := filepath.Join(root, "skel-fake")
	if err := os.WriteFile(fake, []byte("sleep 300; true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	// Its own process group, so that the cleanup ends its sleep too.
	forged := &exec.Cmd{Path: sh, Args: []string{initName, fake}, SysProcAttr: &syscall.SysProcAttr{Setpgid: true}}
	if err := forged.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-forged.Process.Pid, syscall.SIGKILL); _ = forged.Wait() })
	if _, err := b.Stop(context.Background(), sdk.StopRequest{Identity: "skel-fake"}); err != nil {
		t.Fatal(err)
	}
	if state, _, _ := procStat(strconv.Itoa(forged.Process.Pid)); state == "" || state == "Z" {
		t.Errorf("Stop killed a process that only looked like the bottle's init (state %q)", state)
	}
	if st := status(t, b, "skel-fake"); st != "" {
		t.Errorf("List reports a forged init as a bottle (%q)", st)
	}
}

// waitProcesses waits until n of the bottle's processes are up.
func waitProcesses(t *testing.T, root, id string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(leftovers(root, id)) < n+1 && time.Now().Before(deadline) { // +1: the directory
		time.Sleep(20 * time.Millisecond)
	}
	if got := len(leftovers(root, id)) - 1; got < n {
		t.Fatalf("only %d of the bottle's %d processes showed up: %v", got, n, leftovers(root, id))
	}
}

func TestPtsDevice(t *testing.T) {
	for in, want := range map[string]string{
		"/dev/pts/3": "/dev/pts/3", "/dev/pts/12\n": "/dev/pts/12", "/dev/pts//4": "/dev/pts/4",
		"/dev/pts/../sda": "", "/dev/pts/../../etc/passwd": "", "/dev/pts/ptmx": "", "/dev/pts/": "",
		"/dev/sda": "", "dev/pts/1": "", "/dev/pts/1/..": "",
	} {
		if got, ok := ptsDevice(in); got != want || ok != (want != "") {
			t.Errorf("ptsDevice(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

// TestUserNSHint: a refusal of the namespaces names its likely cause.
func TestUserNSHint(t *testing.T) {
	for _, c := range []struct {
		sysctls map[string]string
		want    string
	}{
		{map[string]string{"kernel/apparmor_restrict_unprivileged_userns": "1", "user/max_user_namespaces": "1000"}, "kernel.apparmor_restrict_unprivileged_userns=1"},
		{map[string]string{"kernel/apparmor_restrict_unprivileged_userns": "0", "kernel/unprivileged_userns_clone": "0"}, "kernel.unprivileged_userns_clone=0"},
		{map[string]string{"user/max_user_namespaces": "0"}, "user.max_user_namespaces=0"},
		{map[string]string{"user/max_user_namespaces": "1000"}, "not available to this process"},
	} {
		dir := t.TempDir()
		for name, v := range c.sysctls {
			if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name), []byte(v+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if got := userNSHint(dir); !strings.Contains(got, c.want) {
			t.Errorf("%v: hint %q, want it to name %q", c.sysctls, got, c.want)
		}
	}
	err := withUserNSHint(fmt.Errorf("mount /proc: %w", syscall.EPERM))
	if !errors.Is(err, syscall.EPERM) || !strings.Contains(err.Error(), "mount /proc: operation not permitted (likely cause: ") {
		t.Errorf("a refusal reads %q", err)
	}
	if err := withUserNSHint(fmt.Errorf("loopback: %w", syscall.ENODEV)); strings.Contains(err.Error(), "likely cause") {
		t.Errorf("an unrelated error gets a hint: %q", err)
	}
}
