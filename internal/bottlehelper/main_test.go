package bottlehelper

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/queue"
	"github.com/bot-bottle/bot-bottle/internal/syncbuf"
	"github.com/bot-bottle/bot-bottle/sdk"
)

const testID = "shell-7k2qz"

// helperBin is the real `bottle` binary, built once by TestMain the way the
// Makefile builds it (static, CGO off).
var helperBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bottle-helper-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	helperBin = filepath.Join(dir, "bottle")
	build := exec.Command("go", "build", "-o", helperBin, "../../cmd/bottle")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build bottle: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// bottleQueue makes a home with the bottle's queue dir, as the core would.
func bottleQueue(t *testing.T) (*queue.Queue, string) {
	t.Helper()
	q := queue.Open(t.TempDir())
	dir, err := q.Dir(testID)
	if err != nil {
		t.Fatal(err)
	}
	return q, dir
}

// runIn runs the helper in-process with a bottle's environment.
func runIn(t *testing.T, dir, identity string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	getenv := func(k string) string {
		switch k {
		case envQueueDir:
			return dir
		case envIdentity:
			return identity
		}
		return ""
	}
	code := run(context.Background(), args, getenv, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestConstantsMatchSDK(t *testing.T) {
	if defaultQueueDir != sdk.GuestQueueDir || envQueueDir != sdk.EnvQueueDir || envIdentity != sdk.EnvIdentity {
		t.Fatalf("helper constants drifted from the sdk: %q %q %q", defaultQueueDir, envQueueDir, envIdentity)
	}
}

// The helper goes into every bottle: it must not drag in Docker or gRPC.
func TestHelperDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		switch dep {
		case "github.com/bot-bottle/bot-bottle/sdk/names", // the one identity rule
			"github.com/bot-bottle/bot-bottle/sdk/egressrule", // the one egress rule grammar (the queue vets with it)
			"github.com/bot-bottle/bot-bottle/sdk/render":     // the one renderer
			continue // packages of the standard library and x/net's public suffix list only
		}
		for _, banned := range []string{"google.golang.org/grpc", "github.com/docker/", "github.com/hashicorp/", "github.com/bot-bottle/bot-bottle/sdk"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("bottle depends on %s", dep)
			}
		}
	}
	fi, err := os.Stat(helperBin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bottle binary: %d bytes", fi.Size())
	if fi.Size() > 12<<20 {
		t.Errorf("bottle binary is %d bytes; it should stay small", fi.Size())
	}
}

func TestUsageErrors(t *testing.T) {
	_, dir := bottleQueue(t)
	df := filepath.Join(t.TempDir(), "Dockerfile")
	os.WriteFile(df, bytes.Repeat([]byte("#"), queue.MaxDockerfileLen+1), 0o644)
	cases := []struct {
		name, identity string
		args           []string
		want           string
	}{
		{"no command", testID, nil, "expected"},
		{"unknown command", testID, []string{"approve", "x"}, "unexpected"},
		{"no reason", testID, []string{"request", "capability", "--run", "true"}, "reason"},
		{"no change", testID, []string{"request", "capability", "--reason", "r"}, "--dockerfile"},
		{"both changes", testID, []string{"request", "capability", "--reason", "r", "--run", "x", "--dockerfile", df}, "together"},
		{"missing dockerfile", testID, []string{"request", "capability", "--reason", "r", "--dockerfile", "/nonexistent/Dockerfile"}, "no such file"},
		{"huge dockerfile", testID, []string{"request", "capability", "--reason", "r", "--dockerfile", df}, "larger than"},
		{"run newline", testID, []string{"request", "capability", "--reason", "r", "--run", "true\nUSER root"}, "forbidden character"},
		{"bad host", testID, []string{"request", "egress", "http://x", "--reason", "r"}, "host"},
		{"no host", testID, []string{"request", "egress", "--reason", "r"}, "expected"},
		{"blank reason", testID, []string{"request", "egress", "a.b", "--reason", " "}, "reason"},
		{"bad identity env", "../evil", []string{"request", "egress", "a.b", "--reason", "r"}, "not a bottle identity"},
		{"bad duration", testID, []string{"request", "egress", "a.b", "--reason", "r", "--timeout", "soon"}, "timeout"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out, errOut := runIn(t, dir, c.identity, c.args...)
			if code != exitUsage {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", code, exitUsage, out, errOut)
			}
			if !strings.Contains(errOut, c.want) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
				t.Fatalf("stderr %q: want one line mentioning %q", errOut, c.want)
			}
			if ents, _ := os.ReadDir(filepath.Join(dir, "inbox")); len(ents) != 0 {
				t.Fatalf("a refused command wrote to the inbox: %v", ents)
			}
		})
	}
}

func TestHelpExitsZero(t *testing.T) {
	code, out, _ := runIn(t, "", "", "request", "egress", "--help")
	if code != 0 || !strings.Contains(out, "HOST[:PORT]") {
		t.Fatalf("--help: exit %d, %q", code, out)
	}
}

func TestNoQueue(t *testing.T) {
	code, _, errOut := runIn(t, filepath.Join(t.TempDir(), "missing"), testID, "request", "egress", "a.b", "--reason", "r", "--no-wait")
	if code != exitError || !strings.Contains(errOut, "no request queue") {
		t.Fatalf("exit %d, %q", code, errOut)
	}
}

// --no-wait leaves exactly one well-formed, host-readable request in the inbox.
func TestNoWaitWritesRequest(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	q, dir := bottleQueue(t)
	code, out, errOut := runIn(t, dir, testID, "request", "capability", "--reason", "need rg", "--run", "RUN apt-get install -y ripgrep", "--no-wait")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	token := strings.TrimSpace(strings.TrimPrefix(out, "submitted "))
	if !queue.ValidToken(token) {
		t.Fatalf("stdout %q carries no token", out)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "inbox"))
	if len(ents) != 1 || ents[0].Name() != token+".json" {
		t.Fatalf("inbox holds %v", ents)
	}
	fi, _ := ents[0].Info()
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("request mode %v under umask 077; the host may be another uid", fi.Mode())
	}
	rs, refused, err := q.Ingest(testID)
	if err != nil || len(refused) != 0 || len(rs) != 1 {
		t.Fatalf("host Ingest: %v %v %v", rs, refused, err)
	}
	if r := rs[0]; r.Run != "apt-get install -y ripgrep" || r.Reason != "need rg" || r.ClientToken != token {
		t.Fatalf("host sees %+v", r)
	}
}

func TestRequestsListing(t *testing.T) {
	q, dir := bottleQueue(t)
	if code, out, _ := runIn(t, dir, testID, "requests"); code != 0 || !strings.Contains(out, "no requests") {
		t.Fatalf("empty listing: %d %q", code, out)
	}
	for _, h := range []string{"one.test", "two.test:8443"} {
		if code, _, errOut := runIn(t, dir, testID, "request", "egress", h, "--reason", "r", "--no-wait"); code != 0 {
			t.Fatal(errOut)
		}
	}
	rs, _, _ := q.Ingest(testID)
	if len(rs) != 2 {
		t.Fatalf("ingested %d", len(rs))
	}
	q.Decide(rs[0].ID, false, "not that one", "user:op")
	runIn(t, dir, testID, "request", "egress", "three.test", "--reason", "r", "--no-wait")

	code, out, errOut := runIn(t, dir, testID, "requests")
	if code != 0 {
		t.Fatal(errOut)
	}
	// The third request is not seen by the host yet: it shows as submitted.
	for _, want := range []string{rs[0].ID, "denied", "not that one", rs[1].ID, "pending", "two.test:8443", "submitted"} {
		if !strings.Contains(out, want) {
			t.Errorf("listing lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = runIn(t, dir, testID, "requests", "--json")
	var rcs []queue.Receipt
	if code != 0 || json.Unmarshal([]byte(out), &rcs) != nil || len(rcs) != 3 {
		t.Fatalf("--json: %d %q", code, out)
	}
	if rcs[0].Status != queue.StatusDenied || rcs[1].Status != queue.StatusPending || rcs[2].Status != statusSubmitted {
		t.Fatalf("statuses: %+v", rcs)
	}
}

// syncBuffer is a buffer the test may read while the child writes.
type syncBuffer = syncbuf.Buffer

// startHelper runs the real binary as the agent would inside the bottle.
func startHelper(t *testing.T, dir, identity string, args ...string) (*exec.Cmd, *syncBuffer, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(helperBin, args...)
	cmd.Env = []string{envQueueDir + "=" + dir, envIdentity + "=" + identity, "PATH=/usr/bin:/bin"}
	var out, errOut syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, &out, &errOut
}

// hostIngest plays the core: polls the inbox until one request arrives.
func hostIngest(t *testing.T, q *queue.Queue) queue.Request {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		rs, refused, err := q.Ingest(testID)
		if err != nil || len(refused) != 0 {
			t.Fatalf("Ingest: %v %v", err, refused)
		}
		if len(rs) == 1 {
			return rs[0]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no request reached the host")
	return queue.Request{}
}

func waitExit(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(20 * time.Second):
		t.Fatal("helper did not exit")
		return -1
	}
}

// waitFor waits until the helper has printed want on stderr.
func waitFor(t *testing.T, buf *syncBuffer, want string) {
	t.Helper()
	for range 400 {
		if strings.Contains(buf.String(), want) {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("helper never printed %q; stderr so far: %q", want, buf.String())
}

func TestEndToEndApprove(t *testing.T) {
	q, dir := bottleQueue(t)
	cmd, out, errOut := startHelper(t, dir, testID, "request", "capability", "--reason", "need ripgrep", "--run", "apt-get install -y ripgrep", "--poll", "20ms")
	r := hostIngest(t, q)
	if r.Kind != queue.KindCapability || r.Run != "apt-get install -y ripgrep" {
		t.Fatalf("host got %+v", r)
	}
	waitFor(t, errOut, "bot-bottle approve "+r.ID)
	if cmd.ProcessState != nil {
		t.Fatal("helper returned before the decision")
	}
	if _, err := q.Decide(r.ID, true, "go ahead", "user:op"); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, cmd); code != 0 {
		t.Fatalf("exit %d; stdout %q stderr %q", code, out, errOut)
	}
	if !strings.Contains(out.String(), "approved "+r.ID+": go ahead") {
		t.Fatalf("stdout %q", out)
	}
}

func TestEndToEndDeny(t *testing.T) {
	q, dir := bottleQueue(t)
	cmd, out, errOut := startHelper(t, dir, testID, "request", "egress", "Docs.Example.test:8443", "--reason", "read docs", "--poll", "20ms")
	r := hostIngest(t, q)
	if r.Host != "docs.example.test:8443" {
		t.Fatalf("host got %+v", r)
	}
	if _, err := q.Decide(r.ID, false, "use the mirror\x1b[2J", "user:op"); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, cmd); code != exitDenied {
		t.Fatalf("exit %d, want 3; stdout %q stderr %q", code, out, errOut)
	}
	if !strings.Contains(out.String(), "denied "+r.ID+": use the mirror?[2J") || !strings.Contains(errOut.String(), "use the mirror") {
		t.Fatalf("denial not reported with its reason (escapes neutralised): stdout %q stderr %q", out, errOut)
	}
}

func TestEndToEndNoWait(t *testing.T) {
	q, dir := bottleQueue(t)
	cmd, out, errOut := startHelper(t, dir, testID, "request", "egress", "a.test", "--reason", "r", "--no-wait")
	if code := waitExit(t, cmd); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.HasPrefix(out.String(), "submitted ") {
		t.Fatalf("stdout %q", out)
	}
	if r := hostIngest(t, q); r.Host != "a.test" {
		t.Fatalf("host got %+v", r)
	}
}

// A request the host refuses (here: the bottle claims another identity than
// its queue's) ends the wait with exit 3 and the host's reason.
func TestEndToEndRefused(t *testing.T) {
	q, dir := bottleQueue(t)
	cmd, out, errOut := startHelper(t, dir, "other-aaaaa", "request", "egress", "a.test", "--reason", "r", "--poll", "20ms")
	var refused []error
	for range 500 {
		var err error
		if _, refused, err = q.Ingest(testID); err != nil {
			t.Fatal(err)
		}
		if len(refused) > 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(refused) != 1 {
		t.Fatalf("host refusals: %v", refused)
	}
	if code := waitExit(t, cmd); code != exitDenied {
		t.Fatalf("exit %d; stdout %q stderr %q", code, out, errOut)
	}
	if !strings.Contains(out.String(), "refused") || !strings.Contains(out.String(), "names identity") {
		t.Fatalf("stdout %q", out)
	}
}

func TestEndToEndTimeoutAndInterrupt(t *testing.T) {
	_, dir := bottleQueue(t)
	cmd, _, errOut := startHelper(t, dir, testID, "request", "egress", "a.test", "--reason", "r", "--timeout", "200ms", "--poll", "20ms")
	if code := waitExit(t, cmd); code != exitError || !strings.Contains(errOut.String(), "still pending") {
		t.Fatalf("timeout: exit %d, %q", code, errOut)
	}
	cmd, _, errOut = startHelper(t, dir, testID, "request", "egress", "b.test", "--reason", "r", "--poll", "20ms")
	waitFor(t, errOut, "waiting for the host")
	cmd.Process.Signal(os.Interrupt)
	if code := waitExit(t, cmd); code != exitError || !strings.Contains(errOut.String(), "stopped waiting") {
		t.Fatalf("interrupt: exit %d, %q", code, errOut)
	}
}

// The bottle's user is not the host's: run the helper as uid 1000 against
// the modes Dir sets. The queue dir is handed over as an open directory
// (/proc/self/fd/3), which, like the bind mount a backend makes, does not
// need the host's 0700 parents to be traversable.
func TestEndToEndAsBottleUser(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run the helper as another uid")
	}
	q, dir := bottleQueue(t)
	if err := os.Chmod(filepath.Dir(helperBin), 0o755); err != nil {
		t.Fatal(err)
	}
	qd, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer qd.Close()
	start := func(args ...string) (*exec.Cmd, *syncBuffer, *syncBuffer) {
		cmd := exec.Command(helperBin, args...)
		cmd.Env = []string{envQueueDir + "=/proc/self/fd/3", envIdentity + "=" + testID}
		cmd.ExtraFiles = []*os.File{qd}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1000, Gid: 1000}}
		var out, errOut syncBuffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				cmd.Process.Kill()
				cmd.Wait()
			}
		})
		return cmd, &out, &errOut
	}
	cmd, out, errOut := start("request", "egress", "a.test", "--reason", "r", "--poll", "20ms")
	r := hostIngest(t, q)
	if _, err := q.Decide(r.ID, true, "ok", "user:op"); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, cmd); code != 0 {
		t.Fatalf("exit %d; stdout %q stderr %q", code, out, errOut)
	}
	// The bottle's user can read its receipts but not write a decision.
	cmd, out, errOut = start("requests")
	if code := waitExit(t, cmd); code != 0 || !strings.Contains(out.String(), "approved") {
		t.Fatalf("requests as uid 1000: exit %d, %q %q", code, out, errOut)
	}
	forge := exec.Command("/bin/busybox", "sh", "-c", "echo '{}' > /proc/self/fd/3/outbox/forged.json")
	forge.ExtraFiles = []*os.File{qd}
	forge.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1000, Gid: 1000}}
	if out, err := forge.CombinedOutput(); err == nil {
		t.Fatalf("uid 1000 wrote into the outbox: %s", out)
	}
}
