package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var fakePath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fakesmolvm-test-")
	if err != nil {
		panic(err)
	}
	fakePath = filepath.Join(dir, "smolvm")
	if out, err := exec.Command("go", "build", "-o", fakePath, ".").CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		panic(string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type fake struct {
	t     *testing.T
	state string
	env   []string // added to every run's environment
	bin   string   // the smolvm to run; "" is the fake
}

func newFake(t *testing.T) *fake {
	return &fake{t: t, state: t.TempDir()}
}

// run runs the fake with args and stdin, returning stdout, stderr, code.
func (f *fake) run(stdin string, args ...string) (string, string, int) {
	f.t.Helper()
	bin := f.bin
	if bin == "" {
		bin = fakePath
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(append(os.Environ(), "SMOLVM_FAKE_STATE="+f.state, "SMOLVM_FAKE_RESOLVABLE=example.com"), f.env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if xe, ok := err.(*exec.ExitError); ok {
		code = xe.ExitCode()
	} else if err != nil {
		f.t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func (f *fake) mustRun(args ...string) string {
	f.t.Helper()
	out, errOut, code := f.run("", args...)
	if code != 0 {
		f.t.Fatalf("smolvm %q exited %d: %s", args, code, errOut)
	}
	return out
}

func (f *fake) ls() []map[string]any {
	f.t.Helper()
	var ms []map[string]any
	if err := json.Unmarshal([]byte(f.mustRun("machine", "ls", "--json")), &ms); err != nil {
		f.t.Fatal(err)
	}
	return ms
}

func TestRefusals(t *testing.T) {
	f := newFake(t)
	proj := t.TempDir()
	file := filepath.Join(proj, "f")
	_ = os.WriteFile(file, []byte("x"), 0o644)
	dockerfile := filepath.Join(proj, "Dockerfile")
	_ = os.WriteFile(dockerfile, []byte("FROM alpine\n"), 0o644)
	f.mustRun("machine", "create", "--name", "ok", "--net", "--image", "alpine")
	for _, tc := range []struct {
		args     []string
		code     int
		contains string
	}{
		{[]string{"machine", "create", "--name", "a--b", "--net", "--image", "alpine"}, 1, "Error: config operation failed: create machine: machine name cannot contain consecutive hyphens"},
		{[]string{"machine", "create", "--name", "a-", "--net", "--image", "alpine"}, 1, "cannot end with a hyphen"},
		{[]string{"machine", "create", "--name", "-a", "--net", "--image", "alpine"}, 2, "a value is required for '--name"},
		{[]string{"machine", "create", "--name", "a.b", "--net", "--image", "alpine"}, 1, "contains invalid character: '.'"},
		{[]string{"machine", "create", "--name", strings.Repeat("a", 129), "--net", "--image", "alpine"}, 1, "too long: 129 characters (max 128)"},
		{[]string{"machine", "create", "--name", "x", "--bogus"}, 2, "error: unexpected argument '--bogus' found"},
		{[]string{"machine", "create", "--name", "x", "--image", "alpine", "--from", "s.smolmachine"}, 2, "cannot be used with"},
		{[]string{"machine", "create", "--name", "x", "--image", "alpine"}, 1, "no network"},
		{[]string{"machine", "create", "--name", "x", "--image", "alpine", "--allow-host", "api.example.com:443"}, 1, "port suffixes are not supported"},
		{[]string{"machine", "create", "--name", "x", "--image", "alpine", "--allow-host", "nxdomain.invalid"}, 1, "failed to resolve"},
		{[]string{"machine", "create", "--name", "x", "--image", dockerfile}, 1, "looks like a Dockerfile, not an image."},
		{[]string{"machine", "create", "--name", "x", "--image", "/no/such.tar"}, 1, "cannot read archive /no/such.tar: No such file or directory"},
		{[]string{"machine", "create", "--name", "x", "--net", "--image", "alpine", "-v", file + ":/w"}, 1, "not a directory"},
		{[]string{"machine", "create", "--name", "x", "--net", "--image", "alpine", "-v", proj + ":rel"}, 1, "must be absolute"},
		{[]string{"machine", "create", "--name", "x", "--net", "--image", "alpine", "-v", proj + ":/etc"}, 1, "system path"},
		{[]string{"machine", "create", "--name", "x", "--net", "--image", "alpine", "-v", proj + ":/w", "-v", proj + ":/w"}, 1, "duplicate"},
		{[]string{"machine", "create", "--name", "x", "--net", "--image", "alpine", "--cpus", "0"}, 1, "CPU count must be at least 1"},
		{[]string{"machine", "create", "--name", "ok", "--net", "--image", "alpine"}, 1, "already exists"},
		{[]string{"machine", "exec", "-n", "ok", "--", "true"}, 2, "unexpected argument '-n' found"},
		{[]string{"machine", "exec", "--name", "ok", "--", "true"}, 1, "not running"},
		{[]string{"machine", "exec", "--name", "ok"}, 2, "<COMMAND>"},
		{[]string{"machine", "start", "--name", "nope"}, 1, "Error: vm not found: nope"},
		{[]string{"machine", "frobnicate"}, 2, "unrecognized subcommand"},
		{[]string{"pack", "create", "--from-vm", "ok", "-o", filepath.Join(proj, "s.smolmachine")}, 1, "Use --output " + filepath.Join(proj, "s") + " instead."},
	} {
		_, errOut, code := f.run("", tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.contains) {
			t.Errorf("smolvm %q: exit %d, stderr %q; want exit %d containing %q", tc.args, code, errOut, tc.code, tc.contains)
		}
	}
	if ms := f.ls(); len(ms) != 1 {
		t.Errorf("refused creates left machines: %v", ms)
	}
}

func TestDeleteWithoutForcePromptsAndCancelsOnEOF(t *testing.T) {
	f := newFake(t)
	f.mustRun("machine", "create", "--name", "keep", "--net", "--image", "alpine")
	if out, errOut, code := f.run("", "machine", "delete", "--name", "keep"); code != 0 || out != "Cancelled\n" || errOut != "Delete machine 'keep'? [y/N] " {
		t.Errorf("delete on EOF: exit %d, out %q, stderr %q; want the question on stderr and Cancelled", code, out, errOut)
	}
	if len(f.ls()) != 1 {
		t.Error("delete on EOF removed the machine")
	}
	f.mustRun("machine", "delete", "--name", "keep", "-f")
	if len(f.ls()) != 0 {
		t.Error("delete -f left the machine")
	}
	if out := strings.TrimSpace(f.mustRun("machine", "ls", "--json")); out != "[]" {
		t.Errorf("ls --json with no machines = %q, want []", out)
	}
}

func TestLsShape(t *testing.T) {
	f := newFake(t)
	f.mustRun("machine", "create", "--name", "m1", "--allow-host", "api.example.com", "--image", "alpine", "--label", "k=v=w")
	ms := f.ls()
	if len(ms) != 1 {
		t.Fatalf("ls = %v", ms)
	}
	for _, k := range []string{"name", "state", "cpus", "memory_mib", "pid", "mounts", "ports", "created_at", "storage_gb",
		"overlay_gb", "image", "entrypoint", "cmd", "ephemeral", "gpu", "cuda", "forkable", "labels", "network"} {
		if _, ok := ms[0][k]; !ok {
			t.Errorf("ls --json lacks %q", k)
		}
	}
	if ms[0]["state"] != "created" || ms[0]["network"] != true || ms[0]["labels"].(map[string]any)["k"] != "v=w" {
		t.Errorf("ls = %v", ms[0])
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(f.mustRun("machine", "status", "--name", "m1", "--json")), &st); err != nil || st["name"] != "m1" {
		t.Errorf("status --json = %v, %v", st, err)
	}
}

func TestExecPassesGuestExitCodeAndMapsMounts(t *testing.T) {
	f := newFake(t)
	proj := t.TempDir()
	_ = os.WriteFile(filepath.Join(proj, "in.txt"), []byte("mounted"), 0o644)
	f.mustRun("machine", "create", "--name", "e", "--net", "--image", "alpine", "-v", proj+":/workspace", "-w", "/workspace",
		"--secret-env", "TOKEN=FAKE_TEST_HOSTVAR")
	if _, errOut, code := f.run("", "machine", "start", "--name", "e"); code != 1 || !strings.Contains(errOut, "Error: config operation failed: resolve secret 'TOKEN': env_unset") {
		t.Errorf("start without the secret's host var: %d %q", code, errOut)
	}
	t.Setenv("FAKE_TEST_HOSTVAR", "v4lue")
	f.mustRun("machine", "start", "--name", "e")
	out, _, code := f.run("", "machine", "exec", "--name", "e", "--", "sh", "-c", `cat in.txt; echo " $TOKEN"; exit 42`)
	if code != 42 || out != "mounted v4lue\n" {
		t.Errorf("exec: exit %d, out %q; want 42, the mounted file and the secret", code, out)
	}
	out, _, _ = f.run("", "machine", "exec", "--name", "e", "--", "cat", "/workspace/in.txt")
	if out != "mounted" {
		t.Errorf("absolute guest path not mapped: %q", out)
	}
	if _, _, code := f.run("", "machine", "exec", "--name", "e", "--timeout", "200ms", "--", "sleep", "5"); code != 124 {
		t.Errorf("timeout exit = %d, want 124", code)
	}
	b, _ := os.ReadFile(filepath.Join(f.state, "calls.jsonl"))
	if bytes.Contains(b, []byte("v4lue")) {
		t.Error("the call log holds a secret value")
	}
	if !bytes.Contains(b, []byte(`"FAKE_TEST_HOSTVAR"`)) {
		t.Error("the call log lacks env names")
	}
}

func TestPackRefusesLocalArchiveAndNeedsStop(t *testing.T) {
	f := newFake(t)
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	_ = os.Mkdir(rootfs, 0o755)
	f.mustRun("machine", "create", "--name", "local", "--image", rootfs)
	if _, errOut, code := f.run("", "pack", "create", "--from-vm", "local", "-o", filepath.Join(dir, "p")); code != 1 || !strings.Contains(errOut, "local image") {
		t.Errorf("pack of a rootfs machine: %d %q", code, errOut)
	}
	f.mustRun("machine", "create", "--name", "reg", "--net", "--image", "alpine")
	f.mustRun("machine", "start", "--name", "reg")
	if _, errOut, code := f.run("", "pack", "create", "--from-vm", "reg", "-o", filepath.Join(dir, "p")); code != 1 || !strings.Contains(errOut, "is running. Stop it first") {
		t.Errorf("pack of a running machine: %d %q", code, errOut)
	}
	f.mustRun("machine", "stop", "--name", "reg")
	f.mustRun("pack", "create", "--from-vm", "reg", "-o", filepath.Join(dir, "p"))
	if _, err := os.Stat(filepath.Join(dir, "p.smolmachine")); err != nil {
		t.Fatal(err)
	}
	f.mustRun("machine", "create", "--name", "back", "--from", filepath.Join(dir, "p.smolmachine"))
	ms := f.ls()
	if len(ms) != 3 {
		t.Errorf("ls = %v", ms)
	}
}

// egress-events follows smolvm: strict flags, a pretty JSON array of
// {timestamp, operation, dest} oldest first, the newest --limit kept, noise
// lines skipped, and no error for a machine it knows nothing about.
func TestEgressEvents(t *testing.T) {
	f := newFake(t)
	if out := f.mustRun("machine", "egress-events", "--name", "nobody-here", "--json"); out != "[]\n" {
		t.Errorf("unknown machine: %q, want []", out)
	}
	if out := f.mustRun("machine", "egress-events", "-n", "nobody-here"); out != "No egress denials recorded for 'nobody-here'.\n" {
		t.Errorf("unknown machine, text: %q", out)
	}
	for _, args := range [][]string{
		{"--name", "m", "--limit", "x"},
		{"--name", "m", "--limit", "-1"},
		{"--name", "m", "--since", "1h"},
		{"--name"},
		{"--name", "a", "--name", "b"},
		{"m"},
	} {
		if _, errOut, code := f.run("", append([]string{"machine", "egress-events"}, args...)...); code != 2 || !strings.HasPrefix(errOut, "error: ") {
			t.Errorf("egress-events %q: exit %d, %q; want clap's exit 2", args, code, errOut)
		}
	}

	f.mustRun("machine", "create", "--name", "m", "--allow-host", "example.com", "--image", "alpine")
	if _, errOut, code := f.run("", "machine", "data-dir", "--name", "ghost"); code != 1 || !strings.Contains(errOut, "vm not found: ghost") {
		t.Errorf("data-dir of an unknown machine: %d %q", code, errOut)
	}
	dir := strings.TrimSpace(f.mustRun("machine", "data-dir", "--name", "m"))
	if !strings.HasPrefix(dir, f.state) {
		t.Fatalf("data dir %q is not under the fake's state", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	log := strings.Join([]string{
		"[2026-08-13T02:31:00Z]: egress policy denied connect to 10.0.0.1:443",
		"[2026-08-14T03:13:08Z]: virtio-net: guest TCP SYN source=x destination=y",
		"[2026-08-13T02:31:01.123456Z WARN  libkrun] egress policy denied sendto 10.0.0.2:53",
		"plain unrelated stderr line",
		"[ts WARN x] egress policy denied",
		"[2026-08-13T02:31:02Z]: egress policy denied resolve evil.example",
		"egress policy denied connect to 10.0.0.3:80",
	}, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(dir, "egress-denials.log"), []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	var evs []map[string]string
	out := f.mustRun("machine", "egress-events", "--name", "m", "--json")
	if err := json.Unmarshal([]byte(out), &evs); err != nil {
		t.Fatalf("parse %q: %v", out, err)
	}
	want := []map[string]string{
		{"timestamp": "2026-08-13T02:31:00Z", "operation": "connect", "dest": "10.0.0.1:443"},
		{"timestamp": "2026-08-13T02:31:01.123456Z", "operation": "sendto", "dest": "10.0.0.2:53"},
		{"timestamp": "2026-08-13T02:31:02Z", "operation": "resolve", "dest": "evil.example"},
		{"timestamp": "", "operation": "connect", "dest": "10.0.0.3:80"},
	}
	got, _ := json.Marshal(evs)
	exp, _ := json.Marshal(want)
	if string(got) != string(exp) {
		t.Errorf("events\n%s\nwant\n%s", got, exp)
	}
	if !strings.HasPrefix(out, "[\n  {\n    \"timestamp\"") {
		t.Errorf("not serde's pretty JSON: %q", out)
	}
	out = f.mustRun("machine", "egress-events", "--name", "m", "--json", "--limit", "2")
	if !strings.Contains(out, "evil.example") || strings.Contains(out, "10.0.0.2") {
		t.Errorf("--limit 2 keeps the newest two: %q", out)
	}
	if out := f.mustRun("machine", "egress-events", "--name", "m"); !strings.Contains(out, "TIMESTAMP") || !strings.Contains(out, "resolve   evil.example") {
		t.Errorf("text table: %q", out)
	}
	// delete takes the data dir, and the denials, with it.
	f.mustRun("machine", "delete", "--name", "m", "-f")
	if out := f.mustRun("machine", "egress-events", "--name", "m", "--json"); out != "[]\n" {
		t.Errorf("after delete: %q", out)
	}
}
