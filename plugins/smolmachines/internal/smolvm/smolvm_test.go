package smolvm

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestErrorMessage(t *testing.T) {
	for _, tc := range []struct{ stderr, want string }{
		{"Starting...\nError: vm not found: bb-x\n", "vm not found: bb-x"},
		{"error: unexpected argument '-n' found\n\nUsage: smolvm machine exec\n", "unexpected argument '-n' found"},
		{"something odd\n\n", "something odd"},
		// A message over several lines (the Dockerfile hint) is one line.
		{"Error: config operation failed: --image: ./Dockerfile looks like a Dockerfile, not an image.\nsmolvm boots images\n  docker build -t myapp .\n",
			"config operation failed: --image: ./Dockerfile looks like a Dockerfile, not an image. smolvm boots images docker build -t myapp ."},
		// Only the last Error: counts; what the guest printed before is not it.
		{"Error: from the guest\nStarting...\nError: vm not found: bb-x\n", "vm not found: bb-x"},
		{"", "exited with code 3 and no message"},
	} {
		if got := ErrorMessage([]byte(tc.stderr), 3); got != tc.want {
			t.Errorf("ErrorMessage(%q) = %q, want %q", tc.stderr, got, tc.want)
		}
	}
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"bb-claude-7k2qz", "a", "A_b-9", strings.Repeat("a", 128)} {
		if err := ValidateName(ok); err != nil {
			t.Errorf("ValidateName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-a", "_a", "a-", "a--b", "a.b", "a:b", "a/b", strings.Repeat("a", 129)} {
		if ValidateName(bad) == nil {
			t.Errorf("ValidateName(%q) accepted", bad)
		}
	}
}

func TestIsLocalImage(t *testing.T) {
	for ref, want := range map[string]bool{"alpine": false, "ghcr.io/x/y:1": false, "/abs/x.tar": true, "./r": true,
		"x.tar.gz": true, "x.tgz": true, "-": true, "../up": true} {
		if IsLocalImage(ref) != want {
			t.Errorf("IsLocalImage(%q) = %v", ref, !want)
		}
	}
}

func TestLocateMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := Locate("")
	if err == nil || !strings.Contains(err.Error(), InstallHint) {
		t.Errorf("Locate without smolvm = %v", err)
	}
}

func TestIsNotFound(t *testing.T) {
	for msg, want := range map[string]bool{
		"vm not found: bb-x":                                                true,
		"config operation failed: vm not found: bb-x":                       true,
		"config operation failed: machine status: machine 'bb-x' not found": true,
		"agent operation failed: pack from VM: VM 'bb-x' not found":         true,
		"agent operation failed: connect: machine 'bb-x' is not running. Use 'smolvm machine start --name bb-x' first.": false,
		"config operation failed: create from .smolmachine: file not found: /x.smolmachine":                             false,
		"image 'alpine:3' not found on the host":                                                                        false,
		"cp: '/no/such' not found":                                                                                      false,
		"pack failed: layer not found":                                                                                  false,
		"vm not found":                                                                                                  false,
		"machine 'bb-x' already exists or is being created":                                                             false,
	} {
		if got := IsNotFound(&Error{Code: 1, Msg: msg}); got != want {
			t.Errorf("IsNotFound(%q) = %v, want %v", msg, got, want)
		}
	}
	if IsNotFound(errors.New("vm not found: bb-x")) {
		t.Error("IsNotFound accepted an error that is not smolvm's")
	}
	if IsNotFound(&Error{Code: 2, Msg: "vm not found: bb-x"}) {
		t.Error("IsNotFound accepted an exit code smolvm's errors never have (a guest's exit 2)")
	}
}

// created_at is a number of seconds (u64) in smolvm's JSON; a record written
// by an older smolvm holds a string of digits, which smolvm still reads, so
// both parse, as does null. Anything else is an error, not a silent zero.
func TestTimestamp(t *testing.T) {
	for in, want := range map[string]Timestamp{
		`1767225600`: 1767225600, `"1767225600"`: 1767225600, `null`: 0, `""`: 0, `0`: 0,
		`18446744073709551615`: Timestamp(^uint64(0)),
	} {
		var got Timestamp
		if err := json.Unmarshal([]byte(in), &got); err != nil || got != want {
			t.Errorf("Timestamp from %s = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{`-1`, `1.5`, `"2026-01-01T00:00:00Z"`, `"12a"`, `true`, `{}`} {
		var got Timestamp
		if err := json.Unmarshal([]byte(in), &got); err == nil {
			t.Errorf("Timestamp from %s = %d, want an error", in, got)
		}
	}
	if got := Timestamp(1767225600).RFC3339(); got != "2026-01-01T00:00:00Z" {
		t.Errorf("RFC3339 = %q", got)
	}
	if Timestamp(0).RFC3339() != "" || !Timestamp(0).Time().IsZero() {
		t.Error("an unknown created_at must read as unknown, not 1970")
	}
	if got := Timestamp(1767225600).Time(); !got.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("Time = %v", got)
	}
}

// smolvm's JSON is decoded leniently where smolvm is: unknown fields are
// ignored, a null leaves the zero value, a legacy created_at string parses.
func TestDecodeMachinesLenient(t *testing.T) {
	out := []byte(`[
	  {"name": "a", "state": "running", "cpus": 2, "memory_mib": 1024, "pid": 77, "created_at": 1767225600,
	   "image": "alpine", "labels": {"k": "v"}, "network": true, "some_future_field": {"x": [1, 2]}},
	  {"name": "b", "state": "stopped", "cpus": null, "memory_mib": null, "pid": null, "created_at": "1767225601",
	   "image": null, "labels": null, "network": null}
	]`)
	ms, err := DecodeMachines(out)
	if err != nil || len(ms) != 2 {
		t.Fatalf("DecodeMachines = %+v, %v", ms, err)
	}
	a, b := ms[0], ms[1]
	if a.Name != "a" || a.CPUs != 2 || a.MemoryMiB != 1024 || a.PID == nil || *a.PID != 77 || a.CreatedAt != 1767225600 ||
		a.Image == nil || *a.Image != "alpine" || a.Labels["k"] != "v" || !a.Network {
		t.Errorf("a = %+v", a)
	}
	if b.Name != "b" || b.CPUs != 0 || b.PID != nil || b.CreatedAt != 1767225601 || b.Image != nil || b.Labels != nil || b.Network {
		t.Errorf("b = %+v", b)
	}
	if ms, err := DecodeMachines([]byte("[]\n")); err != nil || len(ms) != 0 {
		t.Errorf("no machines = %v, %v", ms, err)
	}
	if _, err := DecodeMachine([]byte(`{"name": "c", "created_at": 1.5}`)); err == nil {
		t.Error("a fractional created_at parsed")
	}
}

// The contract table names smolvm's source for every row, flag, case,
// message and field; a row without one fails here.
func TestContractRowsNameTheirSource(t *testing.T) {
	need := func(what, src string) {
		if !SourceRE.MatchString(src) {
			t.Errorf("%s: source %q is not a smolvm file:line", what, src)
		}
	}
	seen := map[string]bool{}
	for _, c := range Contract {
		if c.ID == "" || seen[c.ID] {
			t.Errorf("call %q: empty or repeated ID", c.ID)
		}
		seen[c.ID] = true
		need("call "+c.ID, c.Source)
		if c.Use == "" || c.Output == "" {
			t.Errorf("call %s: no Use or Output", c.ID)
		}
		for _, f := range c.Flags {
			need("call "+c.ID+" flag "+f.Flag, f.Source)
		}
		if len(c.Cases) == 0 || c.Cases[0].Fixture == "" {
			t.Errorf("call %s: its first case must be its success case, with a fixture", c.ID)
		}
		for i, cs := range c.Cases {
			need(c.ID+" case "+strings.Join(cs.Argv, " "), cs.Source)
			if cs.NotFound && cs.Code != 1 {
				t.Errorf("call %s case %d: a not-found case exits 1", c.ID, i)
			}
		}
	}
	for _, m := range NotFoundMessages {
		need("message "+m.ID, m.Source)
	}
	for _, f := range append(append([]Field{}, MachineFields...), EgressDenialFields...) {
		need("field "+f.Name, f.Source)
	}
	if len(SourceCommit) != 40 {
		t.Errorf("SourceCommit %q is not a full commit hash", SourceCommit)
	}
}

// The Machine type reads every field the plugin uses under the name the
// contract gives it.
func TestMachineTagsAreContractFields(t *testing.T) {
	names := map[string]bool{}
	for _, f := range MachineFields {
		names[f.Name] = true
	}
	rt := reflect.TypeFor[Machine]()
	for i := range rt.NumField() {
		k, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
		if !names[k] {
			t.Errorf("Machine reads %q, which machine_status_json does not print", k)
		}
	}
}

func TestCopyRefusesHostPathWithColon(t *testing.T) {
	c := &CLI{Path: "/nonexistent/smolvm"}
	if err := c.CopyIn(context.Background(), "/tmp/a:b/x.tar", "m", "/tmp/x"); err == nil || !strings.Contains(err.Error(), "MACHINE:PATH") {
		t.Errorf("CopyIn with a colon = %v", err)
	}
	if err := c.CopyOut(context.Background(), "m", "/tmp/x", "/tmp/a:b/x.tar"); err == nil || !strings.Contains(err.Error(), "MACHINE:PATH") {
		t.Errorf("CopyOut with a colon = %v", err)
	}
}
