package podqueue

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

const tok1, tok2 = "aaaaaaaaaaaaaaaa.json", "bbbbbbbbbbbbbbbb.json"

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// What a hostile agent leaves in its inbox besides requests stays in the
// pod: links, temp files, other names, directories, oversized files.
func TestTakeOnlyFinishedRequests(t *testing.T) {
	in, q := t.TempDir(), t.TempDir()
	host := filepath.Join(q, "inbox")
	mkdirs(t, host, filepath.Join(q, "outbox"))
	write(t, filepath.Join(in, tok1), `{"kind":"egress"}`)
	write(t, filepath.Join(in, ".tmp-"+tok2), "half")
	write(t, filepath.Join(in, "notatoken.json"), "x")
	write(t, filepath.Join(in, "big0000000000000000.json"), strings.Repeat("x", MaxFile+1))
	secret := filepath.Join(t.TempDir(), "secret")
	write(t, secret, "s3cret")
	if err := os.Symlink(secret, filepath.Join(in, tok2)); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(in, "cccccccccccccccc.json"), 0o755); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := Take(in, &buf); err != nil {
		t.Fatal(err)
	}
	got, err := Merge(&buf, q)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, []string{tok1}) {
		t.Fatalf("merged %v, want only %s", got, tok1)
	}
	ents, _ := os.ReadDir(host)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !reflect.DeepEqual(names, []string{tok1}) {
		t.Fatalf("host inbox holds %v", names)
	}
	if b, _ := os.ReadFile(filepath.Join(host, tok1)); string(b) != `{"kind":"egress"}` {
		t.Fatalf("host copy %q", b)
	}
	if err := Drop(in, got); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(in, tok1)); !os.IsNotExist(err) {
		t.Errorf("a request the host has is still in the pod: %v", err)
	}
	if err := Drop(in, []string{"../x.json"}); err == nil {
		t.Error("Drop took a name with a path")
	}
}

// A request the host already has is one request: a second copy does not
// replace it.
func TestMergeKeepsTheFirstCopy(t *testing.T) {
	q := t.TempDir()
	host := filepath.Join(q, "inbox")
	mkdirs(t, host, filepath.Join(q, "outbox"))
	write(t, filepath.Join(host, tok1), "first")
	got, err := Merge(tarOf(t, map[string]string{tok1: "second"}), q)
	if err != nil || !reflect.DeepEqual(got, []string{tok1}) {
		t.Fatalf("merge: %v, %v", got, err)
	}
	if b, _ := os.ReadFile(filepath.Join(host, tok1)); string(b) != "first" {
		t.Fatalf("host copy replaced: %q", b)
	}
	// Ingested already (its receipt is out): not brought in again, but
	// dropped in the pod.
	write(t, filepath.Join(q, "outbox", tok2), "receipt")
	got, err = Merge(tarOf(t, map[string]string{tok2: "again"}), q)
	if err != nil || !reflect.DeepEqual(got, []string{tok2}) {
		t.Fatalf("merge of an ingested request: %v, %v", got, err)
	}
	if _, err := os.Lstat(filepath.Join(host, tok2)); !os.IsNotExist(err) {
		t.Fatalf("an ingested request came back into the host's inbox: %v", err)
	}
}

func mkdirs(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// Put replaces a receipt (pending, then decided) whole; it refuses entries
// that are not queue files, so nothing lands outside the outbox.
func TestPutReplacesReceiptsAndRefusesOthers(t *testing.T) {
	out := t.TempDir()
	if err := Put(tarOf(t, map[string]string{tok1: "pending", tok2: "pending"}), out); err != nil {
		t.Fatal(err)
	}
	if err := Put(tarOf(t, map[string]string{tok1: "decided"}), out); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(out, tok1)); string(b) != "decided" {
		t.Fatalf("receipt %q, want decided", b)
	}
	for _, name := range []string{"../" + tok1, "/etc/" + tok1, "x.json"} {
		if err := Put(tarOf(t, map[string]string{name: "evil"}), out); err == nil {
			t.Errorf("Put took entry %q", name)
		}
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: tok1, Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"})
	_ = tw.Close()
	if err := Put(&buf, out); err == nil {
		t.Error("Put took a symlink")
	}
	ents, _ := os.ReadDir(out)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	if !reflect.DeepEqual(names, []string{tok1, tok2}) {
		t.Fatalf("outbox holds %v", names)
	}
}

func tarOf(t *testing.T, files map[string]string) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, s := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(s)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf
}
