package main

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

var nameFlag = flagSpec{long: "name", short: 'n', value: true}

var createFlags = []flagSpec{
	nameFlag,
	{long: "image", short: 'I', value: true},
	{long: "from", value: true},
	{long: "smolfile", short: 's', value: true},
	{long: "cpus", value: true},
	{long: "mem", value: true},
	{long: "storage", value: true},
	{long: "overlay", value: true},
	{long: "port", short: 'p', value: true, multi: true},
	{long: "init", value: true, multi: true},
	{long: "volume", short: 'v', value: true, multi: true},
	{long: "env", short: 'e', value: true, multi: true},
	{long: "workdir", short: 'w', value: true},
	{long: "label", value: true, multi: true},
	{long: "net"},
	{long: "allow-host", value: true, multi: true},
	{long: "allow-cidr", value: true, multi: true},
	{long: "outbound-localhost-only"},
	{long: "secret-env", value: true, multi: true},
	{long: "secret-file", value: true, multi: true},
	{long: "ssh-agent"},
	{long: "gpu"},
	{long: "cuda"},
	{long: "dns", value: true, multi: true},
	{long: "network", value: true},
	{long: "net-backend", value: true},
	{long: "expose-socket"},
	{long: "mount-socket"},
	{long: "max-image-size", value: true},
}

// validateName is smolvm's validate_vm_name.
func validateName(n string) error {
	bad := func(why string) error { return runtimef("invalid machine name '%s': %s", n, why) }
	if n == "" || len(n) > 128 {
		return bad("must be 1-128 characters")
	}
	for i, r := range n {
		ok := r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')
		if !ok {
			return bad("only letters, digits, '-' and '_' are allowed")
		}
		if i == 0 && (r == '-' || r == '_') {
			return bad("must start with a letter or digit")
		}
	}
	if strings.HasSuffix(n, "-") {
		return bad("must not end with '-'")
	}
	if strings.Contains(n, "--") {
		return bad("must not contain '--'")
	}
	return nil
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// systemPaths may not be mount targets.
var systemPaths = map[string]bool{"/": true, "/etc": true, "/var": true, "/usr": true, "/proc": true, "/sys": true,
	"/dev": true, "/bin": true, "/sbin": true, "/lib": true, "/lib64": true, "/boot": true, "/run": true, "/tmp": false}

func parseVolume(v string) (mount, error) {
	parts := strings.Split(v, ":")
	m := mount{}
	switch {
	case len(parts) == 3 && (parts[2] == "ro" || parts[2] == "rw"):
		m.ReadOnly = parts[2] == "ro"
	case len(parts) == 2:
	default:
		return m, runtimef("invalid volume '%s': expected HOST:GUEST[:ro|:rw]", v)
	}
	host, guest := parts[0], parts[1]
	fi, err := os.Stat(host)
	if err != nil {
		return m, runtimef("invalid volume '%s': host path '%s' does not exist", v, host)
	}
	if !fi.IsDir() {
		return m, runtimef("invalid volume '%s': host path '%s' is not a directory (virtiofs mounts directories only)", v, host)
	}
	host, err = filepath.EvalSymlinks(host)
	if err != nil {
		return m, err
	}
	host, err = filepath.Abs(host)
	if err != nil {
		return m, err
	}
	if !filepath.IsAbs(guest) {
		return m, runtimef("invalid volume '%s': guest path '%s' must be absolute", v, guest)
	}
	guest = filepath.Clean(guest)
	if systemPaths[guest] || strings.HasPrefix(guest, "/proc/") || strings.HasPrefix(guest, "/sys/") || strings.HasPrefix(guest, "/dev/") {
		return m, runtimef("invalid volume '%s': cannot mount over system path '%s'", v, guest)
	}
	m.Host, m.Guest = host, guest
	return m, nil
}

// resolvable says whether --allow-host can resolve h. The fake asks no DNS:
// IP literals, localhost and the names in $SMOLVM_FAKE_RESOLVABLE resolve.
func resolvable(h string) bool {
	if net.ParseIP(h) != nil || h == "localhost" {
		return true
	}
	for _, n := range strings.Split(os.Getenv("SMOLVM_FAKE_RESOLVABLE"), ",") {
		n = strings.TrimSpace(n)
		if n != "" && (h == n || strings.HasSuffix(h, "."+n)) {
			return true
		}
	}
	return false
}

func looksLikeDockerfile(ref string) bool {
	b := filepath.Base(ref)
	return b == "Dockerfile" || strings.HasPrefix(b, "Dockerfile.") || strings.HasSuffix(b, ".Dockerfile") || strings.HasSuffix(b, ".dockerfile")
}

func isLocalImage(ref string) bool {
	for _, p := range []string{"/", "./", "../", "-"} {
		if strings.HasPrefix(ref, p) {
			return true
		}
	}
	return strings.HasSuffix(ref, ".tar") || strings.HasSuffix(ref, ".tar.gz") || strings.HasSuffix(ref, ".tgz")
}

// checkArchive reads the first header of a (possibly gzipped) tar.
func checkArchive(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") || strings.HasSuffix(path, ".tgz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return err
		}
		r = gz
	}
	_, err = tar.NewReader(r).Next()
	return err
}

func registryHosts(ref string) []string {
	first, _, found := strings.Cut(ref, "/")
	if found && (strings.Contains(first, ".") || strings.Contains(first, ":") || first == "localhost") {
		h, _, _ := strings.Cut(first, ":")
		return []string{h}
	}
	return []string{"docker.io", "docker.com"}
}

func cmdCreate(st *store, args []string) error {
	p, err := parseFlags(args, createFlags, 0)
	if err != nil {
		return err
	}
	if p.has("from") && p.has("image") {
		return usagef("the argument '--from <FROM>' cannot be used with '--image <IMAGE>'")
	}
	if p.has("from") && p.has("smolfile") {
		return usagef("the argument '--from <FROM>' cannot be used with '--smolfile <SMOLFILE>'")
	}
	if p.has("smolfile") {
		return runtimef("the fake smolvm does not implement --smolfile")
	}
	for _, a := range p.rest {
		if strings.HasPrefix(a, "--") && a != "--" {
			fmt.Fprintf(os.Stderr, "warning: '%s' comes after '--' and is passed to the workload, not to smolvm\n", a)
		}
	}
	name := p.get("name")
	if name == "" {
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		name = "vm-" + hex.EncodeToString(b)
	}
	if err := validateName(name); err != nil {
		return err
	}
	m := &machine{Name: name, State: "created", CPUs: 4, MemoryMiB: 8192, Labels: map[string]string{},
		CreatedAt: time.Now().UTC().Format(time.RFC3339), Workdir: p.get("workdir"), Workload: p.rest}
	if v := p.get("cpus"); v != "" {
		n, err := strconv.ParseUint(v, 10, 8)
		if err != nil || n == 0 {
			return usagef("invalid value '%s' for '--cpus <CPUS>': must be 1-255", v)
		}
		m.CPUs = int(n)
	}
	if v := p.get("mem"); v != "" {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n == 0 {
			return usagef("invalid value '%s' for '--mem <MEM>'", v)
		}
		m.MemoryMiB = int(n)
	}
	if m.Workdir != "" && !filepath.IsAbs(m.Workdir) {
		return runtimef("workdir '%s' must be an absolute path", m.Workdir)
	}
	seen := map[string]bool{}
	for _, v := range p.vals["volume"] {
		mt, err := parseVolume(v)
		if err != nil {
			return err
		}
		if seen[mt.Guest] {
			return runtimef("duplicate mount target '%s'", mt.Guest)
		}
		seen[mt.Guest] = true
		m.Mounts = append(m.Mounts, mt)
	}
	for _, e := range p.vals["env"] {
		k, _, ok := strings.Cut(e, "=")
		if !ok || !envName.MatchString(k) {
			return runtimef("invalid environment variable '%s': expected KEY=VALUE", e)
		}
		m.Env = append(m.Env, e)
	}
	for _, s := range p.vals["secret-env"] {
		g, h, ok := strings.Cut(s, "=")
		if !ok || !envName.MatchString(g) || !envName.MatchString(h) {
			return runtimef("invalid --secret-env '%s': expected GUEST_NAME=HOST_VAR", s)
		}
		m.SecretEnv = append(m.SecretEnv, s)
	}
	if len(p.vals["secret-file"]) > 0 {
		return runtimef("the fake smolvm does not implement --secret-file")
	}
	for _, l := range p.vals["label"] {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return runtimef("invalid label '%s': expected KEY=VALUE", l)
		}
		m.Labels[k] = v
	}
	for _, h := range p.vals["allow-host"] {
		if strings.Contains(h, ":") && net.ParseIP(h) == nil {
			return runtimef("invalid --allow-host '%s': ports are not supported, give the host name only (all ports to an allowed host are open)", h)
		}
		if h == "" || strings.ContainsAny(h, "/ ") {
			return runtimef("invalid --allow-host '%s'", h)
		}
		if !resolvable(h) {
			return runtimef("failed to resolve --allow-host '%s': no such host", h)
		}
		m.AllowHosts = append(m.AllowHosts, h)
	}
	for _, c := range p.vals["allow-cidr"] {
		if _, _, err := net.ParseCIDR(c); err != nil {
			return runtimef("invalid --allow-cidr '%s': %v", c, err)
		}
		m.AllowCIDRs = append(m.AllowCIDRs, c)
	}
	policy := len(m.AllowHosts) > 0 || len(m.AllowCIDRs) > 0 || p.has("outbound-localhost-only")
	if policy && p.get("net-backend") == "tsi" {
		return runtimef("--net-backend tsi cannot enforce an egress policy; use virtio-net")
	}
	m.Network = p.has("net") || policy
	for _, pt := range p.vals["port"] {
		m.Ports = append(m.Ports, pt)
	}

	unlock, err := st.lock()
	if err != nil {
		return err
	}
	defer unlock()
	if st.exists(name) {
		return runtimef("config operation failed: create machine: machine '%s' already exists or is being created", name)
	}
	rootfs := st.rootfs(name)
	var restore func() error
	switch {
	case p.has("from"):
		from := p.get("from")
		pk, err := readPack(from)
		if err != nil {
			return err
		}
		m.ImageKind, m.From = "pack", from
		m.Image = pk.Image
		if m.Workdir == "" {
			m.Workdir = pk.Workdir
		}
		if len(m.Workload) == 0 {
			m.Workload = pk.Workload
		}
		m.Env = append(append([]string{}, pk.Env...), m.Env...)
		restore = func() error { return untarInto(rootfs, pk.Rootfs) }
	case p.has("image"):
		ref := p.get("image")
		m.Image = &ref
		switch {
		case looksLikeDockerfile(ref):
			return runtimef("smolvm does not build images: '%s' looks like a Dockerfile; build it first: docker build -t x . && docker save x | smolvm machine run --image - ...", ref)
		case ref == "-":
			if _, err := io.Copy(io.Discard, os.Stdin); err != nil {
				return runtimef("read image archive from stdin: %v", err)
			}
			m.ImageKind = "archive"
		case isLocalImage(ref):
			fi, err := os.Stat(ref)
			if err != nil {
				return runtimef("image '%s' not found on the host", ref)
			}
			if fi.IsDir() {
				m.ImageKind = "rootfs"
			} else {
				if err := checkArchive(ref); err != nil {
					return runtimef("image '%s' is not a readable image archive: %v", ref, err)
				}
				m.ImageKind = "archive"
			}
		default:
			if !m.Network {
				return runtimef("image '%s' is pulled inside the machine, which has no network: add --net or an --allow-host, or use a local image (docker save tar) or a .smolmachine", ref)
			}
			m.ImageKind = "registry"
			if policy {
				// allow_image_pull_egress: the registry joins the allow-list.
				m.RegistryHosts = registryHosts(ref)
			}
		}
	default:
		m.ImageKind = "bare"
	}
	for _, d := range []string{"tmp", "root", "workspace", "run"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return err
		}
	}
	if restore != nil {
		if err := restore(); err != nil {
			os.RemoveAll(rootfs)
			return runtimef("restore pack %s: %v", p.get("from"), err)
		}
	}
	if err := st.save(m); err != nil {
		return err
	}
	fmt.Printf("Created machine: %s\n", name)
	return nil
}

func nameOf(p parsed) (string, error) {
	n := p.get("name")
	if n == "" {
		n = "default"
	}
	return n, validateName(n)
}

// secretEnv resolves a machine's --secret-env references from this
// process's environment, as smolvm does at every start and exec.
func secretEnv(m *machine) ([]string, error) {
	var out []string
	for _, s := range m.SecretEnv {
		g, h, _ := strings.Cut(s, "=")
		v, ok := os.LookupEnv(h)
		if !ok {
			return nil, runtimef("secret env '%s' needs host variable '%s', which is not set", g, h)
		}
		out = append(out, g+"="+v)
	}
	return out, nil
}

func cmdStart(st *store, args []string) error {
	p, err := parseFlags(args, []flagSpec{nameFlag, {long: "forkable"}}, 0)
	if err != nil {
		return err
	}
	name, err := nameOf(p)
	if err != nil {
		return err
	}
	return st.withMachine(name, func(m *machine) error {
		if m.State == "running" {
			fmt.Printf("Machine '%s' is already running\n", name)
			return nil
		}
		if _, err := secretEnv(m); err != nil {
			return err
		}
		for _, h := range m.AllowHosts {
			if !resolvable(h) {
				fmt.Fprintf(os.Stderr, "warning: could not resolve allowed host '%s'\n", h)
			}
		}
		pid := os.Getpid()
		m.State, m.PID = "running", &pid
		if err := st.save(m); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "Starting machine '%s'...\n", name)
		fmt.Printf("Machine '%s' started\n", name)
		return nil
	})
}

// killGuests ends the host processes standing in for a machine's guest.
func killGuests(m *machine) {
	for _, pid := range m.GuestPIDs {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	m.GuestPIDs = nil
}

func cmdStop(st *store, args []string) error {
	p, err := parseFlags(args, []flagSpec{nameFlag}, 0)
	if err != nil {
		return err
	}
	name, err := nameOf(p)
	if err != nil {
		return err
	}
	return st.withMachine(name, func(m *machine) error {
		if m.State != "running" {
			fmt.Printf("Machine '%s' is not running\n", name)
			return nil
		}
		killGuests(m)
		m.State, m.PID = "stopped", nil
		if err := st.save(m); err != nil {
			return err
		}
		fmt.Printf("Machine '%s' stopped\n", name)
		return nil
	})
}

func cmdDelete(st *store, args []string) error {
	p, err := parseFlags(args, []flagSpec{nameFlag, {long: "force", short: 'f'}, {long: "cascade"}}, 0)
	if err != nil {
		return err
	}
	name, err := nameOf(p)
	if err != nil {
		return err
	}
	if _, err := st.load(name); err != nil {
		return err
	}
	if !p.has("force") {
		fmt.Printf("Delete machine '%s'? [y/N] ", name)
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		ans := strings.ToLower(strings.TrimSpace(line))
		if (err != nil && line == "") || (ans != "y" && ans != "yes") {
			fmt.Println("Cancelled")
			return nil
		}
	}
	return st.withMachine(name, func(m *machine) error {
		killGuests(m)
		if err := st.remove(name); err != nil {
			return err
		}
		fmt.Printf("Deleted machine: %s\n", name)
		return nil
	})
}

func cmdStatus(st *store, args []string) error {
	p, err := parseFlags(args, []flagSpec{nameFlag, {long: "json"}}, 0)
	if err != nil {
		return err
	}
	name, err := nameOf(p)
	if err != nil {
		return err
	}
	m, err := st.load(name)
	if err != nil {
		return err
	}
	if p.has("json") {
		return json.NewEncoder(os.Stdout).Encode(statusJSON(m))
	}
	fmt.Printf("Machine: %s\nState: %s\n", m.Name, m.State)
	return nil
}

func cmdList(st *store, args []string) error {
	p, err := parseFlags(args, []flagSpec{{long: "json"}, {long: "verbose"}}, 0)
	if err != nil {
		return err
	}
	ms, err := st.all()
	if err != nil {
		return err
	}
	if p.has("json") {
		out := make([]map[string]any, 0, len(ms))
		for _, m := range ms {
			out = append(out, statusJSON(m))
		}
		return json.NewEncoder(os.Stdout).Encode(out)
	}
	if len(ms) == 0 {
		fmt.Println("No machines found.")
		return nil
	}
	fmt.Printf("%-30s %-10s\n", "NAME", "STATE")
	for _, m := range ms {
		fmt.Printf("%-30s %-10s\n", m.Name, m.State)
	}
	return nil
}

// errNotRunning is smolvm's refusal to exec into a machine that is not up.
func errNotRunning(name string) error {
	return runtimef("machine '%s' is not running; start it with 'smolvm machine start --name %s'", name, name)
}
