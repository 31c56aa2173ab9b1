package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"
)

const shellHCL = `description = "A plain shell"
dockerfile  = "Dockerfile"
command     = ["/bin/sh", "-l"]
`

// fixtureFS stands in for the embedded built-ins so these tests do not
// depend on what agents/ holds today.
func fixtureFS() fstest.MapFS {
	return fstest.MapFS{
		"shell/agent.hcl":        {Data: []byte(shellHCL)},
		"shell/Dockerfile":       {Data: []byte("FROM scratch\nCOPY bin/ /bin/\n")},
		"shell/bin/entry.sh":     {Data: []byte("#!/bin/sh\nexec \"$@\"\n")},
		"shell/bin/motd":         {Data: []byte("hello\n")},
		"claude/agent.hcl":       {Data: []byte("image = \"example.invalid/claude:1\"\ncommand = [\"claude\"]\n")},
		"codex/agent.hcl":        {Data: []byte("image = \"example.invalid/codex:1\"\ncommand = [\"codex\"]\n")},
		"notanagent/README":      {Data: []byte("no agent.hcl here\n")},
		"Upper/agent.hcl":        {Data: []byte("image = \"x\"\ncommand = [\"x\"]\n")},
		".keep":                  {Data: []byte("placeholder\n")},
		"shell/.dockerignore":    {Data: []byte("*.md\n")},
		"claude/notes/README.md": {Data: []byte("notes\n")},
	}
}

// cacheEntries lists $home/cache/agents without the lock files, which are
// meant to stay.
func cacheEntries(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".lock") {
			names = append(names, e.Name())
		}
	}
	return names
}

func testLoader(t *testing.T, builtin fs.FS) *loader {
	t.Helper()
	home, err := filepath.Abs(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &loader{home: home, builtin: builtin}
}

func writeUserAgent(t *testing.T, l *loader, name, hcl string) string {
	t.Helper()
	path := filepath.Join(l.home, "agents", name, "agent.hcl")
	writeFile(t, path, hcl)
	return path
}

func TestBuiltinAgentExtracted(t *testing.T) {
	fsys := fixtureFS()
	l := testLoader(t, fsys)
	a, err := l.load("shell")
	if err != nil {
		t.Fatal(err)
	}
	dirRE := regexp.MustCompile(`^` + regexp.QuoteMeta(filepath.Join(l.home, "cache", "agents")) + `/shell-[0-9a-f]{12}$`)
	if !dirRE.MatchString(a.ContextDir) {
		t.Fatalf("ContextDir = %q, want $home/cache/agents/shell-<12 hex>", a.ContextDir)
	}
	if a.Dockerfile != filepath.Join(a.ContextDir, "Dockerfile") {
		t.Errorf("Dockerfile = %q", a.Dockerfile)
	}
	if a.Source != SourceBuiltin || a.Name != "shell" || a.Description != "A plain shell" {
		t.Errorf("agent = %+v", a)
	}
	if a.Workdir != "/workspace" || !reflect.DeepEqual(a.ResumeCommand, a.Command) || !reflect.DeepEqual(a.Command, []string{"/bin/sh", "-l"}) {
		t.Errorf("defaults: workdir %q, command %q, resume %q", a.Workdir, a.Command, a.ResumeCommand)
	}
	// Every file of the agent is there, byte for byte, and nothing else.
	var got []string
	err = filepath.WalkDir(a.ContextDir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(a.ContextDir, p)
		got = append(got, filepath.ToSlash(rel))
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if want := fsys["shell/"+filepath.ToSlash(rel)].Data; string(data) != string(want) {
			t.Errorf("%s = %q, want %q", rel, data, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{".dockerignore", "Dockerfile", "agent.hcl", "bin/entry.sh", "bin/motd"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("extracted files %v, want %v", got, want)
	}
	// A script keeps working once COPY'd: embed drops modes, we restore +x.
	if fi, _ := os.Stat(filepath.Join(a.ContextDir, "bin", "entry.sh")); fi == nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("entry.sh mode = %v, want 0755", fi.Mode())
	}
	if fi, _ := os.Stat(filepath.Join(a.ContextDir, "bin", "motd")); fi == nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("motd mode = %v, want 0644", fi.Mode())
	}
	// No temporary directories are left behind.
	if got := cacheEntries(t, filepath.Dir(a.ContextDir)); !reflect.DeepEqual(got, []string{filepath.Base(a.ContextDir)}) {
		t.Errorf("cache/agents holds %v, want only the agent's directory", got)
	}
}

func TestBuiltinExtractionReused(t *testing.T) {
	l := testLoader(t, fixtureFS())
	first, err := l.load("shell")
	if err != nil {
		t.Fatal(err)
	}
	df := first.Dockerfile
	dirBefore, _ := os.Stat(first.ContextDir)
	// Backdate the file: a rewrite, however fast, would give it a new mtime.
	old := time.Now().Add(-48 * time.Hour).Truncate(time.Second)
	if err := os.Chtimes(df, old, old); err != nil {
		t.Fatal(err)
	}
	fileBefore, _ := os.Stat(df)

	second, err := l.load("shell")
	if err != nil {
		t.Fatal(err)
	}
	if second.ContextDir != first.ContextDir {
		t.Fatalf("second load used %q, first %q", second.ContextDir, first.ContextDir)
	}
	dirAfter, _ := os.Stat(second.ContextDir)
	fileAfter, _ := os.Stat(df)
	if !os.SameFile(dirBefore, dirAfter) || !os.SameFile(fileBefore, fileAfter) {
		t.Error("second load replaced the extracted directory or file")
	}
	if !fileAfter.ModTime().Equal(old) {
		t.Errorf("Dockerfile mtime %v, want %v (rewritten)", fileAfter.ModTime(), old)
	}
}

func TestBuiltinExtractionRepairsDamage(t *testing.T) {
	l := testLoader(t, fixtureFS())
	a, err := l.load("shell")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(a.Dockerfile, []byte("FROM evil\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a.ContextDir, "extra"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := l.load("shell")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(b.Dockerfile)
	if b.ContextDir != a.ContextDir || string(data) != "FROM scratch\nCOPY bin/ /bin/\n" {
		t.Errorf("damaged extraction not repaired: %s has %q", b.Dockerfile, data)
	}
	if _, err := os.Stat(filepath.Join(b.ContextDir, "extra")); err == nil {
		t.Error("stray file survived the repair")
	}
	if got := cacheEntries(t, filepath.Dir(a.ContextDir)); !reflect.DeepEqual(got, []string{filepath.Base(a.ContextDir)}) {
		t.Errorf("cache/agents holds %v after repair, want only the agent's directory", got)
	}
}

func TestBuiltinChangeGetsNewDirectory(t *testing.T) {
	fsys := fixtureFS()
	home := t.TempDir()
	a, err := (&loader{home: home, builtin: fsys}).load("shell")
	if err != nil {
		t.Fatal(err)
	}
	fsys["shell/bin/motd"] = &fstest.MapFile{Data: []byte("changed\n")}
	b, err := (&loader{home: home, builtin: fsys}).load("shell")
	if err != nil {
		t.Fatal(err)
	}
	if a.ContextDir == b.ContextDir {
		t.Errorf("changed agent files reused %s", a.ContextDir)
	}
	if data, _ := os.ReadFile(filepath.Join(b.ContextDir, "bin", "motd")); string(data) != "changed\n" {
		t.Errorf("new extraction has motd %q", data)
	}
}

func TestBuiltinExtractionConcurrent(t *testing.T) {
	home := t.TempDir()
	const n = 16
	dirs := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			a, err := (&loader{home: home, builtin: fixtureFS()}).load("shell")
			errs[i] = err
			if err == nil {
				dirs[i] = a.ContextDir
			}
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("load %d: %v", i, errs[i])
		}
		if dirs[i] != dirs[0] {
			t.Errorf("load %d used %s, load 0 %s", i, dirs[i], dirs[0])
		}
	}
	if got := cacheEntries(t, filepath.Join(home, "cache", "agents")); len(got) != 1 {
		t.Errorf("cache/agents holds %v, want one directory", got)
	}
}

func TestUnknownAgent(t *testing.T) {
	l := testLoader(t, fixtureFS())
	_, err := l.load("nope")
	if err == nil || err.Error() != `unknown agent "nope" (known: claude, codex, shell)` {
		t.Errorf("err = %v", err)
	}
	writeUserAgent(t, l, "mine", "image = \"x\"\ncommand = [\"x\"]\n")
	if err := os.MkdirAll(filepath.Join(l.home, "agents", "empty-dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = l.load("nope")
	if err == nil || err.Error() != `unknown agent "nope" (known: claude, codex, mine, shell)` {
		t.Errorf("with a user agent: err = %v", err)
	}
	_, err = testLoader(t, fstest.MapFS{}).load("nope")
	if err == nil || err.Error() != `unknown agent "nope" (known: none)` {
		t.Errorf("no agents: err = %v", err)
	}
}

func TestAgentNameValidatedFirst(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	for _, name := range []string{"../etc", "Shell", "a/b", "", "..", ".", "/abs", "-rf"} {
		_, err := LoadAgent(home, name)
		if err == nil || !strings.Contains(err.Error(), "invalid name") && !strings.Contains(err.Error(), "empty name") {
			t.Errorf("LoadAgent(%q) = %v, want an invalid-name error", name, err)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("LoadAgent(%q) error is not one line", name)
		}
	}
	if _, err := os.Stat(home); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadAgent with invalid names touched the home directory (stat: %v)", err)
	}
	if _, err := LoadAgent("", "shell"); err == nil {
		t.Error("LoadAgent with no home: want an error")
	}
}

func TestUserAgentOverridesBuiltin(t *testing.T) {
	l := testLoader(t, fixtureFS())
	path := writeUserAgent(t, l, "shell", "description = \"mine\"\nimage = \"localhost/my-shell:dev\"\ncommand = [\"/bin/bash\"]\n")
	a, err := l.load("shell")
	if err != nil {
		t.Fatal(err)
	}
	if a.Source != path || a.Image != "localhost/my-shell:dev" || a.Dockerfile != "" || a.ContextDir != "" || a.Description != "mine" {
		t.Errorf("agent = %+v, want the user's", a)
	}
	if _, err := os.Stat(filepath.Join(l.home, "cache")); !errors.Is(err, fs.ErrNotExist) {
		t.Error("overridden built-in was still extracted")
	}
	// A broken override is an error, not a silent fallback to the built-in.
	writeUserAgent(t, l, "shell", "command = [\"x\"]\n")
	if _, err := l.load("shell"); err == nil || !strings.Contains(err.Error(), "Missing image source") {
		t.Errorf("broken override: err = %v", err)
	}
}

func TestAgentAllAttributes(t *testing.T) {
	l := testLoader(t, fixtureFS())
	path := writeUserAgent(t, l, "claude", `
description     = "Claude Code"
dockerfile      = "Dockerfile"
command         = ["claude", "--dangerously-skip-permissions"]
resume_command  = ["claude", "--dangerously-skip-permissions", "--continue"]
workdir         = "/work/space/"
env             = ["ANTHROPIC_API_KEY", "http_proxy"]
transcript_path = "/home/agent/.claude/projects"
egress          = ["API.Anthropic.com:443", "*.example.com", "10.0.0.1:8080", "[2001:db8::2]:80", "[fd12::1]"]
cap_add         = ["net_admin", "CAP_SYS_PTRACE"]
user            = "agent"
`)
	writeFile(t, filepath.Join(filepath.Dir(path), "Dockerfile"), "FROM scratch\n")
	a, err := l.load("claude")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(path)
	want := &Agent{
		Name:           "claude",
		Description:    "Claude Code",
		Dockerfile:     filepath.Join(dir, "Dockerfile"),
		ContextDir:     dir,
		Command:        []string{"claude", "--dangerously-skip-permissions"},
		ResumeCommand:  []string{"claude", "--dangerously-skip-permissions", "--continue"},
		Workdir:        "/work/space",
		Env:            []string{"ANTHROPIC_API_KEY", "http_proxy"},
		TranscriptPath: "/home/agent/.claude/projects",
		Egress:         []string{"api.anthropic.com:443", "*.example.com", "10.0.0.1:8080", "[2001:db8::2]:80", "[fd12::1]"},
		CapAdd:         []string{"NET_ADMIN", "SYS_PTRACE"},
		User:           "agent",
		Source:         path,
	}
	if !reflect.DeepEqual(a, want) {
		t.Errorf("got  %+v\nwant %+v", a, want)
	}
	s := a.SDK()
	if s.Name != "claude" || s.Dockerfile != want.Dockerfile || !reflect.DeepEqual(s.EnvNames, want.Env) ||
		!reflect.DeepEqual(s.CapAdd, want.CapAdd) || s.User != "agent" || !reflect.DeepEqual(s.ResumeCommand, want.ResumeCommand) {
		t.Errorf("SDK() = %+v", s)
	}
}

func TestAgentRelativeDockerfile(t *testing.T) {
	l := testLoader(t, fixtureFS())
	path := writeUserAgent(t, l, "dev", "dockerfile = \"docker/Dockerfile.dev\"\ncommand = [\"sh\"]\n")
	dir := filepath.Dir(path)
	writeFile(t, filepath.Join(dir, "docker", "Dockerfile.dev"), "FROM scratch\n")
	a, err := l.load("dev")
	if err != nil {
		t.Fatal(err)
	}
	if a.Dockerfile != filepath.Join(dir, "docker", "Dockerfile.dev") || a.ContextDir != filepath.Join(dir, "docker") {
		t.Errorf("Dockerfile %q context %q", a.Dockerfile, a.ContextDir)
	}
	// A user agent may share a Dockerfile outside its directory.
	shared := filepath.Join(l.home, "shared", "Dockerfile")
	writeFile(t, shared, "FROM scratch\n")
	writeUserAgent(t, l, "dev", "dockerfile = \"../../shared/Dockerfile\"\ncommand = [\"sh\"]\n")
	if a, err := l.load("dev"); err != nil || a.Dockerfile != shared {
		t.Errorf("../ dockerfile: %+v, %v", a, err)
	}
	writeUserAgent(t, l, "dev", "dockerfile = \""+shared+"\"\ncommand = [\"sh\"]\n")
	if a, err := l.load("dev"); err != nil || a.Dockerfile != shared || a.ContextDir != filepath.Dir(shared) {
		t.Errorf("absolute dockerfile: %+v, %v", a, err)
	}
}

func TestAgentErrors(t *testing.T) {
	cases := []struct {
		name, src string
		line, col int
		want      string
	}{
		{"both dockerfile and image", "dockerfile = \"Dockerfile\"\nimage = \"x\"\ncommand = [\"x\"]\n", 2, 1, "Conflicting image source"},
		{"neither", "command = [\"x\"]\n", 1, 1, "Missing image source"},
		{"unknown attribute", "image = \"x\"\ncommand = [\"x\"]\negres = [\"a:1\"]\n", 3, 1, `Unsupported argument; An argument named "egres" is not expected here. Did you mean "egress"?`},
		{"block", "image = \"x\"\ncommand = [\"x\"]\nnetwork {\n}\n", 3, 1, "Unsupported block type"},
		{"misspelt command", "image = \"x\"\ncomand = [\"x\"]\n", 2, 1, `Unsupported argument; An argument named "comand" is not expected here. Did you mean "command"? (and 1 more error)`},
		{"missing command", "image = \"x\"\n", 1, 1, `Missing required argument; The argument "command" is required`},
		{"empty command", "image = \"x\"\ncommand = []\n", 2, 11, "Empty command"},
		{"command not list", "image = \"x\"\ncommand = \"claude\"\n", 2, 12, "Unsuitable value type"},
		{"missing dockerfile", "dockerfile = \"Nope\"\ncommand = [\"x\"]\n", 1, 14, "Dockerfile not found"},
		{"dockerfile is dir", "dockerfile = \".\"\ncommand = [\"x\"]\n", 1, 14, "not a regular file"},
		{"bad image", "image = \"a b\"\ncommand = [\"x\"]\n", 1, 9, "Invalid image reference"},
		{"relative workdir", "image = \"x\"\ncommand = [\"x\"]\nworkdir = \"work\"\n", 3, 11, "must be an absolute path"},
		{"relative transcript", "image = \"x\"\ncommand = [\"x\"]\ntranscript_path = \"t\"\n", 3, 19, "must be an absolute path"},
		{"bad env name", "image = \"x\"\ncommand = [\"x\"]\nenv = [\"OK\", \"NOT-OK\"]\n", 3, 14, `Invalid env entry; "NOT-OK" is not an environment variable name`},
		{"bad egress", "image = \"x\"\ncommand = [\"x\"]\negress = [\"a.com:99999\"]\n", 3, 11, "port must be 1-65535"},
		{"cap ALL", "image = \"x\"\ncommand = [\"x\"]\ncap_add = [\"ALL\"]\n", 3, 12, `"ALL" is not allowed`},
		{"unknown cap", "image = \"x\"\ncommand = [\"x\"]\ncap_add = [\"FLY\"]\n", 3, 12, "not a Linux capability"},
		{"bad user", "image = \"x\"\ncommand = [\"x\"]\nuser = \"a b\"\n", 3, 8, "Invalid user"},
		{"interpolation", "image = \"${var.x}\"\ncommand = [\"x\"]\n", 1, 12, "Variables not allowed"},
		{"syntax", "image = \"x\"\ncommand = [\"x\"\n", 2, 11, "Unterminated tuple constructor expression"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := testLoader(t, fixtureFS())
			path := writeUserAgent(t, l, "x", c.src)
			_, err := l.load("x")
			wantErrAt(t, err, path, c.line, c.col, c.want)
		})
	}
}

func TestAgentErrorsReportedTogether(t *testing.T) {
	l := testLoader(t, fixtureFS())
	path := writeUserAgent(t, l, "x", "image = \"x\"\ncommand = [\"x\"]\nworkdir = \"w\"\nenv = [\"A-B\"]\n")
	_, err := l.load("x")
	wantErrAt(t, err, path, 3, 11, "(and 1 more error)")
}

func TestBuiltinDockerfileMustStayInside(t *testing.T) {
	fsys := fixtureFS()
	fsys["shell/agent.hcl"] = &fstest.MapFile{Data: []byte("dockerfile = \"../codex/Dockerfile\"\ncommand = [\"sh\"]\n")}
	_, err := testLoader(t, fsys).load("shell")
	wantErrAt(t, err, "(built-in) agents/shell/agent.hcl", 1, 14, "must be inside its own directory")
}

func TestCheckEgress(t *testing.T) {
	good := map[string]string{
		"api.anthropic.com:443": "api.anthropic.com:443",
		"Example.COM":           "example.com",
		"*.openai.com":          "*.openai.com",
		"*.openai.com:8443":     "*.openai.com:8443",
		"192.168.1.1":           "192.168.1.1",
		"[2001:db8::1]:443":     "[2001:db8::1]:443",
		"[2001:db8::1]":         "[2001:db8::1]",
		"build.internal:1":      "build.internal:1",
		// Issue 24: deny rules and rules about requests, canonical.
		"a.com/path":                          "a.com:443/path",
		"GET,HEAD api.github.com/repos/acme/": "GET,HEAD api.github.com:443/repos/acme/",
		"!api.github.com/admin":               "!api.github.com:443/admin",
	}
	for in, want := range good {
		if got, why := checkEgress(in); why != "" || got != want {
			t.Errorf("checkEgress(%q) = %q, %q; want %q", in, got, why, want)
		}
	}
	for _, bad := range []string{"", ":443", "a.com:", "a.com:0", "a.com:65536", "a.com:08", "a.com:x", "http://a.com", "GET localhost/x", "FLY a.com/x", "GET a.com/../x",
		"*", "*.", "a.*.com", "-a.com", "a..com", "2001:db8::1", "a.com:443:1", "a com", "a.com.", "[a.com]:1",
		// Issue 18: the classes an agent definition may not carry.
		"localhost:1", "api.localhost", "127.0.0.1:3128", "0.0.0.0:3128", "[::1]:80", "169.254.169.254:80",
		"[fd00:ec2::254]:80", "metadata.google.internal:80", "[fe80::1]", "*.com", "*.co.uk"} {
		if got, why := checkEgress(bad); why == "" {
			t.Errorf("checkEgress(%q) = %q, want a refusal", bad, got)
		}
	}
}

func TestListAgents(t *testing.T) {
	l := testLoader(t, fixtureFS())
	userShell := writeUserAgent(t, l, "shell", "image = \"mine\"\ncommand = [\"sh\"]\n")
	writeUserAgent(t, l, "zed", "image = \"zed\"\ncommand = [\"zed\"]\n")
	broken := writeUserAgent(t, l, "broken", "image = \"b\"\n")
	writeUserAgent(t, l, "Bad_Name", "image = \"b\"\ncommand = [\"b\"]\n")

	agents, err := l.list()
	var names []string
	for _, a := range agents {
		names = append(names, a.Name)
	}
	if want := []string{"claude", "codex", "shell", "zed"}; !reflect.DeepEqual(names, want) {
		t.Errorf("names = %v, want %v", names, want)
	}
	if agents[2].Source != userShell {
		t.Errorf("shell source = %q, want the user's override", agents[2].Source)
	}
	if agents[0].Source != SourceBuiltin {
		t.Errorf("claude source = %q", agents[0].Source)
	}
	if err == nil {
		t.Fatal("want an error for the broken agents")
	}
	msg := err.Error()
	for _, want := range []string{"agent broken: " + broken + ":1:1: Missing required argument", "Bad_Name"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}

	clean := testLoader(t, fixtureFS())
	agents, err = clean.list()
	if err != nil || len(agents) != 3 {
		t.Errorf("list without user agents = %d agents, %v", len(agents), err)
	}
}

// TestRealBuiltinAgents loads whatever agents/ embeds today: each must parse
// and, when it has a Dockerfile, extract to a real build context.
func TestRealBuiltinAgents(t *testing.T) {
	home := t.TempDir()
	agents, err := ListAgents(home)
	if err != nil {
		t.Fatalf("built-in agents: %v", err)
	}
	var names []string
	for _, a := range agents {
		names = append(names, a.Name)
	}
	// These three ship in the binary.
	if want := []string{"claude", "codex", "shell"}; !reflect.DeepEqual(names, want) {
		t.Errorf("built-in agents %v, want %v", names, want)
	}
	for _, a := range agents {
		t.Run(a.Name, func(t *testing.T) {
			b, err := LoadAgent(home, a.Name)
			if err != nil {
				t.Fatal(err)
			}
			if b.Source != SourceBuiltin || len(b.Command) == 0 {
				t.Errorf("agent %+v", b)
			}
			if b.Dockerfile != "" {
				if _, err := os.Stat(b.Dockerfile); err != nil {
					t.Error(err)
				}
				if !strings.HasPrefix(b.ContextDir, filepath.Join(home, "cache", "agents", a.Name+"-")) {
					t.Errorf("context %s not under the cache", b.ContextDir)
				}
			}
		})
	}
}

// TestSecretValuesNotKept: agent definitions name the variables to pass
// through; their values must not end up in what config returns or writes.
func TestSecretValuesNotKept(t *testing.T) {
	const secret = "sk-test-4f9a1c0de-do-not-store"
	t.Setenv("ANTHROPIC_API_KEY", secret)
	t.Setenv("OPENAI_API_KEY", secret)
	home := t.TempDir()
	agents, err := ListAgents(home)
	if err != nil {
		t.Fatal(err)
	}
	if dump := fmt.Sprintf("%+v", agents); strings.Contains(dump, secret) {
		t.Errorf("loaded agents hold the secret value: %s", dump)
	}
	err = filepath.WalkDir(home, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(data), secret) {
			t.Errorf("%s holds the secret value", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
