package backend

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
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

// The proxy image is FROM scratch: without the host's roots in it, every
// upstream whose TLS the proxy terminates would fail verification.
func TestProxyImageCarriesTheHostsRoots(t *testing.T) {
	dir := t.TempDir()
	bundle := filepath.Join(dir, "roots.pem")
	want := []byte("-----BEGIN CERTIFICATE-----\nroots of this test\n-----END CERTIFICATE-----\n")
	if err := os.WriteFile(bundle, want, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SSL_CERT_FILE", bundle)
	roots, err := hostRoots()
	if err != nil || string(roots) != string(want) {
		t.Fatalf("hostRoots() = %q, %v; want the SSL_CERT_FILE bundle", roots, err)
	}
	rootfs, err := proxyRootfs([]byte("binary"), roots)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	tr := tar.NewReader(bytes.NewReader(rootfs))
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = string(b)
	}
	if files[strings.TrimPrefix(proxyRootsPath, "/")] != string(want) {
		t.Errorf("proxy rootfs has %q at %s, want the host's roots", files[strings.TrimPrefix(proxyRootsPath, "/")], proxyRootsPath)
	}
	if files[ProxyBinary] != "binary" {
		t.Errorf("proxy rootfs lost its binary")
	}
	if rootsID(roots) == rootsID(append([]byte("x"), roots...)) || rootsID(nil) != "" {
		t.Error("rootsID does not tell roots apart")
	}
	// A host without the file named falls back to the usual bundles, and a
	// host with none gives an image with no roots, not an error.
	t.Setenv("SSL_CERT_FILE", filepath.Join(dir, "missing.pem"))
	if _, err := hostRoots(); err != nil {
		t.Errorf("hostRoots() with a missing SSL_CERT_FILE: %v", err)
	}
}

// A warm start takes the roots from the memo; a changed bundle is read
// again, and gives another key (so another proxy image).
func TestRootsMemoFollowsTheFile(t *testing.T) {
	bundle := filepath.Join(t.TempDir(), "roots.pem")
	if err := os.WriteFile(bundle, []byte("first roots\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SSL_CERT_FILE", bundle)
	var m rootsMemo
	data, id, err := m.get()
	if err != nil || string(data) != "first roots\n" || id != rootsID(data) {
		t.Fatalf("get() = %q, %q, %v", data, id, err)
	}
	stamp := m.stamp
	if again, againID, _ := m.get(); string(again) != string(data) || againID != id || m.stamp != stamp {
		t.Errorf("a second get() changed the memo: %q, %q", again, againID)
	}
	if err := os.WriteFile(bundle, []byte("other roots, longer\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	data2, id2, err := m.get()
	if err != nil || string(data2) != "other roots, longer\n" || id2 == id {
		t.Errorf("after the bundle changed: get() = %q, %q, %v; want the new roots and another key", data2, id2, err)
	}
}
