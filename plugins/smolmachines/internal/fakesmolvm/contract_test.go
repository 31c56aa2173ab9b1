package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/bot-bottle/bot-bottle/plugins/smolmachines/internal/smolvm"
)

const contractFixtures = "testdata/contract"

// world is the state smolvm.Contract's cases run in (see smolvm.Case).
type world struct {
	f                *fake
	proj, root, tmp  string
	placeholderPaths map[string]string
}

// realEnv asks for the contract to be run against the smolvm on $PATH
// instead of the fake, to check the fixtures against the real program.
const realEnv = "BOT_BOTTLE_SMOLVM_REAL"

func newWorld(t *testing.T) *world {
	w := &world{f: newFake(t), proj: t.TempDir(), tmp: t.TempDir()}
	w.f.env = []string{"BB_FX_TOKEN=fx-secret"}
	if os.Getenv(realEnv) == "1" {
		bin, err := exec.LookPath("smolvm")
		if err != nil {
			t.Fatalf("%s=1 but smolvm is not on $PATH: %v", realEnv, err)
		}
		// All of smolvm's state (machine DB, VM dirs) in a fresh HOME, so
		// the world's names meet no machine of the user's.
		home := t.TempDir()
		w.f.bin = bin
		w.f.env = append(w.f.env, "HOME="+home, "SMOLVM_DATA_DIR="+home, "XDG_CACHE_HOME="+filepath.Join(home, ".cache"),
			"XDG_DATA_HOME="+filepath.Join(home, ".local", "share"), "XDG_CONFIG_HOME="+filepath.Join(home, ".config"))
	}
	t.Cleanup(func() {
		for _, n := range []string{"fx", "fx-idle", "fx-back", "fx-nosecret"} {
			w.f.run("", "machine", "delete", "--name", n, "-f")
		}
	})
	if err := os.WriteFile(filepath.Join(w.proj, "hello.txt"), []byte("hello from the project\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(t.TempDir(), "rootfs")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	var err error
	if w.root, err = filepath.EvalSymlinks(root); err != nil {
		t.Fatal(err)
	}
	w.placeholderPaths = map[string]string{"{PROJ}": w.proj, "{ROOTFS}": w.root, "{TMP}": w.tmp}
	return w
}

// expand replaces the world's path placeholders in s.
func (w *world) expand(s string) string {
	for k, v := range w.placeholderPaths {
		s = strings.ReplaceAll(s, k, v)
	}
	return s
}

func (w *world) argv(a []string) []string {
	out := make([]string, len(a))
	for i, s := range a {
		out[i] = w.expand(s)
	}
	return out
}

var placeholderRE = regexp.MustCompile(`\{[A-Z]+\}`)

// textPattern turns a .txt fixture into a regexp: its lines literally, the
// placeholders replaced, a line "..." standing for any lines.
func (w *world) textPattern(t *testing.T, fixture string) *regexp.Regexp {
	lines := strings.Split(fixture, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	var b strings.Builder
	b.WriteString(`\A`)
	for _, l := range lines {
		if l == "..." {
			b.WriteString(`(?:[^\n]*\n)*?`)
			continue
		}
		last := 0
		for _, loc := range placeholderRE.FindAllStringIndex(l, -1) {
			b.WriteString(regexp.QuoteMeta(l[last:loc[0]]))
			switch ph := l[loc[0]:loc[1]]; ph {
			case "{PID}":
				b.WriteString(`[0-9]+`)
			case "{ANY}":
				b.WriteString(`[^\n]*`)
			case "{DATADIR}":
				b.WriteString(`/\S+/vms/[0-9a-f]{16}`)
			default:
				v, ok := w.placeholderPaths[ph]
				if !ok {
					t.Fatalf("fixture uses unknown placeholder %s", ph)
				}
				b.WriteString(regexp.QuoteMeta(v))
			}
			last = loc[1]
		}
		b.WriteString(regexp.QuoteMeta(l[last:]))
		b.WriteString(`\n`)
	}
	b.WriteString(`\z`)
	return regexp.MustCompile(b.String())
}

// TestContract runs every case of smolvm.Contract against the fake (with
// BOT_BOTTLE_SMOLVM_REAL=1, against the smolvm on $PATH), in table order: the exit code, the stdout against the fixture (JSON by key and type,
// text by line), the message the driver extracts from stderr and whether it
// reads it as "no such machine", and the JSON outputs through the plugin's
// own decoders.
func TestContract(t *testing.T) {
	w := newWorld(t)
	used := map[string]bool{}
	for _, call := range smolvm.Contract {
		if call.ID == "egress-events" {
			writeDenials(t, w)
		}
		for i, c := range call.Cases {
			label := fmt.Sprintf("%s[%d] %q", call.ID, i, c.Argv)
			for _, s := range c.Setup {
				if _, errOut, code := w.f.run("", w.argv(s)...); code != 0 {
					t.Fatalf("%s: setup %q exited %d: %s", label, s, code, errOut)
				}
			}
			out, errOut, code := w.f.run(c.Stdin, w.argv(c.Argv)...)
			if code != c.Code {
				t.Errorf("%s: exit %d, want %d\nstdout %q\nstderr %q", label, code, c.Code, out, errOut)
				continue
			}
			msg := smolvm.ErrorMessage([]byte(errOut), code)
			if c.Stderr != "" && msg != w.expand(c.Stderr) {
				t.Errorf("%s: message\n %q\nwant\n %q", label, msg, w.expand(c.Stderr))
			}
			if code != 0 {
				if got := smolvm.IsNotFound(&smolvm.Error{Code: code, Msg: msg}); got != c.NotFound {
					t.Errorf("%s: IsNotFound(%q) = %v, want %v", label, msg, got, c.NotFound)
				}
			}
			for _, s := range c.Teardown {
				if _, errOut, code := w.f.run("", w.argv(s)...); code != 0 {
					t.Fatalf("%s: teardown %q exited %d: %s", label, s, code, errOut)
				}
			}
			if c.Fixture != "" {
				used[c.Fixture] = true
				checkFixture(t, w, label, c.Fixture, out)
				checkDecodes(t, c.Fixture, label, []byte(out))
			}
		}
		if call.ID == "cp-out" {
			if b, err := os.ReadFile(filepath.Join(w.tmp, "hello-back.txt")); err != nil || string(b) != "hello from the project\n" {
				t.Errorf("cp in then out: %q, %v", b, err)
			}
		}
	}
	ents, err := os.ReadDir(contractFixtures)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !used[e.Name()] {
			t.Errorf("fixture %s is no case's", e.Name())
		}
	}
}

// writeDenials stands in for the VMM: three refusals in fx's denial log.
func writeDenials(t *testing.T, w *world) {
	dir := strings.TrimSpace(w.f.mustRun("machine", "data-dir", "--name", "fx"))
	log := "[2026-08-13T02:31:00Z]: egress policy denied connect to 10.0.0.1:443\n" +
		"[2026-08-13T02:31:01.123456Z WARN  libkrun] egress policy denied sendto 10.0.0.2:53\n" +
		"[2026-08-13T02:31:02Z]: egress policy denied resolve evil.example\n"
	if err := os.WriteFile(filepath.Join(dir, "egress-denials.log"), []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
}

func checkFixture(t *testing.T, w *world, label, name, out string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(contractFixtures, name))
	if err != nil {
		t.Fatalf("%s: %v", label, err)
	}
	switch filepath.Ext(name) {
	case ".json":
		var want, got any
		if err := json.Unmarshal([]byte(w.expand(string(b))), &want); err != nil {
			t.Fatalf("%s: fixture %s: %v", label, name, err)
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Errorf("%s: stdout is not JSON: %v\n%s", label, err, out)
			return
		}
		for _, d := range diffJSON("$", want, got) {
			t.Errorf("%s: %s: %s", label, name, d)
		}
	case ".txt":
		norm := strings.ReplaceAll(out, "\r\n", "\n")
		if re := w.textPattern(t, string(b)); !re.MatchString(norm) {
			t.Errorf("%s: stdout\n%s\ndoes not match %s:\n%s", label, out, name, b)
		}
	default:
		t.Fatalf("%s: fixture %s is neither .json nor .txt", label, name)
	}
}

// checkDecodes parses a case's stdout with the plugin's own decoders.
func checkDecodes(t *testing.T, fixture, label string, out []byte) {
	t.Helper()
	switch fixture {
	case "status.json":
		m, err := smolvm.DecodeMachine(out)
		if err != nil || m.Name != "fx" || m.State != smolvm.StateRunning || m.CreatedAt == 0 || m.PID == nil ||
			m.CPUs != 2 || m.MemoryMiB != 1024 || !m.Network || m.Labels["bot-bottle.identity"] != "fx-1" || m.Image == nil || *m.Image != "alpine" {
			t.Errorf("%s: decoded %+v, %v", label, m, err)
		}
	case "ls.json":
		ms, err := smolvm.DecodeMachines(out)
		if err != nil || len(ms) != 2 {
			t.Errorf("%s: decoded %+v, %v", label, ms, err)
		}
	case "egress-events-none.json":
		if evs, err := smolvm.DecodeEgressDenials(out); err != nil || evs == nil || len(evs) != 0 {
			t.Errorf("%s: decoded %#v, %v; want an empty list", label, evs, err)
		}
	case "egress-events.json":
		evs, err := smolvm.DecodeEgressDenials(out)
		if err != nil || len(evs) != 2 || evs[1] != (smolvm.EgressDenial{Timestamp: "2026-08-13T02:31:02Z", Operation: "resolve", Dest: "evil.example"}) {
			t.Errorf("%s: decoded %+v, %v", label, evs, err)
		}
	case "exec-detach.txt":
		if _, err := strconv.Atoi(strings.TrimSpace(string(out))); err != nil {
			t.Errorf("%s: no process id: %q", label, out)
		}
	}
}

// diffJSON compares got with want: the same keys and JSON types everywhere,
// the same values except under smolvm.Varies keys; arrays of objects with a
// "name" compare by name (smolvm's ls has no order).
func diffJSON(path string, want, got any) []string {
	if jsonType(want) != jsonType(got) {
		return []string{fmt.Sprintf("%s is %s %v, want %s %v", path, jsonType(got), got, jsonType(want), want)}
	}
	var out []string
	switch wv := want.(type) {
	case map[string]any:
		gv := got.(map[string]any)
		for k := range wv {
			if _, ok := gv[k]; !ok {
				out = append(out, fmt.Sprintf("%s lacks %q", path, k))
			}
		}
		for k := range gv {
			if _, ok := wv[k]; !ok {
				out = append(out, fmt.Sprintf("%s has %q, which smolvm does not print", path, k))
			}
		}
		for k, w := range wv {
			g, ok := gv[k]
			if !ok {
				continue
			}
			if slices.Contains(smolvm.Varies, k) {
				if jsonType(w) != jsonType(g) {
					out = append(out, fmt.Sprintf("%s.%s is %s, want %s", path, k, jsonType(g), jsonType(w)))
				}
				continue
			}
			out = append(out, diffJSON(path+"."+k, w, g)...)
		}
	case []any:
		gv := got.([]any)
		if len(wv) != len(gv) {
			return []string{fmt.Sprintf("%s has %d elements, want %d", path, len(gv), len(wv))}
		}
		wv, gv = byName(wv), byName(gv)
		for i := range wv {
			out = append(out, diffJSON(fmt.Sprintf("%s[%d]", path, i), wv[i], gv[i])...)
		}
	default:
		if want != got {
			out = append(out, fmt.Sprintf("%s = %v, want %v", path, got, want))
		}
	}
	return out
}

func byName(a []any) []any {
	a = slices.Clone(a)
	sort.SliceStable(a, func(i, j int) bool {
		mi, _ := a[i].(map[string]any)
		mj, _ := a[j].(map[string]any)
		ni, _ := mi["name"].(string)
		nj, _ := mj["name"].(string)
		return ni < nj
	})
	return a
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "bool"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// TestContractFieldTypes checks the machine and denial fixtures, and so the
// fake that matches them, against the contract's field tables: exactly the
// keys smolvm prints, each of its JSON type.
func TestContractFieldTypes(t *testing.T) {
	check := func(name string, obj map[string]any, fields []smolvm.Field) {
		seen := map[string]bool{}
		for _, f := range fields {
			seen[f.Name] = true
			v, ok := obj[f.Name]
			if !ok {
				t.Errorf("%s lacks %q", name, f.Name)
				continue
			}
			if !slices.Contains(strings.Split(f.Type, "|"), jsonType(v)) {
				t.Errorf("%s: %q is %s, the contract says %s (%s)", name, f.Name, jsonType(v), f.Type, f.Source)
			}
		}
		for k := range obj {
			if !seen[k] {
				t.Errorf("%s has %q, which the contract does not list", name, k)
			}
		}
	}
	read := func(name string, v any) {
		b, err := os.ReadFile(filepath.Join(contractFixtures, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	var st map[string]any
	read("status.json", &st)
	check("status.json", st, smolvm.MachineFields)
	var ls []map[string]any
	read("ls.json", &ls)
	for i, m := range ls {
		check(fmt.Sprintf("ls.json[%d]", i), m, smolvm.MachineFields)
	}
	var evs []map[string]any
	read("egress-events.json", &evs)
	for i, e := range evs {
		check(fmt.Sprintf("egress-events.json[%d]", i), e, smolvm.EgressDenialFields)
	}
}
