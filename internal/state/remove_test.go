package state

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// otherUID runs the review clone tests as, not root (root ignores
// permissions) and not 1000.
const otherUID = 4321

// TestRemoveAReadOnlyClone: an agent that made directories of its review
// clone read-only (or unreadable) does not leave its bottle's state half
// removed. Root ignores permissions, so the body runs as another uid in a
// copy of this test binary.
func TestRemoveAReadOnlyClone(t *testing.T) {
	if base := os.Getenv("BB_STATE_AS_OTHER"); base != "" {
		removeReadOnlyClone(t, base)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the body as another uid")
	}
	base, err := os.MkdirTemp("", "bbstate")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(base, "state.test")
	copyFile(t, exe, bin)
	for _, p := range []string{base, bin} {
		if err := os.Chown(p, otherUID, otherUID); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestRemoveAReadOnlyClone$", "-test.v")
	cmd.Env = append(os.Environ(), "BB_STATE_AS_OTHER="+base)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: otherUID, Gid: otherUID}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("as uid %d: %v\n%s", otherUID, err, out)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func removeReadOnlyClone(t *testing.T, base string) {
	if os.Geteuid() != otherUID {
		t.Fatalf("running as %d", os.Geteuid())
	}
	s, err := Open(filepath.Join(base, "home"))
	if err != nil {
		t.Fatal(err)
	}
	id := "shell-abcde"
	if err := s.WriteMetadata(Metadata{Identity: id, AgentName: "shell"}); err != nil {
		t.Fatal(err)
	}
	dir, err := s.ReviewDir(id)
	if err != nil {
		t.Fatal(err)
	}
	clone := filepath.Join(dir, "clone")
	for _, d := range []string{"ro/deeper", "none"} {
		if err := os.MkdirAll(filepath.Join(clone, d), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(clone, d, "f"), []byte("x"), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	// A link planted in the clone must not make Remove chmod outside it.
	outside := filepath.Join(base, "outside")
	if err := os.Mkdir(outside, 0o500); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(clone, "link")); err != nil {
		t.Fatal(err)
	}
	for d, mode := range map[string]os.FileMode{"ro/deeper": 0o500, "ro": 0o500, "none": 0} {
		if err := os.Chmod(filepath.Join(clone, d), mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.RemoveAll(s.Dir(id)); err == nil || !errors.Is(err, os.ErrPermission) {
		t.Fatalf("the setup does not stop a plain RemoveAll: %v", err)
	}
	if err := s.Remove(id); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := os.Lstat(s.Dir(id)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state left: %v", err)
	}
	if fi, err := os.Stat(outside); err != nil || fi.Mode().Perm() != 0o500 {
		t.Fatalf("the link's target changed: %v %v", fi.Mode(), err)
	}
}
