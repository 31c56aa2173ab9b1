package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"syscall"
)

// mount is one -v HOST:GUEST[:ro|:rw].
type mount struct {
	Host     string `json:"host"`
	Guest    string `json:"guest"`
	ReadOnly bool   `json:"read_only"`
}

// machine is the fake's record of one machine, standing in for smolvm's
// SQLite row. Secret-env entries hold references (GUEST=HOSTVAR), never
// values, as in smolvm.
type machine struct {
	Name       string   `json:"name"`
	State      string   `json:"state"`
	CPUs       int      `json:"cpus"`
	MemoryMiB  int      `json:"memory_mib"`
	Image      *string  `json:"image"`
	ImageKind  string   `json:"image_kind"` // registry, archive, rootfs, pack, bare
	From       string   `json:"from,omitempty"`
	Mounts     []mount  `json:"mounts"`
	Ports      []string `json:"ports"`
	Env        []string `json:"env"`
	SecretEnv  []string `json:"secret_env"`
	AllowHosts []string `json:"allow_hosts"`
	// RegistryHosts joined the allow-list because the image is pulled in
	// the guest (allow_image_pull_egress).
	RegistryHosts []string          `json:"registry_hosts,omitempty"`
	AllowCIDRs    []string          `json:"allow_cidrs"`
	Network       bool              `json:"network"`
	Workdir       string            `json:"workdir"`
	Labels        map[string]string `json:"labels"`
	Workload      []string          `json:"workload"`
	CreatedAt     uint64            `json:"created_at"` // seconds, as VmRecord
	StorageGB     *uint64           `json:"storage_gb"`
	OverlayGB     *uint64           `json:"overlay_gb"`
	PID           *int              `json:"pid"`
	// GuestPIDs are host processes standing in for guest processes; stop
	// and delete kill them.
	GuestPIDs []int `json:"guest_pids"`
}

// store is the fake's state directory.
type store struct{ dir string }

func openStore() (*store, error) {
	dir := os.Getenv("SMOLVM_FAKE_STATE")
	if dir == "" {
		return nil, errors.New("SMOLVM_FAKE_STATE is not set (the fake smolvm keeps its state there)")
	}
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("SMOLVM_FAKE_STATE must be absolute, got %q", dir)
	}
	for _, d := range []string{dir, filepath.Join(dir, "machines"), filepath.Join(dir, "rootfs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	return &store{dir: dir}, nil
}

// lock serialises state changes between concurrent fake processes.
func (s *store) lock() (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(s.dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}

func (s *store) path(name string) string { return filepath.Join(s.dir, "machines", name+".json") }

func (s *store) rootfs(name string) string { return filepath.Join(s.dir, "rootfs", name) }

func (s *store) load(name string) (*machine, error) {
	b, err := os.ReadFile(s.path(name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, vmNotFound(name)
	}
	if err != nil {
		return nil, err
	}
	var m machine
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("corrupt fake state for %s: %w", name, err)
	}
	return &m, nil
}

// withMachine runs f on machine name under the state lock; f saves what it
// changes.
func (s *store) withMachine(name string, f func(*machine) error) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	m, err := s.load(name)
	if err != nil {
		return err
	}
	return f(m)
}

func (s *store) exists(name string) bool {
	_, err := os.Stat(s.path(name))
	return err == nil
}

func (s *store) save(m *machine) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := s.path(m.Name) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, s.path(m.Name))
}

func (s *store) remove(name string) error {
	if err := os.RemoveAll(s.rootfs(name)); err != nil {
		return err
	}
	// delete takes the machine's data dir (and its egress log) with it.
	if err := os.RemoveAll(s.dataDir(name)); err != nil {
		return err
	}
	return os.Remove(s.path(name))
}

func (s *store) all() ([]*machine, error) {
	ents, err := os.ReadDir(filepath.Join(s.dir, "machines"))
	if err != nil {
		return nil, err
	}
	var out []*machine
	for _, e := range ents {
		n := e.Name()
		if filepath.Ext(n) != ".json" {
			continue
		}
		m, err := s.load(n[:len(n)-len(".json")])
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// statusJSON is smolvm's machine_status_json (src/cli/vm_common.rs:2469):
// every key of smolvm.MachineFields with its JSON type. The options the fake
// has no use for (GPU, CUDA, forks, health, restart) print as smolvm prints
// a record that never set them.
func statusJSON(m *machine) map[string]any {
	labels := m.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	cmd := m.Workload
	if cmd == nil {
		cmd = []string{}
	}
	return map[string]any{
		"name":                      m.Name,
		"state":                     m.State,
		"cpus":                      m.CPUs,
		"memory_mib":                m.MemoryMiB,
		"pid":                       m.PID,
		"mounts":                    len(m.Mounts),
		"ports":                     len(m.Ports),
		"created_at":                m.CreatedAt,
		"storage_gb":                m.StorageGB,
		"overlay_gb":                m.OverlayGB,
		"image":                     m.Image,
		"entrypoint":                []string{},
		"cmd":                       cmd,
		"ephemeral":                 false,
		"gpu":                       false,
		"gpu_vram_mib":              nil,
		"cuda":                      false,
		"forkable":                  false,
		"cuda_fork_pool_size":       nil,
		"cuda_vram_limit_mib":       nil,
		"forkpoint_held":            false,
		"labels":                    labels,
		"restart_policy":            "never",
		"restart_max_retries":       0,
		"restart_count":             0,
		"health_cmd":                nil,
		"health_interval_secs":      nil,
		"health_timeout_secs":       nil,
		"health_retries":            nil,
		"health_startup_grace_secs": nil,
		"network":                   m.Network,
	}
}

// printJSON prints v as serde_json::to_string_pretty does: two-space
// indent, no HTML escaping, then a newline.
func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
