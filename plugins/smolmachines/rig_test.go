package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/bot-bottle/bot-bottle/internal/syncbuf"
	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/host"
)

// Binaries built once for the whole package.
var (
	pluginBin string
	fakeBin   string // a directory holding the fake as "smolvm"
	buildErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bb-smolmachines-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pluginBin = filepath.Join(dir, "bot-bottle-plugin-smolmachines")
	fakeBin = filepath.Join(dir, "fakebin")
	buildErr = goBuild(pluginBin, ".")
	if buildErr == nil {
		buildErr = goBuild(filepath.Join(fakeBin, "smolvm"), "./internal/fakesmolvm")
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func goBuild(out, pkg string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// syncBuffer collects the plugin's logs from several goroutines.
type syncBuffer = syncbuf.Buffer

// rig is one plugin process driving either the fake smolvm or, with
// BOT_BOTTLE_SMOLVM_REAL=1, a real one.
type rig struct {
	t      *testing.T
	real   bool
	state  string // the fake's state dir
	env    []string
	logs   *syncBuffer
	client *host.Client
}

const realEnv = "BOT_BOTTLE_SMOLVM_REAL"

// requireRealSmolvm skips a real-smolvm test unless BOT_BOTTLE_SMOLVM_REAL=1,
// and fails it when that was asked for but smolvm is not on $PATH: a run
// that asked for the real thing must not pass without it.
func requireRealSmolvm(t *testing.T) {
	t.Helper()
	if os.Getenv(realEnv) != "1" {
		t.Skipf("%s is not 1: this ran against the fake smolvm only", realEnv)
	}
	if _, err := exec.LookPath("smolvm"); err != nil {
		t.Fatalf("%s=1 but smolvm is not on $PATH: %v", realEnv, err)
	}
}

// newRig starts the plugin over go-plugin exactly as the core does. extra
// env entries override the defaults.
func newRig(t *testing.T, real bool, extra ...string) *rig {
	t.Helper()
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	r := &rig{t: t, real: real, logs: &syncBuffer{}}
	env := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	env["XDG_CACHE_HOME"] = t.TempDir()
	env["BOT_BOTTLE_PLUGIN_LOG_LEVEL"] = "trace"
	if !real {
		r.state = t.TempDir()
		env["SMOLVM_FAKE_STATE"] = r.state
		env["SMOLVM_FAKE_RESOLVABLE"] = "example.com"
		env["PATH"] = fakeBin + string(os.PathListSeparator) + env["PATH"]
	}
	for _, kv := range extra {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	for k, v := range env {
		r.env = append(r.env, k+"="+v)
	}
	r.client = r.start()
	return r
}

func (r *rig) start() *host.Client {
	r.t.Helper()
	cmd := exec.Command(pluginBin)
	cmd.Env = r.env
	cfg := host.ClientConfig(cmd, hclog.New(&hclog.LoggerOptions{Name: "core", Output: r.logs, Level: hclog.Trace}))
	cfg.Stderr = r.logs
	pc := plugin.NewClient(cfg)
	r.t.Cleanup(pc.Kill)
	c, v, err := host.Dispense(pc)
	if err != nil {
		r.t.Fatalf("dispense plugin: %v\nlogs:\n%s", err, r.logs)
	}
	if v != sdk.ProtocolVersion {
		r.t.Fatalf("negotiated protocol %d, want %d", v, sdk.ProtocolVersion)
	}
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

// identity mints a fresh identity and stops whatever it left at cleanup.
func (r *rig) identity(agent string) string {
	id := agent + "-" + randHex(5)
	r.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := r.client.Stop(ctx, sdk.StopRequest{Identity: id}); err != nil {
			r.t.Errorf("cleanup stop %s: %v", id, err)
		}
	})
	return id
}

// registryAgent is an agent whose image smolvm pulls from a registry; the
// fake never pulls, so no Docker build is needed.
func registryAgent(name string) sdk.Agent {
	return sdk.Agent{Name: name, Image: "alpine", Workdir: "/workspace",
		Command: []string{"sh"}, Egress: []string{"api.example.com:443"}}
}

// call is one line of the fake's calls.jsonl.
type call struct {
	Argv     []string `json:"argv"`
	EnvNames []string `json:"env_names"`
	StdinTTY bool     `json:"stdin_tty"`
}

func (r *rig) calls() []call {
	r.t.Helper()
	if r.real {
		return nil
	}
	f, err := os.Open(filepath.Join(r.state, "calls.jsonl"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		r.t.Fatalf("read recorded calls: %v", err)
	}
	defer f.Close()
	var out []call
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var c call
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			r.t.Fatalf("bad call record %q: %v", sc.Text(), err)
		}
		out = append(out, c)
	}
	return out
}

// callsWith returns the recorded calls whose argv starts with prefix.
func (r *rig) callsWith(prefix ...string) []call {
	var out []call
	for _, c := range r.calls() {
		if len(c.Argv) >= len(prefix) && equal(c.Argv[:len(prefix)], prefix) {
			out = append(out, c)
		}
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func argValue(argv []string, flag string) []string {
	var out []string
	for i := 0; i+1 < len(argv); i++ {
		if argv[i] == "--" {
			break
		}
		if argv[i] == flag {
			out = append(out, argv[i+1])
		}
	}
	return out
}

func hasArg(argv []string, a string) bool {
	for _, x := range argv {
		if x == "--" {
			return false
		}
		if x == a {
			return true
		}
	}
	return false
}

// checkCallRules asserts the contract rules on every recorded call: no
// secret value anywhere in argv, delete always with -f, exec always with
// --name and never -n, no host:port allow-host, no -e carrying a secret.
func (r *rig) checkCallRules(secrets map[string]string) {
	r.t.Helper()
	for _, c := range r.calls() {
		joined := strings.Join(c.Argv, "\x00")
		for name, v := range secrets {
			if strings.Contains(joined, v) {
				r.t.Errorf("secret %s's value appears in smolvm argv %q", name, c.Argv)
			}
			for _, e := range argValue(c.Argv, "-e") {
				if strings.HasPrefix(e, name+"=") {
					r.t.Errorf("secret %s passed with -e in %q", name, c.Argv)
				}
			}
		}
		if len(c.Argv) >= 2 && c.Argv[0] == "machine" && (c.Argv[1] == "delete" || c.Argv[1] == "rm") && !hasArg(c.Argv, "-f") {
			r.t.Errorf("delete without -f: %q", c.Argv)
		}
		if len(c.Argv) >= 2 && c.Argv[0] == "machine" && c.Argv[1] == "exec" {
			if len(argValue(c.Argv, "--name")) != 1 || hasArg(c.Argv, "-n") {
				r.t.Errorf("exec without exactly one --name (or with -n): %q", c.Argv)
			}
		}
		for _, h := range argValue(c.Argv, "--allow-host") {
			if strings.Contains(h, ":") {
				r.t.Errorf("--allow-host with a port: %q", c.Argv)
			}
		}
	}
}

// assertNoSecretInFiles scans every file under dirs for the secret values.
func assertNoSecretInFiles(t *testing.T, secrets map[string]string, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		_ = filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			for name, v := range secrets {
				if bytes.Contains(b, []byte(v)) {
					t.Errorf("secret %s's value found in %s", name, p)
				}
			}
			return nil
		})
	}
}

// machines lists the fake's (or real) machines through smolvm itself.
func (r *rig) machines() []map[string]any {
	r.t.Helper()
	path := "smolvm"
	if !r.real {
		path = filepath.Join(fakeBin, "smolvm")
	}
	cmd := exec.Command(path, "machine", "ls", "--json")
	cmd.Env = r.env
	out, err := cmd.Output()
	if err != nil {
		r.t.Fatalf("smolvm machine ls --json: %v", err)
	}
	var ms []map[string]any
	if err := json.Unmarshal(out, &ms); err != nil {
		r.t.Fatalf("parse ls --json %q: %v", out, err)
	}
	return ms
}

func (r *rig) hasMachine(name string) bool {
	for _, m := range r.machines() {
		if m["name"] == name {
			return true
		}
	}
	return false
}
