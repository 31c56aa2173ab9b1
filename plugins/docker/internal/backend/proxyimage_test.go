package backend

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestBinaryIDIsTheGoBuildIDOrTheHash(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	id, err := binaryID(exe)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("go", "tool", "buildid", exe).Output()
	if err != nil {
		t.Fatalf("go tool buildid: %v", err)
	}
	st, _ := os.Stat(exe)
	want := "go-buildid:" + strings.TrimSpace(string(out)) + ":" + strconv.FormatInt(st.Size(), 10)
	if id != want {
		t.Errorf("binaryID = %q, want %q", id, want)
	}

	// An executable the Go toolchain did not build is hashed whole.
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	sh, _ = filepath.EvalSymlinks(sh)
	data, err := os.ReadFile(sh)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if id, err := binaryID(sh); err != nil || id != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Errorf("binaryID(%s) = %q, %v; want its sha256", sh, id, err)
	}

	notELF := filepath.Join(t.TempDir(), "x")
	os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755)
	if _, err := binaryID(notELF); err == nil {
		t.Error("binaryID of a script: no error")
	}
}
