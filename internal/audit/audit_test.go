package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const id = "shell-7k2qz"

func TestAppendRead(t *testing.T) {
	home := t.TempDir()
	l := Open(home)
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	events := []Event{
		{Time: at, Identity: id, Kind: KindStart, Actor: "user:alice", Fields: map[string]any{"backend": "docker"}},
		{Identity: id, Kind: KindRequest, RequestID: id + "-abcdef", Fields: map[string]any{"dockerfile_diff": "+RUN x\n", "kind": "capability"}},
		{Identity: id, Kind: KindDecision, Actor: "policy:supervise.hcl#3", RequestID: id + "-abcdef", Fields: map[string]any{"approved": true}},
		{Identity: id, Kind: KindEgress, Fields: map[string]any{"host": "a.test", "port": 443, "allowed": false, "rule": "default deny"}},
	}
	before := time.Now().UTC()
	for _, ev := range events {
		if err := l.Append(ev); err != nil {
			t.Fatalf("Append: %v", err)
		}
	}
	got, err := l.Read(id)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if len(got) != len(events) {
		t.Fatalf("read %d events, want %d", len(got), len(events))
	}
	for i, ev := range got {
		if ev.Kind != events[i].Kind || ev.Identity != id || ev.Actor != events[i].Actor || ev.RequestID != events[i].RequestID {
			t.Errorf("event %d = %+v, want %+v", i, ev, events[i])
		}
	}
	if !got[0].Time.Equal(at) {
		t.Errorf("explicit time lost: %v", got[0].Time)
	}
	if got[1].Time.Before(before.Add(-time.Second)) || got[1].Time.Location() != time.UTC {
		t.Errorf("zero time not stamped now in UTC: %v", got[1].Time)
	}
	if got[3].Fields["port"] != float64(443) || got[3].Fields["allowed"] != false || got[3].Fields["rule"] != "default deny" {
		t.Errorf("egress fields: %v", got[3].Fields)
	}
	path, _ := l.Path(id)
	if path != filepath.Join(home, "audit", id+".jsonl") {
		t.Errorf("Path = %s", path)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("log mode: %v %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Dir(path)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("audit dir mode: %v %v", fi.Mode(), err)
	}
	data, _ := os.ReadFile(path)
	if n := bytes.Count(data, []byte("\n")); n != len(events) {
		t.Errorf("%d lines for %d events", n, len(events))
	}
}

func TestInvalidInput(t *testing.T) {
	l := Open(t.TempDir())
	for _, bad := range []Event{
		{Identity: "", Kind: KindStart},
		{Identity: "../x", Kind: KindStart},
		{Identity: "a/b", Kind: KindStart},
		{Identity: id, Kind: ""},
		{Identity: id, Kind: "Start\n"},
		{Identity: id, Kind: KindStart, Fields: map[string]any{"f": func() {}}},
	} {
		if err := l.Append(bad); err == nil {
			t.Errorf("Append(%+v) accepted", bad)
		}
	}
	if _, err := l.Read("../../etc/passwd"); err == nil {
		t.Error("Read of a path accepted")
	}
	if _, err := l.Read("nobody-aaaaa"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Read of a missing log: %v", err)
	}
}

type payload struct {
	Env  map[string]string `json:"env"`
	Args []string          `json:"args"`
}

// A secret handed to WithSecrets never reaches the file, in whichever field
// or Go type it hides, JSON-escaped or not.
func TestSecretsNeverWritten(t *testing.T) {
	home := t.TempDir()
	secrets := []string{"sk-ant-1234567890abcdef", `p"a<ss>&w\rd` + "\u2028", "987654321987"}
	base := Open(home)
	l := base.WithSecrets(append([]string{""}, secrets...)...)
	events := []Event{
		{Identity: id, Kind: KindStart, Actor: "user:" + secrets[0]},
		{Identity: id, Kind: KindRequest, RequestID: "x" + secrets[1], Fields: map[string]any{
			"dockerfile_diff": "+ENV KEY=" + secrets[0] + "\n",
			"nested":          map[string]any{"deep": []any{"ok", "tok=" + secrets[1]}},
			secrets[0]:        "key holds the secret",
			"struct":          payload{Env: map[string]string{"ANTHROPIC_API_KEY": secrets[0]}, Args: []string{"--key", secrets[1]}},
			"number":          int64(987654321987),
			"kept":            "plain value",
		}},
	}
	for _, ev := range events {
		if err := l.Append(ev); err != nil {
			t.Fatalf("Append: %v", err)
		}
	}
	path, _ := l.Path(id)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets {
		quoted, _ := json.Marshal(s)
		for _, form := range [][]byte{[]byte(s), quoted[1 : len(quoted)-1]} {
			if bytes.Contains(data, form) {
				t.Errorf("secret %q in the log as %q:\n%s", s, form, data)
			}
		}
	}
	got, err := l.Read(id)
	if err != nil || len(got) != 2 {
		t.Fatalf("Read: %v %v", got, err)
	}
	if got[0].Actor != Redacted || got[1].RequestID != Redacted {
		t.Errorf("actor/request id not redacted: %+v", got)
	}
	f := got[1].Fields
	if f["kept"] != "plain value" || f["dockerfile_diff"] != Redacted || f["number"] != Redacted {
		t.Errorf("fields: %v", f)
	}
	if !strings.Contains(string(data), Redacted+"#1") {
		t.Errorf("secret map key not replaced: %s", data)
	}
	// The receiver of WithSecrets is left alone.
	if err := base.Append(Event{Identity: "other-aaaaa", Kind: KindStart, Actor: secrets[0]}); err != nil {
		t.Fatal(err)
	}
	if evs, _ := base.Read("other-aaaaa"); len(evs) != 1 || evs[0].Actor != secrets[0] {
		t.Errorf("base log redacted too: %+v", evs)
	}
}

func TestTornLastLine(t *testing.T) {
	l := Open(t.TempDir())
	for i := range 2 {
		if err := l.Append(Event{Identity: id, Kind: KindStart, Fields: map[string]any{"n": i}}); err != nil {
			t.Fatal(err)
		}
	}
	path, _ := l.Path(id)
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"time":"2026-01-01T00:00:00Z","identity":"shell-7k2qz","ki`)
	f.Close()
	got, err := l.Read(id)
	if err != nil || len(got) != 2 {
		t.Fatalf("Read with a torn last line: %d events, %v", len(got), err)
	}
	if err := l.Append(Event{Identity: id, Kind: KindStop}); err != nil {
		t.Fatal(err)
	}
	got, err = l.Read(id)
	if err != nil || len(got) != 3 || got[2].Kind != KindStop {
		t.Fatalf("after append past a torn line: %+v, %v", got, err)
	}
}

func TestRefusesSymlinkedLog(t *testing.T) {
	home := t.TempDir()
	target := filepath.Join(t.TempDir(), "host-file")
	os.WriteFile(target, []byte("keep\n"), 0o600)
	os.MkdirAll(filepath.Join(home, "audit"), 0o700)
	os.Symlink(target, filepath.Join(home, "audit", id+".jsonl"))
	l := Open(home)
	if err := l.Append(Event{Identity: id, Kind: KindStart}); err == nil {
		t.Fatal("appended through a symlink")
	}
	if data, _ := os.ReadFile(target); string(data) != "keep\n" {
		t.Fatalf("target changed: %q", data)
	}
}

// Concurrent writers, goroutines and processes, never interleave lines.
func TestConcurrentAppend(t *testing.T) {
	if os.Getenv("AUDIT_TEST_HOME") != "" {
		return
	}
	home := t.TempDir()
	const procs, perProc, goroutines = 3, 100, 4
	big := strings.Repeat("x", 8<<10) // larger than PIPE_BUF, so only the lock keeps lines whole
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			l := Open(home)
			for i := range perProc {
				if err := l.Append(Event{Identity: id, Kind: KindEgress, Actor: fmt.Sprintf("g%d", g), Fields: map[string]any{"i": i, "pad": big}}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	outs := make([][]byte, procs)
	for p := range procs {
		wg.Go(func() {
			c := exec.Command(os.Args[0], "-test.run=^TestAppendChild$")
			c.Env = append(os.Environ(), "AUDIT_TEST_HOME="+home, "AUDIT_TEST_N="+strconv.Itoa(perProc), "AUDIT_TEST_P=p"+strconv.Itoa(p))
			var err error
			if outs[p], err = c.CombinedOutput(); err != nil {
				t.Errorf("child %d: %v\n%s", p, err, outs[p])
			}
		})
	}
	wg.Wait()
	path, _ := Open(home).Path(id)
	f, _ := os.Open(path)
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	lines := 0
	for sc.Scan() {
		lines++
		var ev Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("line %d is not one event: %v", lines, err)
		}
	}
	if want := (procs + goroutines) * perProc; lines != want {
		t.Fatalf("%d lines, want %d", lines, want)
	}
}

func TestAppendChild(t *testing.T) {
	home := os.Getenv("AUDIT_TEST_HOME")
	if home == "" {
		t.Skip("only runs as a child of TestConcurrentAppend")
	}
	n, _ := strconv.Atoi(os.Getenv("AUDIT_TEST_N"))
	l := Open(home)
	big := strings.Repeat("y", 8<<10)
	for i := range n {
		if err := l.Append(Event{Identity: id, Kind: KindEgress, Actor: os.Getenv("AUDIT_TEST_P"), Fields: map[string]any{"i": i, "pad": big}}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDockerfileDiff(t *testing.T) {
	old := "FROM base\nRUN a\n"
	got := DockerfileDiff(old, old+"RUN apt-get install -y ripgrep\n")
	want := "--- Dockerfile\n+++ Dockerfile (requested)\n@@ -1,2 +1,3 @@\n FROM base\n RUN a\n+RUN apt-get install -y ripgrep\n"
	if got != want {
		t.Errorf("append diff:\n%s\nwant:\n%s", got, want)
	}
	got = DockerfileDiff("FROM a\nUSER x", "FROM b\nUSER x")
	want = "--- Dockerfile\n+++ Dockerfile (requested)\n@@ -1,2 +1,2 @@\n-FROM a\n+FROM b\n USER x\n"
	if got != want {
		t.Errorf("replace diff:\n%s\nwant:\n%s", got, want)
	}
	if got := DockerfileDiff(old, old); got != "" {
		t.Errorf("identical inputs: %q", got)
	}
	if got := DockerfileDiff("", "FROM x\n"); !strings.Contains(got, "+FROM x\n") {
		t.Errorf("from nothing: %q", got)
	}
}
