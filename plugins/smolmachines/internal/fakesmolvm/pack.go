package main

import (
	"github.com/bot-bottle/bot-bottle/plugins/internal/tarball"

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
	Network  bool     `json:"network"`
	Rootfs   []byte   `json:"rootfs"` // tar
}

func readPack(path string) (*packFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, agentErr("read .smolmachine", "%v", err)
	}
	var pk packFile
	if err := json.Unmarshal(b, &pk); err != nil || pk.Magic != packMagic {
		return nil, agentErr("read .smolmachine", "%s is not a .smolmachine sidecar (no footer)", path)
	}
	return &pk, nil
}

// cmdPackCreate is PackCreateCmd --from-vm (src/cli/pack.rs:79, :188,
// pack_from_vm at :527).
func cmdPackCreate(st *store, args []string) error {
	p, err := parseFlags(args, []flagSpec{
		{long: "from-vm", value: true},
		{long: "output", short: 'o', value: true},
		{long: "image", value: true},
	}, 0)
	if err != nil {
		return err
	}
	out := p.get("output")
	if out == "" {
		return usagef("the following required arguments were not provided:\n  --output <PATH>")
	}
	if !p.has("from-vm") && !p.has("image") {
		return usagef("the following required arguments were not provided:\n  --image <IMAGE>")
	}
	if p.has("image") {
		return runtimef("the fake smolvm does not implement 'pack create --image'")
	}
	if ext := filepath.Ext(out); strings.EqualFold(ext, ".smolmachine") {
		return configErr("pack create", "--output names the executable stub, not the .smolmachine sidecar (which is created automatically as '<output>.smolmachine'). Use --output %s instead.", strings.TrimSuffix(out, ext))
	}
	name := p.get("from-vm")
	unlock, err := st.lock()
	if err != nil {
		return err
	}
	defer unlock()
	m, err := st.load(name)
	if err != nil {
		return agentErr("pack from VM", "VM '%s' not found", name)
	}
	return packMachine(st, m, out)
}

// packMachine writes the .smolmachine of a stopped machine and its stub.
func packMachine(st *store, m *machine, out string) error {
	name := m.Name
	if m.State == "running" {
		return agentErr("pack from VM", "VM '%s' is running. Stop it first with: smolvm machine stop --name %s", name, name)
	}
	switch m.ImageKind {
	case "archive", "rootfs":
		// collect_from_vm_assets (src/pack_export.rs:136).
		return agentErr("pack from VM", "VM '%s' was created from a local image (%s). `pack create --from-vm` can only snapshot VMs created from a REGISTRY image — local archives and rootfs directories are flattened on boot and have no registry manifest to re-pull. Recreate the machine from a registry reference to pack it.", name, *m.Image)
	case "bare":
		if _, err := os.Stat(st.dataDir(name)); err != nil {
			return agentErr("pack from VM", "overlay disk not found at %s. The VM may not have been started yet.", filepath.Join(st.dataDir(name), "overlay.raw"))
		}
	}
	fmt.Printf("Packing VM '%s' snapshot...\n", name)
	tb, err := tarDir(st.rootfs(name))
	if err != nil {
		return fmt.Errorf("pack %s: %w", name, err)
	}
	pk := packFile{Magic: packMagic, Source: name, Image: m.Image, Workdir: m.Workdir, Env: m.Env, Workload: m.Workload,
		Network: m.Network, Rootfs: tb}
	b, err := json.Marshal(pk)
	if err != nil {
		return err
	}
	fmt.Println("Collecting runtime libraries...")
	fmt.Println("Collecting agent rootfs...")
	fmt.Println("Creating storage template...")
	if err := os.WriteFile(out+".smolmachine", b, 0o644); err != nil {
		return agentErr("pack binary", "%v", err)
	}
	stub := "#!/bin/sh\necho 'fake smolmachine stub: run it with smolvm pack run' >&2\nexit 1\n"
	if err := os.WriteFile(out, []byte(stub), 0o755); err != nil {
		return agentErr("pack binary", "%v", err)
	}
	fmt.Printf("Packed: %s\n", out)
	fmt.Printf("Sidecar: %s.smolmachine\n", out)
	fmt.Printf("\nRun with: %s\n", out)
	fmt.Println("Note: Keep the .smolmachine file alongside the binary")
	fmt.Println("Options: --help for usage")
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
