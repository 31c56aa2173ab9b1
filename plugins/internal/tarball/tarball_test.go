package tarball

import (
	"archive/tar"
	"bytes"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

func TestWriteDir(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "sub", "f.txt"), []byte("hello"), 0o640)
	os.Symlink("/etc/passwd", filepath.Join(dir, "link"))
	if ln, err := net.Listen("unix", filepath.Join(dir, "sock")); err == nil {
		defer ln.Close()
	}
	var buf bytes.Buffer
	if err := WriteDir(&buf, dir); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&buf)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s owned by %d:%d", h.Name, h.Uid, h.Gid)
		}
		switch h.Name {
		case "sub/f.txt":
			b, _ := io.ReadAll(tr)
			if string(b) != "hello" || h.Mode&0o777 != 0o640 {
				t.Errorf("f.txt = %q mode %o", b, h.Mode)
			}
		case "link":
			if h.Typeflag != tar.TypeSymlink || h.Linkname != "/etc/passwd" {
				t.Errorf("link not kept as a link: %+v", h)
			}
		}
	}
	sort.Strings(names)
	if got := strings.Join(names, ","); got != "link,sub/,sub/f.txt" {
		t.Fatalf("entries %s (the socket must be skipped)", got)
	}
}
