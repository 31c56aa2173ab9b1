package config

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const credAgent = `image   = "x"
command = ["x"]
egress  = ["api.example.com:443"]
credential "api" {
  env      = "API_KEY"
  from_env = "HOST_API_KEY"
  hosts    = ["api.example.com", "upload.example.com:8443"]
  header   = "Authorization"
  prefix   = "Bearer "
}
credential "oauth" {
  env       = "OAUTH_TOKEN"
  from_file = "~/.creds.json"
  json      = "oauth.accessToken"
  hosts     = ["*.example.org"]
  header    = "x-api-key"
}
credential "cmd" {
  env          = "CMD_TOKEN"
  from_command = ["printf", "  tok-from-cmd\n"]
  hosts        = ["api.example.com"]
  header       = "x-token"
}
`

func TestAgentCredentials(t *testing.T) {
	l := testLoader(t, fixtureFS())
	writeUserAgent(t, l, "c", credAgent)
	a, err := l.load("c")
	if err != nil {
		t.Fatal(err)
	}
	want := []Credential{
		{Name: "api", EnvName: "API_KEY", FromEnv: "HOST_API_KEY", Hosts: []string{"api.example.com", "upload.example.com:8443"}, Header: "Authorization", Prefix: "Bearer "},
		{Name: "oauth", EnvName: "OAUTH_TOKEN", FromFile: "~/.creds.json", JSONKey: "oauth.accessToken", Hosts: []string{"*.example.org"}, Header: "x-api-key"},
		{Name: "cmd", EnvName: "CMD_TOKEN", FromCommand: []string{"printf", "  tok-from-cmd\n"}, Hosts: []string{"api.example.com"}, Header: "x-token"},
	}
	if !reflect.DeepEqual(a.Credentials, want) {
		t.Errorf("credentials\n got %+v\nwant %+v", a.Credentials, want)
	}
	// api.example.com is there already (as :443); the other two are added.
	if w := []string{"api.example.com:443", "upload.example.com:8443", "*.example.org"}; !reflect.DeepEqual(a.Egress, w) {
		t.Errorf("egress %v, want %v", a.Egress, w)
	}
	if a.Env != nil {
		t.Errorf("env %v: a credential is not passed through", a.Env)
	}

	home := t.TempDir()
	writeFile(t, filepath.Join(home, ".creds.json"), `{"oauth": {"accessToken": "tok-from-file", "refreshToken": "r"}}`)
	env := map[string]string{"HOST_API_KEY": " tok-from-env\n", "HOME": home}
	getenv := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	ctx := context.Background()
	for i, w := range []string{"tok-from-env", "tok-from-file", "tok-from-cmd"} {
		v, err := a.Credentials[i].Resolve(ctx, getenv)
		if err != nil || v != w {
			t.Errorf("%s: %q, %v; want %q", a.Credentials[i].Name, v, err, w)
		}
	}
	delete(env, "HOST_API_KEY")
	if _, err := a.Credentials[0].Resolve(ctx, getenv); !errors.Is(err, ErrCredentialUnset) {
		t.Errorf("unset from_env: %v, want ErrCredentialUnset", err)
	}
}

func TestCredentialResolveErrors(t *testing.T) {
	const secret = "sEcReT-value-that-must-not-show"
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	ctx := context.Background()
	cases := []struct {
		name string
		c    Credential
		file string
		want string
	}{
		{"missing file", Credential{FromFile: filepath.Join(dir, "nope")}, "", "no such file"},
		{"empty file", Credential{FromFile: file}, "  \n", "the value is empty"},
		{"line break", Credential{FromFile: file}, secret + "\nX-Other: y", "line break"},
		{"too short", Credential{FromFile: file}, "short7\n", "shorter than 8 bytes"},
		{"control character", Credential{FromFile: file}, "abcdefgh\x01ijkl", "control character"},
		{"not json", Credential{FromFile: file, JSONKey: "a"}, secret, "not a JSON document"},
		{"no key", Credential{FromFile: file, JSONKey: "a.b"}, `{"a": {"c": "` + secret + `"}}`, `no key "b"`},
		{"not a string", Credential{FromFile: file, JSONKey: "a"}, `{"a": {"b": "` + secret + `"}}`, "a is not a string"},
		{"command fails", Credential{FromCommand: []string{"sh", "-c", "echo " + secret + "; echo " + secret + " >&2; exit 3"}}, "", "exited with status 3"},
		{"command too long", Credential{FromCommand: []string{"sh", "-c", "head -c 20000 /dev/zero | tr '\\0' a"}}, "", "longer than 16384 bytes"},
		{"command missing", Credential{FromCommand: []string{filepath.Join(dir, "no-such-cmd")}}, "", "no such file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.file != "" {
				if err := os.WriteFile(file, []byte(c.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			c.c.Name = "x"
			_, err := c.c.Resolve(ctx, func(string) (string, bool) { return "", false })
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error shows the value or is not one line: %q", err)
			}
		})
	}
}

func TestCredentialErrors(t *testing.T) {
	const head = "image = \"x\"\ncommand = [\"x\"]\n"
	block := func(body string) string { return head + "credential \"api\" {\n" + body + "}\n" }
	const ok = "  env = \"K\"\n  hosts = [\"a.example.com\"]\n  header = \"x-api-key\"\n"
	cases := []struct {
		name, src string
		line, col int
		want      string
	}{
		{"no source", block(ok), 3, 18, "Missing credential source"},
		{"two sources", block(ok + "  from_env = \"A\"\n  from_file = \"/f\"\n"), 8, 3, "Conflicting credential sources"},
		{"bad name", head + "credential \"Bad Name\" {\n" + ok + "  from_env = \"A\"\n}\n", 3, 12, "Invalid credential name"},
		{"duplicate", block(ok+"  from_env = \"A\"\n") + "credential \"api\" {\n" + strings.Replace(ok, "\"K\"", "\"L\"", 1) + "  from_env = \"A\"\n}\n", 9, 12, "Duplicate credential"},
		{"same env", block(ok+"  from_env = \"A\"\n") + "credential \"api2\" {\n" + ok + "  from_env = \"A\"\n}\n", 10, 9, "K already carries credential"},
		{"missing env", block("  hosts = [\"a.example.com\"]\n  header = \"h\"\n  from_env = \"A\"\n"), 3, 18, `The argument "env" is required`},
		{"bad env", block(strings.Replace(ok, "\"K\"", "\"K-1\"", 1) + "  from_env = \"A\"\n"), 4, 9, "Invalid credential env"},
		{"bottle env", block(strings.Replace(ok, "\"K\"", "\"BOT_BOTTLE_X\"", 1) + "  from_env = \"A\"\n"), 4, 9, "the bottle's own"},
		{"bad host", block(strings.Replace(ok, "a.example.com", "localhost", 1) + "  from_env = \"A\"\n"), 5, 12, "Invalid hosts entry"},
		{"no hosts", block(strings.Replace(ok, "[\"a.example.com\"]", "[]", 1) + "  from_env = \"A\"\n"), 5, 11, "Empty credential hosts"},
		{"bad header", block(strings.Replace(ok, "x-api-key", "x api key", 1) + "  from_env = \"A\"\n"), 6, 12, "Invalid credential header"},
		{"bad prefix", block(ok + "  prefix = \"Bearer\\n\"\n  from_env = \"A\"\n"), 7, 12, "Invalid credential prefix"},
		{"relative file", block(ok + "  from_file = \"creds.json\"\n"), 7, 15, "Invalid from_file"},
		{"json without file", block(ok + "  from_env = \"A\"\n  json = \"a.b\"\n"), 8, 3, "Misplaced json"},
		{"bad json path", block(ok + "  from_file = \"/f\"\n  json = \"a..b\"\n"), 8, 10, "Invalid json"},
		{"empty command", block(ok + "  from_command = []\n"), 7, 18, "Empty from_command"},
		{"unknown attribute", block(ok + "  from_env = \"A\"\n  hedaer = \"x\"\n"), 8, 3, "Unsupported argument"},
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

func TestOperatorCredentials(t *testing.T) {
	src := `default_backend = "docker"
credential "anthropic" {
  agents       = ["claude"]
  env          = "ANTHROPIC_API_KEY"
  from_command = ["pass", "show", "anthropic"]
  hosts        = ["api.anthropic.com"]
  header       = "x-api-key"
}
credential "github" {
  env      = "GH_TOKEN"
  from_env = "GH_TOKEN"
  hosts    = ["api.github.com"]
  header   = "Authorization"
  prefix   = "Bearer "
}
`
	p, err := parsePlugins([]byte(src), "/home/op/plugins.hcl", "/home/op")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Credentials) != 2 || strings.Join(p.Credentials[0].Agents, ",") != "claude" || p.Credentials[1].Agents != nil {
		t.Fatalf("credentials %+v", p.Credentials)
	}
	claude := &Agent{Name: "claude", Egress: []string{"api.anthropic.com:443"},
		Credentials: []Credential{{Name: "anthropic", EnvName: "ANTHROPIC_API_KEY", FromEnv: "ANTHROPIC_API_KEY", Hosts: []string{"api.anthropic.com"}, Header: "x-api-key"}}}
	if err := p.ApplyCredentials(claude); err != nil {
		t.Fatal(err)
	}
	// The operator's anthropic replaces the agent's (its source), github joins.
	if len(claude.Credentials) != 2 || claude.Credentials[0].FromCommand == nil || claude.Credentials[0].Agents != nil || claude.Credentials[1].Name != "github" {
		t.Errorf("claude's credentials %+v", claude.Credentials)
	}
	if strings.Join(claude.Egress, " ") != "api.anthropic.com:443 api.github.com" {
		t.Errorf("claude's egress %v", claude.Egress)
	}
	shell := &Agent{Name: "shell"}
	if err := p.ApplyCredentials(shell); err != nil || len(shell.Credentials) != 1 || shell.Credentials[0].Name != "github" {
		t.Errorf("shell: %v %+v", err, shell.Credentials)
	}
	// Two credentials for one variable: one line naming both.
	clash := &Agent{Name: "x", Credentials: []Credential{{Name: "gh", EnvName: "GH_TOKEN", FromEnv: "A", Hosts: []string{"a.example.com"}, Header: "h"}}}
	if err := p.ApplyCredentials(clash); err == nil || !strings.Contains(err.Error(), "credentials gh and github") {
		t.Errorf("clash: %v", err)
	}

	for _, c := range []struct{ src, want string }{
		{"credential \"x\" {\n  agents = [\"Not Valid\"]\n  env = \"K\"\n  from_env = \"A\"\n  hosts = [\"a.example.com\"]\n  header = \"h\"\n}\n", "plugins.hcl:2:13: Invalid agents entry"},
		{"credential \"x\" {\n  env = \"K\"\n  hosts = [\"a.example.com\"]\n  header = \"h\"\n}\n", "plugins.hcl:1:16: Missing credential source"},
	} {
		if _, err := parsePlugins([]byte(c.src), "plugins.hcl", "/"); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.src, err, c.want)
		}
	}
	// An agent.hcl has no agents attribute.
	l := testLoader(t, fixtureFS())
	path := writeUserAgent(t, l, "a", "image = \"x\"\ncommand = [\"x\"]\ncredential \"k\" {\n  agents = [\"a\"]\n  env = \"K\"\n  from_env = \"A\"\n  hosts = [\"a.example.com\"]\n  header = \"h\"\n}\n")
	_, err = l.load("a")
	wantErrAt(t, err, path, 4, 3, "Unsupported argument")
}
