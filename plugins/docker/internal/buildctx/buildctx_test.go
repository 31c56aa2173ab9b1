package buildctx

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func tarFiles(t *testing.T, s *Source) map[string]string {
	t.Helper()
	var buf bytes.Buffer
	if err := s.WriteTar(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s owned by %d:%d, want 0:0", h.Name, h.Uid, h.Gid)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = string(b)
	}
	return files
}

func keys(m map[string]string) []string {
	var k []string
	for x := range m {
		k = append(k, x)
	}
	sort.Strings(k)
	return k
}

func digest(t *testing.T, dir, dockerfile string) string {
	t.Helper()
	s, err := Open(dir, []byte(dockerfile))
	if err != nil {
		t.Fatal(err)
	}
	d, err := s.Digest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestIgnoreAndDockerfile(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "keep.txt", "k")
	write(t, dir, "secret.env", "TOKEN=x")
	write(t, dir, "node_modules/a/b.js", "x")
	write(t, dir, "logs/a.log", "x")
	write(t, dir, "logs/important.log", "keep me")
	write(t, dir, ".dockerignore", "*.env\nnode_modules\nlogs\n!logs/important.log\n")
	s, err := Open(dir, []byte("FROM scratch\n"))
	if err != nil {
		t.Fatal(err)
	}
	files := tarFiles(t, s)
	got := strings.Join(keys(files), " ")
	want := ".bot-bottle.Dockerfile .dockerignore keep.txt logs/important.log"
	if got != want {
		t.Fatalf("context has %q, want %q", got, want)
	}
	if files[DockerfileName] != "FROM scratch\n" {
		t.Errorf("Dockerfile = %q", files[DockerfileName])
	}
	ign := files[".dockerignore"]
	if !strings.HasPrefix(ign, "*.env\n") || !strings.Contains(ign, DockerfileName+"\n") {
		t.Errorf(".dockerignore = %q, want the project's patterns plus the private Dockerfile", ign)
	}
	if strings.Contains(ign, "\n.dockerignore\n") {
		t.Errorf(".dockerignore drops itself although the project keeps it: %q", ign)
	}
}

func TestNoIgnoreFileDropsGenerated(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a", "1")
	s, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	files := tarFiles(t, s)
	if ign := files[".dockerignore"]; ign != DockerfileName+"\n.dockerignore\n" {
		t.Errorf("generated .dockerignore = %q", ign)
	}
}

func TestDigest(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.txt", "one")
	write(t, dir, "sub/b.txt", "two")
	write(t, dir, "ignored.tmp", "x")
	write(t, dir, ".dockerignore", "*.tmp\n")
	d1 := digest(t, dir, "FROM scratch\n")

	old := time.Now().Add(-48 * time.Hour)
	if err := os.Chtimes(filepath.Join(dir, "a.txt"), old, old); err != nil {
		t.Fatal(err)
	}
	if d := digest(t, dir, "FROM scratch\n"); d != d1 {
		t.Error("digest changed with a timestamp")
	}
	write(t, dir, "ignored.tmp", "changed")
	if d := digest(t, dir, "FROM scratch\n"); d != d1 {
		t.Error("digest changed with an ignored file")
	}
	if d := digest(t, dir, "FROM scratch\nENV A=1\n"); d == d1 {
		t.Error("digest did not change with the Dockerfile")
	}
	write(t, dir, "sub/b.txt", "TWO")
	d2 := digest(t, dir, "FROM scratch\n")
	if d2 == d1 {
		t.Error("digest did not change with a file's content")
	}
	if err := os.Chmod(filepath.Join(dir, "a.txt"), 0o755); err != nil {
		t.Fatal(err)
	}
	if d := digest(t, dir, "FROM scratch\n"); d == d2 {
		t.Error("digest did not change with a file's mode")
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(filepath.Join(t.TempDir(), "missing"), nil); err == nil {
		t.Error("missing directory accepted")
	}
	dir := t.TempDir()
	write(t, dir, ".dockerignore", "!\n")
	if _, err := Open(dir, nil); err == nil {
		t.Error("malformed .dockerignore accepted")
	}
}
