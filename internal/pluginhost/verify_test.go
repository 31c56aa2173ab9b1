package pluginhost

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/hashicorp/go-plugin"
)

func copyTo(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Skipf("%s: %v", src, err)
	}
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

// A locked plugin is hashed through the descriptor it is exec'd from: a
// binary swapped in under its name after the check does not run, a write in
// place is noticed, and a wrong sum names the actual one without hashing
// again.
func TestVerifiedBytesAreTheBytesExecuted(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("exec from a descriptor is Linux's /proc/self/fd")
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "bot-bottle-plugin-x")
	copyTo(t, "/bin/busybox", p) // static: runs from anywhere
	data, _ := os.ReadFile(p)
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])

	v, err := openVerified(p, want, verifyCache{now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	exe, ok := execPathOf(v.f)
	if !ok || v.script {
		t.Fatalf("execPathOf = %q, %v (script %v)", exe, ok, v.script)
	}
	// Another binary takes the name after the check.
	other := filepath.Join(dir, "other")
	copyTo(t, "/bin/echo", other)
	if err := os.Rename(other, p); err != nil {
		t.Fatal(err)
	}
	// busybox run as "busybox echo A" prints A; coreutils echo would print
	// "echo A".
	cmd := exec.Command(exe, "echo", "A")
	cmd.Args[0] = "busybox"
	out, err := cmd.Output()
	if err != nil || string(out) != "A\n" {
		t.Fatalf("exec %s: %q, %v; want the verified busybox's \"A\"", exe, out, err)
	}
	// Still, someone changed the plugin under a start: it is refused.
	if err := v.unchanged(); err == nil {
		t.Error("a replacement during the start went unnoticed")
	}

	// A write in place, through another descriptor, is noticed.
	v2, err := openVerified(exe, want, verifyCache{now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer v2.Close()
	if err := v2.unchanged(); err != nil {
		t.Fatalf("nothing changed: %v", err)
	}
	// File times have clock-tick granularity: the write must come a tick
	// after the file's last change (the rename above), as it would after
	// an install.
	time.Sleep(50 * time.Millisecond)
	w, err := os.OpenFile(exe, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(data[:1], 0); err != nil { // the same byte: only the write shows
		t.Fatal(err)
	}
	w.Close()
	if err := v2.unchanged(); err == nil {
		t.Error("a write in place after the check went unnoticed")
	}

	// A mismatch carries the actual sum.
	_, err = openVerified(p, want, verifyCache{now: time.Now})
	var ce *checksumError
	if !errors.As(err, &ce) || !errors.Is(err, plugin.ErrChecksumsDoNotMatch) || ce.actual == want || len(ce.actual) != 64 {
		t.Fatalf("openVerified of another binary: %v", err)
	}
}
