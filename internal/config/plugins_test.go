package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/bot-bottle/bot-bottle/sdk/backendtest"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// userPlugins writes content as $home/plugins.hcl and loads it.
func userPlugins(t *testing.T, content string) (*Plugins, string, error) {
	t.Helper()
	home := t.TempDir()
	writeFile(t, filepath.Join(home, "plugins.hcl"), content)
	p, err := LoadPlugins(home)
	return p, home, err
}

// wantErrAt checks that err is one line and starts with file:line:col and
// then contains want.
func wantErrAt(t *testing.T, err error, file string, line, col int, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one at %s:%d:%d", file, line, col)
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") {
		t.Errorf("error is not one line: %q", msg)
	}
	prefix := file + ":" + strconv.Itoa(line) + ":" + strconv.Itoa(col) + ": "
	if !strings.HasPrefix(msg, prefix) {
		t.Errorf("error %q does not start with %q", msg, prefix)
	}
	if !strings.Contains(msg, want) {
		t.Errorf("error %q does not contain %q", msg, want)
	}
}

func TestLoadPluginsBuiltinDefault(t *testing.T) {
	home := t.TempDir()
	p, err := LoadPlugins(home)
	if err != nil {
		t.Fatalf("embedded plugins.hcl: %v", err)
	}
	if p.File != BuiltinPluginsFile {
		t.Errorf("File = %q, want %q", p.File, BuiltinPluginsFile)
	}
	if err := ValidName(ResolveBackend("", "", p)); err != nil {
		t.Errorf("default backend: %v", err)
	}
	for _, name := range p.Names() {
		if !json.Valid(p.Block(name).Config) {
			t.Errorf("plugin %s: config %q is not JSON", name, p.Block(name).Config)
		}
	}
	// No home at all still gives the built-in default.
	if p, err := LoadPlugins(""); err != nil || p.File != BuiltinPluginsFile {
		t.Errorf("LoadPlugins(\"\") = %v, %v", p, err)
	}
}

func TestLoadPluginsUserFileReplacesDefault(t *testing.T) {
	p, home, err := userPlugins(t, `default_backend = "smolmachines"`+"\n")
	if err != nil {
		t.Fatal(err)
	}
	if p.File != filepath.Join(home, "plugins.hcl") {
		t.Errorf("File = %q", p.File)
	}
	if p.DefaultBackend != "smolmachines" {
		t.Errorf("DefaultBackend = %q", p.DefaultBackend)
	}
	if len(p.Plugins) != 0 {
		t.Errorf("user file without blocks got plugins %v (must not merge the default)", p.Names())
	}
	// Unset default_backend stays empty, so ResolveBackend can fall back.
	p, _, err = userPlugins(t, "")
	if err != nil || p.DefaultBackend != "" {
		t.Errorf("empty file: %+v, %v", p, err)
	}
}

func TestLoadPluginsBrokenHCL(t *testing.T) {
	src := "default_backend = \"docker\"\n\nplugin \"docker\" {\n  config {\n    memory = \"4g\n  }\n}\n"
	_, home, err := userPlugins(t, src)
	file := filepath.Join(home, "plugins.hcl")
	wantErrAt(t, err, file, 5, 17, "Invalid multi-line string")
	if !regexp.MustCompile(`plugins\.hcl:5:17: `).MatchString(err.Error()) {
		t.Errorf("error %q lacks plugins.hcl:L:C", err)
	}
}

func TestLoadPluginsUnknownAttribute(t *testing.T) {
	_, home, err := userPlugins(t, "plugin \"docker\" {\n  pth = \"/x\"\n}\n")
	wantErrAt(t, err, filepath.Join(home, "plugins.hcl"), 2, 3, `Unsupported argument; An argument named "pth" is not expected here. Did you mean "path"?`)

	_, home, err = userPlugins(t, "default_backend = \"docker\"\ncolour = \"blue\"\n")
	wantErrAt(t, err, filepath.Join(home, "plugins.hcl"), 2, 1, `Unsupported argument`)
}

func TestLoadPluginsManyErrorsOneLine(t *testing.T) {
	_, home, err := userPlugins(t, "a = 1\nb = 2\nc = 3\n")
	wantErrAt(t, err, filepath.Join(home, "plugins.hcl"), 1, 1, "(and 2 more errors)")
	var he *HCLError
	if !errorsAs(err, &he) || len(he.Diagnostics) != 3 {
		t.Errorf("want *HCLError with 3 diagnostics, got %#v", err)
	}
}

func TestLoadPluginsInvalidValues(t *testing.T) {
	cases := []struct {
		name, src string
		line, col int
		want      string
	}{
		{"bad backend", `default_backend = "Docker/../x"`, 1, 19, "Invalid default_backend"},
		{"backend not string", `default_backend = ["docker"]`, 1, 19, "Unsuitable value type"},
		{"bad plugin name", "plugin \"../evil\" {\n}\n", 1, 8, "Invalid plugin name"},
		{"duplicate plugin", "plugin \"docker\" {\n}\nplugin \"docker\" {\n}\n", 3, 1, "already defined at"},
		{"bad sha256", "plugin \"docker\" {\n  sha256 = \"abc\"\n}\n", 2, 12, "Invalid sha256"},
		{"empty path", "plugin \"docker\" {\n  path = \"\"\n}\n", 2, 10, "Empty plugin path"},
		{"two config blocks", "plugin \"docker\" {\n  config {}\n  config {}\n}\n", 3, 3, "Duplicate config block"},
		{"variable in config", "plugin \"docker\" {\n  config {\n    memory = var.mem\n  }\n}\n", 3, 14, "Variables not allowed"},
		{"block in config", "plugin \"docker\" {\n  config {\n    limits {\n    }\n  }\n}\n", 3, 5, "Unexpected \"limits\" block"},
		{"plugin without label", "plugin {\n}\n", 1, 8, "Missing name for plugin"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, home, err := userPlugins(t, c.src+"\n")
			wantErrAt(t, err, filepath.Join(home, "plugins.hcl"), c.line, c.col, c.want)
		})
	}
}

func TestLoadPluginsConfigJSON(t *testing.T) {
	src := `
plugin "docker" {
  config {
    memory     = "4g"
    pids_limit = 512
    ratio      = 1.5
    big        = 10000000000
    tags       = ["a", "b"]
    ports      = [80, 443]
    limits     = { cpu = 2, name = "x" }
    enabled    = true
    nothing    = null
  }
}
plugin "smolmachines" {
}
`
	p, _, err := userPlugins(t, src)
	if err != nil {
		t.Fatal(err)
	}
	raw := p.Block("docker").Config
	var got map[string]any
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("config %s: %v", raw, err)
	}
	want := map[string]any{
		"memory":     "4g",
		"pids_limit": json.Number("512"),
		"ratio":      json.Number("1.5"),
		"big":        json.Number("10000000000"),
		"tags":       []any{"a", "b"},
		"ports":      []any{json.Number("80"), json.Number("443")},
		"limits":     map[string]any{"cpu": json.Number("2"), "name": "x"},
		"enabled":    true,
		"nothing":    nil,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("config = %s\nwant %v", raw, want)
	}
	if string(p.Block("smolmachines").Config) != "{}" {
		t.Errorf("block without config: Config = %s, want {}", p.Block("smolmachines").Config)
	}
	absent := p.Block("podman")
	if absent.Name != "podman" || string(absent.Config) != "{}" || absent.Path != "" {
		t.Errorf("absent block = %+v", absent)
	}
	var nilPlugins *Plugins
	if string(nilPlugins.Block("docker").Config) != "{}" {
		t.Error("nil *Plugins: Block should give {} config")
	}
	if got := p.Names(); !reflect.DeepEqual(got, []string{"docker", "smolmachines"}) {
		t.Errorf("Names = %v", got)
	}
	if r := p.Block("docker").Range; r.Start.Line != 2 || !strings.HasSuffix(r.Filename, "plugins.hcl") {
		t.Errorf("Range = %v, want line 2 of plugins.hcl", r)
	}
}

func TestLoadPluginsPathsAndChecksum(t *testing.T) {
	sum := strings.Repeat("AB", 32)
	src := `
plugin "docker" {
  path   = "bin/bot-bottle-plugin-docker"
  sha256 = "` + sum + `"
}
plugin "smolmachines" {
  path = "/opt/bb/../bb/bot-bottle-plugin-smolmachines"
}
plugin "other" {
  path = "../elsewhere/plugin"
}
`
	p, home, err := userPlugins(t, src)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.Block("docker").Path, filepath.Join(home, "bin", "bot-bottle-plugin-docker"); got != want {
		t.Errorf("relative path = %q, want %q", got, want)
	}
	if got := p.Block("docker").SHA256; got != strings.ToLower(sum) {
		t.Errorf("sha256 = %q, want lower-case", got)
	}
	if got := p.Block("smolmachines").Path; got != "/opt/bb/bot-bottle-plugin-smolmachines" {
		t.Errorf("absolute path = %q", got)
	}
	if got, want := p.Block("other").Path, filepath.Join(filepath.Dir(home), "elsewhere", "plugin"); got != want {
		t.Errorf("path with .. = %q, want %q", got, want)
	}
	if p.Block("smolmachines").SHA256 != "" {
		t.Error("unset sha256 should be empty")
	}
}

func TestLoadPluginsRelativeHome(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	writeFile(t, filepath.Join("home", "plugins.hcl"), "plugin \"docker\" {\n  path = \"p\"\n}\n")
	p, err := LoadPlugins("home")
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Block("docker").Path; !filepath.IsAbs(got) || got != filepath.Join(dir, "home", "p") {
		t.Errorf("path = %q, want absolute %q", got, filepath.Join(dir, "home", "p"))
	}
}

func TestLoadPluginsUnreadableFileIsAnError(t *testing.T) {
	home := t.TempDir()
	// A directory where the file should be must not silently mean "use the default".
	if err := os.Mkdir(filepath.Join(home, "plugins.hcl"), 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := LoadPlugins(home)
	if err == nil {
		t.Fatalf("got %+v, want an error", p)
	}
	if !strings.Contains(err.Error(), "plugins.hcl") {
		t.Errorf("error %q does not name the file", err)
	}
}

func TestResolveBackend(t *testing.T) {
	withDefault := &Plugins{DefaultBackend: "smolmachines"}
	noDefault := &Plugins{}
	cases := []struct {
		flag, env string
		p         *Plugins
		want      string
	}{
		{"podman", "firecracker", withDefault, "podman"},
		{"podman", "", withDefault, "podman"},
		{"podman", "", nil, "podman"},
		{"", "firecracker", withDefault, "firecracker"},
		{"", "firecracker", nil, "firecracker"},
		{"", "", withDefault, "smolmachines"},
		{"", "", noDefault, "docker"},
		{"", "", nil, "docker"},
		{"", "  ", noDefault, "docker"},
	}
	for _, c := range cases {
		if got := ResolveBackend(c.flag, c.env, c.p); got != c.want {
			t.Errorf("ResolveBackend(%q, %q, %+v) = %q, want %q", c.flag, c.env, c.p, got, c.want)
		}
	}
}

func TestValidName(t *testing.T) {
	backendtest.CheckNameRule(t, func(s string) bool { return ValidName(s) == nil })
}
