package backendtest

import (
	"archive/tar"
	"bytes"
	"io"
	"strings"
	"testing"
	"time"
)

func tarOf(t *testing.T, name, content string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), ModTime: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte(content)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func fileFromTar(t *testing.T, data []byte, name string) string {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		hd, err := tr.Next()
		if err != nil {
			t.Fatalf("copy round trip: no %s in the archive CopyOut returned: %v", name, err)
		}
		if strings.TrimPrefix(hd.Name, "./") == name {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatalf("copy round trip: read %s from the archive: %v", name, err)
			}
			return string(b)
		}
	}
}
