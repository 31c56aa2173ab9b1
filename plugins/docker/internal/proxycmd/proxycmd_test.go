package proxycmd

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/testenv"
	"github.com/bot-bottle/bot-bottle/plugins/internal/egress"
	"github.com/bot-bottle/bot-bottle/sdk"
)

const identity = "shell-7k2qz"

// binary is the Docker plugin, which carries the proxy, built as it ships:
// static, without cgo.
var binary string

// proxyCmd runs the proxy as a backend does: the plugin's subcommand.
func proxyCmd(args ...string) *exec.Cmd {
	return exec.Command(binary, append([]string{Command}, args...)...)
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "egress-proxy-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "bot-bottle-plugin-docker")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", binary, "../..")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build %s: %v\n%s", name, err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func writeRules(t *testing.T, path, id string, rules ...string) {
	t.Helper()
	data, err := json.Marshal(egress.RulesFile{Identity: id, Rules: rules})
	if err != nil {
		t.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestBadInvocationsFailWithOneLine(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	writeRules(t, good, identity, "a.test")
	other := filepath.Join(dir, "other.json")
	writeRules(t, other, "other-aaaaa", "a.test")
	badRule := filepath.Join(dir, "badrule.json")
	writeRules(t, badRule, identity, "a.test", "*")
	notJSON := filepath.Join(dir, "notjson.json")
	os.WriteFile(notJSON, []byte("a.test\n"), 0o644)
	unreadable := filepath.Join(dir, "unreadable.json")
	writeRules(t, unreadable, identity)
	os.Chmod(unreadable, 0)

	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no flags", nil, 2, "--identity is required (see --help)"},
		{"unknown flag", []string{"--bogus"}, 2, "flag provided but not defined: -bogus"},
		{"positional argument", []string{"--identity", identity, "--rules", good, "extra"}, 2, `unexpected argument "extra"`},
		{"bad identity", []string{"--identity", "Shell/../x", "--rules", good}, 2, `--identity "Shell/../x"`},
		{"no rules", []string{"--identity", identity}, 2, "--rules is required"},
		{"missing rules file", []string{"--identity", identity, "--rules", filepath.Join(dir, "nope.json")}, 1, "no such file or directory"},
		{"rules file is a directory", []string{"--identity", identity, "--rules", dir}, 1, "not a regular file"},
		{"rules not JSON", []string{"--identity", identity, "--rules", notJSON}, 1, "not a rules file"},
		{"rules of another bottle", []string{"--identity", identity, "--rules", other}, 1, `rules are for bottle "other-aaaaa", not "shell-7k2qz"`},
		{"bad rule", []string{"--identity", identity, "--rules", badRule}, 1, `rule 2 ("*"): a wildcard needs a suffix`},
		{"bad listen address", []string{"--identity", identity, "--rules", good, "--listen", "nowhere"}, 1, "--listen: "},
		{"unwritable event log", []string{"--identity", identity, "--rules", good, "--log", dir}, 1, "event log: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			cmd := proxyCmd(tc.args...)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := cmd.ProcessState.ExitCode()
			if err == nil || code != tc.code {
				t.Fatalf("exit %d (%v), want %d; stderr %q", code, err, tc.code, stderr.String())
			}
			msg := stderr.String()
			if strings.Count(msg, "\n") != 1 || !strings.HasSuffix(msg, "\n") {
				t.Errorf("stderr is not one line: %q", msg)
			}
			if !strings.HasPrefix(msg, name+": ") || !strings.Contains(msg, tc.want) {
				t.Errorf("stderr = %q, want %q", msg, tc.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout = %q", stdout.String())
			}
		})
	}
	if os.Geteuid() != 0 { // root reads any file
		out, err := proxyCmd("--identity", identity, "--rules", unreadable).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "permission denied") {
			t.Errorf("unreadable rules file: %v %q", err, out)
		}
	}
}

func TestHelp(t *testing.T) {
	out, err := proxyCmd("--help").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"usage: ", "-listen", "-rules", "-log", "-identity"} {
		if !strings.Contains(string(out), f) {
			t.Errorf("--help does not mention %q:\n%s", f, out)
		}
	}
}

func TestBinaryIsStatic(t *testing.T) {
	f, err := elf.Open(binary)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("the binary has a dynamic loader (PT_INTERP): it will not run FROM scratch")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) != 0 {
		t.Fatalf("the binary needs shared libraries %q", libs)
	}
	fi, err := os.Stat(binary)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d bytes (%.1f MiB), static", name, fi.Size(), float64(fi.Size())/(1<<20))
}

// proc is a running proxy binary.
type proc struct {
	cmd    *exec.Cmd
	addr   string
	mu     sync.Mutex
	stderr bytes.Buffer
	stdout *bytes.Buffer
	exited chan error
}

func (p *proc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

var listenRE = regexp.MustCompile(`msg="egress proxy listening" addr=(\S+)`)

// startBinary runs the proxy allowed to reach this host, where the tests'
// upstreams are; startDeployed runs it as a backend does.
func startBinary(t *testing.T, args ...string) *proc {
	t.Helper()
	return startDeployed(t, append([]string{"--allow-own-host"}, args...)...)
}

func startDeployed(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: proxyCmd(append([]string{"--listen", "127.0.0.1:0", "--identity", identity}, args...)...), exited: make(chan error, 1)}
	p.stdout = &bytes.Buffer{}
	p.cmd.Stdout = p.stdout
	errPipe, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(errPipe)
		for sc.Scan() {
			p.mu.Lock()
			p.stderr.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			if m := listenRE.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
		p.exited <- p.cmd.Wait()
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
	})
	select {
	case p.addr = <-addr:
	case err := <-p.exited:
		t.Fatalf("proxy exited: %v\n%s", err, p.logs())
	case <-time.After(10 * time.Second):
		t.Fatalf("proxy did not start:\n%s", p.logs())
	}
	return p
}

func (p *proc) get(t *testing.T, u string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy:             http.ProxyURL(&url.URL{Scheme: "http", Host: p.addr}),
		DisableKeepAlives: true,
	}}
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func upstream(t *testing.T, body string) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) }))
	t.Cleanup(s.Close)
	return s
}

func readEvents(t *testing.T, data []byte) []sdk.EgressEvent {
	t.Helper()
	var evs []sdk.EgressEvent
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if line == "" {
			continue
		}
		var ev sdk.EgressEvent
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("event line %q: %v", line, err)
		}
		evs = append(evs, ev)
	}
	return evs
}

func TestProxyServesReloadsAndStopsCleanly(t *testing.T) {
	a, b := upstream(t, "A"), upstream(t, "B")
	aHost, bHost := a.Listener.Addr().String(), b.Listener.Addr().String()
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules.json")
	events := filepath.Join(dir, "egress.jsonl")
	// An existing log is appended to, never truncated.
	if err := os.WriteFile(events, []byte(`{"time":"2020-01-01T00:00:00Z","identity":"`+identity+`","host":"old.test","port":443,"allowed":false}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	writeRules(t, rules, identity, aHost)
	p := startBinary(t, "--rules", rules, "--log", events)
	pid := p.cmd.Process.Pid

	if code, body := p.get(t, a.URL); code != 200 || body != "A" {
		t.Fatalf("A: %d %q", code, body)
	}
	code, body := p.get(t, b.URL)
	if code != http.StatusForbidden || !strings.Contains(body, "not in the allowlist of bottle "+identity) {
		t.Fatalf("B before approval: %d %q", code, body)
	}
	writeRules(t, rules, identity, aHost, bHost)
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, body = p.get(t, b.URL)
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B still refused 5s after the rules file changed: %d %q\n%s", code, body, p.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if body != "B" || p.cmd.Process.Pid != pid {
		t.Fatalf("B after approval: %q (pid %d, was %d)", body, p.cmd.Process.Pid, pid)
	}
	if !strings.Contains(p.logs(), "egress rules reloaded") {
		t.Errorf("the reload is not in the log:\n%s", p.logs())
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		p.exited <- err
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, p.logs())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the proxy did not stop on SIGTERM")
	}

	data, err := os.ReadFile(events)
	if err != nil {
		t.Fatal(err)
	}
	evs := readEvents(t, data)
	if len(evs) < 4 || evs[0].Host != "old.test" {
		t.Fatalf("event log lost its old contents or attempts:\n%s", data)
	}
	first, last := evs[1], evs[len(evs)-1]
	if !first.Allowed || first.Rule != aHost || first.Method != "GET" {
		t.Errorf("first event %+v", first)
	}
	if !last.Allowed || last.Rule != bHost || last.Identity != identity {
		t.Errorf("last event %+v", last)
	}
	refused := 0
	for _, ev := range evs[2 : len(evs)-1] {
		if ev.Allowed || ev.Reason != "not in the allowlist" {
			t.Errorf("event between %+v", ev)
		}
		refused++
	}
	if refused < 1 {
		t.Error("no refusal recorded")
	}
	if fi, err := os.Stat(events); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("event log mode: %v %v", fi.Mode(), err)
	}
}

func TestEventsToStdout(t *testing.T) {
	a := upstream(t, "A")
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules.json")
	writeRules(t, rules, identity)
	p := startBinary(t, "--rules", rules, "--log", "-")
	if code, _ := p.get(t, a.URL); code != http.StatusForbidden {
		t.Fatalf("status %d with no rules", code)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-p.exited; err != nil {
		t.Fatal(err)
	}
	p.exited <- nil
	evs := readEvents(t, p.stdout.Bytes())
	if len(evs) != 1 || evs[0].Allowed || evs[0].Host != "127.0.0.1" {
		t.Fatalf("stdout events: %q", p.stdout.String())
	}
	if strings.Contains(p.logs(), `"allowed"`) {
		t.Errorf("events went to stderr too:\n%s", p.logs())
	}
}

// As a backend runs it, an approved rule for the proxy's own host —
// loopback, 0.0.0.0, its own listening port — never makes it connect there:
// a listener in its network namespace sees no connection.
func TestApprovedOwnHostIsNeverDialled(t *testing.T) {
	p0, accepted := testenv.CountingListener(t, "tcp4", "0.0.0.0:0")
	port := strconv.Itoa(p0)
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules.json")
	events := filepath.Join(dir, "egress.jsonl")
	writeRules(t, rules, identity, "127.0.0.1:"+port, "0.0.0.0:"+port, "localhost:"+port)
	p := startDeployed(t, "--rules", rules, "--log", events)
	_, proxyPort, _ := net.SplitHostPort(p.addr)
	writeRules(t, rules, identity, "127.0.0.1:"+port, "0.0.0.0:"+port, "localhost:"+port, "0.0.0.0:"+proxyPort)
	time.Sleep(300 * time.Millisecond) // the reload is not what is tested here
	for _, target := range []string{"127.0.0.1:" + port, "0.0.0.0:" + port, "localhost:" + port, "0.0.0.0:" + proxyPort} {
		code, body := p.get(t, "http://"+target+"/")
		if code != http.StatusForbidden || !strings.Contains(body, "refused") {
			t.Errorf("GET via %s: %d %q, want 403 refused", target, code, body)
		}
	}
	if n := accepted.Load(); n != 0 {
		t.Fatalf("the listener beside the proxy accepted %d connections", n)
	}
	data, _ := os.ReadFile(events)
	for _, ev := range readEvents(t, data) {
		if ev.Allowed {
			t.Errorf("recorded as allowed: %+v", ev)
		}
	}
}
