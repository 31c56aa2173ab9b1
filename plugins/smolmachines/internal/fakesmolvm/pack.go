package main

import (
	"github.com/bot-bottle/bot-bottle/internal/tarball"

	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

const packMagic = "fake-smolmachine/v1"

// packFile is the fake's .smolmachine: the machine's config (never its
// secret references: packs cannot carry them) and its guest files.
type packFile struct {
	Magic    string   `json:"magic"`
	Source   string   `json:"source"`
	Image    *string  `json:"image"`
	Workdir  string   `json:"workdir"`
	Env      []string `json:"env"`
	Workload []string `json:"workload"`
	Rootfs   []byte   `json:"rootfs"` // tar
}

func readPack(path string) (*packFile, error) {
	if !strings.HasSuffix(path, ".smolmachine") {
		return nil, runtimef("--from '%s' is not a .smolmachine file", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, runtimef("cannot read '%s': %v", path, err)
	}
	var pk packFile
	if err := json.Unmarshal(b, &pk); err != nil || pk.Magic != packMagic {
		return nil, runtimef("'%s' is not a valid .smolmachine", path)
	}
	return &pk, nil
}

func cmdPackCreate(st *store, args []string) error {
	p, err := parseFlags(args, []flagSpec{
		{long: "from-vm", value: true},
		{long: "output", short: 'o', value: true},
		{long: "image", value: true},
	}, 0)
	if err != nil {
		return err
	}
	if p.has("image") {
		return runtimef("the fake smolvm does not implement 'pack create --image'")
	}
	name, out := p.get("from-vm"), p.get("output")
	if name == "" {
		return usagef("the following required arguments were not provided:\n  --from-vm <FROM_VM>")
	}
	if out == "" {
		return usagef("the following required arguments were not provided:\n  --output <OUTPUT>")
	}
	if strings.HasSuffix(out, ".smolmachine") {
		return runtimef("-o names the stub executable and '.smolmachine' is added to it: drop the extension from '%s'", out)
	}
	if err := validateName(name); err != nil {
		return err
	}
	return st.withMachine(name, func(m *machine) error { return packMachine(st, m, out) })
}

// packMachine writes the .smolmachine of a stopped machine and its stub.
func packMachine(st *store, m *machine, out string) error {
	name := m.Name
	if m.State == "running" {
		return runtimef("machine '%s' must be stopped before it can be packed (smolvm machine stop --name %s)", name, name)
	}
	switch m.ImageKind {
	case "archive", "rootfs":
		return runtimef("cannot pack machine '%s': it was created from a local image (%s), and pack can only re-create registry-image or bare machines", name, m.ImageKind)
	}
	tb, err := tarDir(st.rootfs(name))
	if err != nil {
		return fmt.Errorf("pack %s: %w", name, err)
	}
	pk := packFile{Magic: packMagic, Source: name, Image: m.Image, Workdir: m.Workdir, Env: m.Env, Workload: m.Workload, Rootfs: tb}
	b, err := json.Marshal(pk)
	if err != nil {
		return err
	}
	if err := os.WriteFile(out+".smolmachine", b, 0o644); err != nil {
		return runtimef("write %s.smolmachine: %v", out, err)
	}
	stub := "#!/bin/sh\necho 'fake smolmachine stub: run it with smolvm pack run' >&2\nexit 1\n"
	if err := os.WriteFile(out, []byte(stub), 0o755); err != nil {
		return runtimef("write %s: %v", out, err)
	}
	fmt.Fprintf(os.Stderr, "Packing machine '%s'...\n", name)
	fmt.Printf("Packed: %s.smolmachine\n", out)
	return nil
}

func tarDir(dir string) ([]byte, error) {
	var buf bytes.Buffer
	if err := tarball.WriteDir(&buf, dir); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func untarInto(dir string, b []byte) error {
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		target := filepath.Join(dir, filepath.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(target, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, os.FileMode(h.Mode).Perm())
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, tr); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
		}
	}
}
