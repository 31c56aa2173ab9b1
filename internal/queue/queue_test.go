package queue

import (
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
	"syscall"
	"testing"
	"time"
)

// newQueue returns a queue in a fresh home with testID's dir created.
func newQueue(t *testing.T) (*Queue, string, string) {
	t.Helper()
	home := t.TempDir()
	q := Open(home)
	dir, err := q.Dir(testID)
	if err != nil {
		t.Fatalf("Dir: %v", err)
	}
	return q, home, dir
}

func token(n int) string { return fmt.Sprintf("tok%013d", n) }

func submit(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "inbox", name), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readReceipt(t *testing.T, dir, tok string) Receipt {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "outbox", tok+".json"))
	if err != nil {
		t.Fatalf("receipt %s: %v", tok, err)
	}
	var rc Receipt
	if err := json.Unmarshal(data, &rc); err != nil {
		t.Fatalf("receipt %s: %v", tok, err)
	}
	return rc
}

func ingestOne(t *testing.T, q *Queue) Request {
	t.Helper()
	rs, refused, err := q.Ingest(testID)
	if err != nil || len(refused) != 0 || len(rs) != 1 {
		t.Fatalf("Ingest = %d requests, refused %v, err %v; want one request", len(rs), refused, err)
	}
	return rs[0]
}

func TestDirLayoutAndModes(t *testing.T) {
	old := syscall.Umask(0o077) // a strict umask must not leak into the modes
	defer syscall.Umask(old)
	q, home, dir := newQueue(t)
	if dir != filepath.Join(home, "queue", testID) {
		t.Fatalf("Dir = %s", dir)
	}
	want := map[string]fs.FileMode{
		filepath.Join(home, "queue"):            0o700 | fs.ModeDir,
		dir:                                     0o755 | fs.ModeDir,
		filepath.Join(dir, "inbox"):             0o777 | fs.ModeDir | fs.ModeSticky,
		filepath.Join(dir, "outbox"):            0o755 | fs.ModeDir,
		filepath.Join(home, "requests"):         0o700 | fs.ModeDir,
		filepath.Join(home, "requests", testID): 0o700 | fs.ModeDir,
	}
	for p, m := range want {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != m {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), m)
		}
	}
	// Idempotent, and repairs a mode someone changed.
	os.Chmod(filepath.Join(dir, "inbox"), 0o700)
	if _, err := q.Dir(testID); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Lstat(filepath.Join(dir, "inbox")); fi.Mode() != want[filepath.Join(dir, "inbox")] {
		t.Errorf("inbox mode not repaired: %v", fi.Mode())
	}
	for _, bad := range []string{"", "..", "../x", "a/b", "A", "x\n"} {
		if _, err := q.Dir(bad); err == nil {
			t.Errorf("Dir(%q) accepted", bad)
		}
	}
}

func TestDirRefusesSymlink(t *testing.T) {
	home := t.TempDir()
	elsewhere := t.TempDir()
	os.MkdirAll(filepath.Join(home, "queue"), 0o700)
	if err := os.Symlink(elsewhere, filepath.Join(home, "queue", testID)); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(home).Dir(testID); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("Dir over a symlink: %v", err)
	}
	if ents, _ := os.ReadDir(elsewhere); len(ents) != 0 {
		t.Fatalf("wrote through the symlink: %v", ents)
	}
}

func TestIngestAndDecide(t *testing.T) {
	q, _, dir := newQueue(t)
	submit(t, dir, token(1)+".json", `{"kind":"capability","reason":"need rg","run":"apt-get install -y ripgrep"}`)
	r := ingestOne(t, q)
	if !strings.HasPrefix(r.ID, testID+"-") || len(r.ID) != len(testID)+7 || r.Status != StatusPending || r.ClientToken != token(1) || r.CreatedAt.IsZero() {
		t.Fatalf("ingested %+v", r)
	}
	if _, err := os.Lstat(filepath.Join(dir, "inbox", token(1)+".json")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("inbox file left behind: %v", err)
	}
	rc := readReceipt(t, dir, token(1))
	if rc.ID != r.ID || rc.Status != StatusPending || rc.Summary != "RUN apt-get install -y ripgrep" {
		t.Fatalf("pending receipt %+v", rc)
	}
	// Nothing new on a second pass.
	if rs, ref, err := q.Ingest(testID); len(rs)+len(ref) != 0 || err != nil {
		t.Fatalf("second Ingest: %v %v %v", rs, ref, err)
	}

	got, err := q.Get(r.ID)
	if err != nil || got != r {
		t.Fatalf("Get = %+v, %v; want %+v", got, err, r)
	}
	d, err := q.Decide(r.ID, false, "not today", "user:alice")
	if err != nil {
		t.Fatalf("Decide: %v", err)
	}
	if d.Status != StatusDenied || d.DecidedBy != "user:alice" || d.DecisionReason != "not today" || d.DecidedAt == nil {
		t.Fatalf("decided %+v", d)
	}
	rc = readReceipt(t, dir, token(1))
	if rc.Status != StatusDenied || rc.DecisionReason != "not today" {
		t.Fatalf("denied receipt %+v", rc)
	}
	if raw, _ := os.ReadFile(filepath.Join(dir, "outbox", token(1)+".json")); strings.Contains(string(raw), "alice") {
		t.Fatalf("receipt names the operator: %s", raw)
	}
	if _, err := q.Decide(r.ID, true, "", "user:bob"); !errors.Is(err, ErrAlreadyDecided) {
		t.Fatalf("second Decide: %v", err)
	}
	if got, _ := q.Get(r.ID); got.Status != StatusDenied || got.DecidedBy != "user:alice" {
		t.Fatalf("second decision changed the record: %+v", got)
	}
	if fi, err := os.Stat(filepath.Join(dir, "outbox", token(1)+".json")); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("receipt mode: %v %v", fi.Mode(), err)
	}
}

func TestDecideErrors(t *testing.T) {
	q, _, _ := newQueue(t)
	if _, err := q.Decide(testID+"-abcdef", true, "", "user:a"); !errors.Is(err, ErrNoRequest) {
		t.Errorf("missing request: %v", err)
	}
	if _, err := q.Decide("nobody-abcde-abcdef", true, "", "user:a"); !errors.Is(err, ErrNoRequest) {
		t.Errorf("missing bottle: %v", err)
	}
	if _, err := q.Get(testID + "-abcdef"); !errors.Is(err, ErrNoRequest) {
		t.Errorf("Get missing: %v", err)
	}
	for _, bad := range []string{"", "../../etc/passwd", testID, testID + "-ABCDEF", testID + "-abc/ef"} {
		if _, err := q.Get(bad); err == nil || errors.Is(err, ErrNoRequest) {
			t.Errorf("Get(%q): %v, want an invalid-id error", bad, err)
		}
		if _, err := q.Decide(bad, true, "", "user:a"); err == nil {
			t.Errorf("Decide(%q) accepted", bad)
		}
	}
}

func TestListSortedAcrossBottles(t *testing.T) {
	home := t.TempDir()
	q := Open(home)
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	q.now = func() time.Time { clock = clock.Add(time.Second); return clock }
	ids := []string{"b-bbbbb", "a-aaaaa", "b-bbbbb"}
	var want []string
	for i, id := range ids {
		dir, err := q.Dir(id)
		if err != nil {
			t.Fatal(err)
		}
		submit(t, dir, token(i)+".json", fmt.Sprintf(`{"kind":"egress","reason":"r","host":"h%d.test"}`, i))
		rs, ref, err := q.Ingest(id)
		if err != nil || len(ref) != 0 || len(rs) != 1 {
			t.Fatal(rs, ref, err)
		}
		want = append(want, rs[0].ID)
	}
	// A corrupt record is reported, not fatal.
	os.WriteFile(filepath.Join(home, "requests", "a-aaaaa", "a-aaaaa-zzzzzz.json"), []byte("{"), 0o600)
	list, err := q.List()
	if err == nil || !strings.Contains(err.Error(), "a-aaaaa-zzzzzz") {
		t.Errorf("corrupt record not reported: %v", err)
	}
	var got []string
	for _, r := range list {
		got = append(got, r.ID)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("List = %v, want %v", got, want)
	}
}

func TestIngestAll(t *testing.T) {
	home := t.TempDir()
	q := Open(home)
	for i, id := range []string{"a-aaaaa", "b-bbbbb"} {
		dir, _ := q.Dir(id)
		submit(t, dir, token(i)+".json", `{"kind":"egress","reason":"r","host":"x.test"}`)
		submit(t, dir, "junk", `x`)
	}
	rs, refused, err := q.IngestAll()
	if err != nil || len(rs) != 2 || len(refused) != 2 {
		t.Fatalf("IngestAll = %v, %v, %v", rs, refused, err)
	}
	if rs[0].Identity == rs[1].Identity {
		t.Fatalf("both requests under one identity: %+v", rs)
	}
}

func TestRemove(t *testing.T) {
	q, home, dir := newQueue(t)
	outside := filepath.Join(t.TempDir(), "keep")
	os.WriteFile(outside, []byte("keep"), 0o600)
	submit(t, dir, token(1)+".json", `{"kind":"egress","reason":"r","host":"x.test"}`)
	r := ingestOne(t, q)
	must(t, os.Symlink(filepath.Dir(outside), filepath.Join(dir, "inbox", "link")))
	must(t, os.Symlink(outside, filepath.Join(dir, "inbox", "filelink")))
	if err := q.Remove(testID); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, filepath.Join(home, "requests", testID)} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still there: %v", p, err)
		}
	}
	if data, err := os.ReadFile(outside); err != nil || string(data) != "keep" {
		t.Fatalf("Remove followed a link: %q %v", data, err)
	}
	if _, err := q.Get(r.ID); !errors.Is(err, ErrNoRequest) {
		t.Fatalf("Get after Remove: %v", err)
	}
	if err := q.Remove(testID); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
}

func TestTokenReuseRefused(t *testing.T) {
	q, _, dir := newQueue(t)
	submit(t, dir, token(1)+".json", `{"kind":"egress","reason":"first","host":"x.test"}`)
	r := ingestOne(t, q)
	submit(t, dir, token(1)+".json", `{"kind":"egress","reason":"second","host":"y.test"}`)
	rs, refused, err := q.Ingest(testID)
	if err != nil || len(rs) != 0 || len(refused) != 1 || !strings.Contains(refused[0].Error(), "already used") {
		t.Fatalf("reuse: %v %v %v", rs, refused, err)
	}
	if rc := readReceipt(t, dir, token(1)); rc.ID != r.ID || rc.Status != StatusPending || rc.Summary != "x.test" {
		t.Fatalf("reused token overwrote the receipt: %+v", rc)
	}
}

func TestStaleTempFiles(t *testing.T) {
	q, _, dir := newQueue(t)
	fresh := filepath.Join(dir, "inbox", TempPrefix+"fresh")
	stale := filepath.Join(dir, "inbox", TempPrefix+"stale")
	os.WriteFile(fresh, []byte(`{"kind":`), 0o644)
	os.WriteFile(stale, []byte(`{"kind":`), 0o644)
	old := time.Now().Add(-time.Hour)
	os.Chtimes(stale, old, old)
	rs, refused, err := q.Ingest(testID)
	if err != nil || len(rs) != 0 || len(refused) != 1 || !strings.Contains(refused[0].Error(), "stale") {
		t.Fatalf("Ingest: %v %v %v", rs, refused, err)
	}
	if _, err := os.Lstat(fresh); err != nil {
		t.Errorf("fresh temp file removed: %v", err)
	}
	if _, err := os.Lstat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale temp file kept: %v", err)
	}
}

// Decide must succeed exactly once among concurrent deciders, in one process
// (each with its own lock handle) and across processes.
func TestDecideConcurrentGoroutines(t *testing.T) {
	q, home, dir := newQueue(t)
	submit(t, dir, token(1)+".json", `{"kind":"egress","reason":"r","host":"x.test"}`)
	r := ingestOne(t, q)
	const n = 16
	var wg sync.WaitGroup
	results := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, results[i] = Open(home).Decide(r.ID, i%2 == 0, "r", fmt.Sprintf("user:u%d", i))
		})
	}
	wg.Wait()
	wins := 0
	for _, err := range results {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, ErrAlreadyDecided):
			t.Errorf("unexpected error: %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d deciders won, want 1", wins)
	}
}

func TestDecideConcurrentProcesses(t *testing.T) {
	if os.Getenv("QUEUE_TEST_DECIDE_HOME") != "" {
		return // running as a child: see TestDecideChild
	}
	q, home, dir := newQueue(t)
	submit(t, dir, token(1)+".json", `{"kind":"egress","reason":"r","host":"x.test"}`)
	r := ingestOne(t, q)
	const n = 6
	cmds := make([]*exec.Cmd, n)
	for i := range n {
		cmds[i] = exec.Command(os.Args[0], "-test.run=^TestDecideChild$", "-test.v")
		cmds[i].Env = append(os.Environ(), "QUEUE_TEST_DECIDE_HOME="+home, "QUEUE_TEST_DECIDE_ID="+r.ID, "QUEUE_TEST_DECIDE_N="+strconv.Itoa(i))
	}
	outs := make([][]byte, n)
	var wg sync.WaitGroup
	for i, c := range cmds {
		wg.Go(func() { outs[i], _ = c.CombinedOutput() })
	}
	wg.Wait()
	wins, losses := 0, 0
	for _, out := range outs {
		wins += strings.Count(string(out), "DECIDE-WON")
		losses += strings.Count(string(out), "DECIDE-LOST")
	}
	if wins != 1 || losses != n-1 {
		t.Fatalf("wins %d losses %d, want 1 and %d; outputs:\n%s", wins, losses, n-1, outs)
	}
	got, _ := q.Get(r.ID)
	if got.Status == StatusPending || !strings.HasPrefix(got.DecidedBy, "user:p") {
		t.Fatalf("record after race: %+v", got)
	}
}

func TestDecideChild(t *testing.T) {
	home := os.Getenv("QUEUE_TEST_DECIDE_HOME")
	if home == "" {
		t.Skip("only runs as a child of TestDecideConcurrentProcesses")
	}
	n := os.Getenv("QUEUE_TEST_DECIDE_N")
	_, err := Open(home).Decide(os.Getenv("QUEUE_TEST_DECIDE_ID"), true, "", "user:p"+n)
	switch {
	case err == nil:
		fmt.Println("DECIDE-WON")
	case errors.Is(err, ErrAlreadyDecided):
		fmt.Println("DECIDE-LOST")
	default:
		t.Fatalf("Decide: %v", err)
	}
}

func TestRequestIDsUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 2000 {
		s := newSuffix(6)
		if len(s) != 6 || strings.Trim(s, base36) != "" {
			t.Fatalf("bad suffix %q", s)
		}
		seen[s] = true
	}
	if len(seen) < 1990 {
		t.Fatalf("only %d distinct suffixes in 2000", len(seen))
	}
}
