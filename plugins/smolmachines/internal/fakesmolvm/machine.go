package main

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
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
	"unicode/utf8"
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

// validateName is smolvm's validate_vm_name (src/data/mod.rs:58), checked
// at create only, with its messages.
func validateName(n string) error {
	const label = "machine name"
	if n == "" {
		return fmt.Errorf("%s cannot be empty", label)
	}
	if len(n) > 128 {
		return fmt.Errorf("%s too long: %d characters (max 128)", label, len(n))
	}
	if c := n[0]; !isAlnum(rune(c)) {
		return fmt.Errorf("%s must start with a letter or digit (got: %q)", label, n)
	}
	if strings.HasSuffix(n, "-") {
		return fmt.Errorf("%s cannot end with a hyphen (got: %q)", label, n)
	}
	prevHyphen := false
	for _, c := range n {
		if c == '-' {
			if prevHyphen {
				return fmt.Errorf("%s cannot contain consecutive hyphens", label)
			}
			prevHyphen = true
		} else {
			prevHyphen = false
		}
		if !isAlnum(c) && c != '-' && c != '_' {
			if c == '/' || c == '\\' {
				return fmt.Errorf("%s cannot contain path separators", label)
			}
			return fmt.Errorf("%s contains invalid character: '%c'", label, c)
		}
	}
	return nil
}

func isAlnum(r rune) bool {
	return (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')
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

// resolveAllowHost is resolve_host_to_cidrs (src/smolfile.rs:38): an IP
// literal stands for itself, host:port is refused, a name must resolve. The
// fake asks no DNS: localhost and the names in $SMOLVM_FAKE_RESOLVABLE (and
// their subdomains) resolve.
func resolveAllowHost(h string) error {
	if net.ParseIP(h) != nil {
		return nil
	}
	if strings.Contains(h, ":") {
		return fmt.Errorf("invalid hostname '%s': port suffixes are not supported. Use the hostname only (all ports are allowed to resolved IPs).", h)
	}
	if resolvable(h) {
		return nil
	}
	return fmt.Errorf("failed to resolve '%s': failed to lookup address information: Name or service not known", h)
}

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

// looksLikeDockerfile is looks_like_dockerfile (src/data/image_source.rs):
// the conventional names, or a first meaningful line of FROM or ARG.
func looksLikeDockerfile(path string) bool {
	b := strings.ToLower(filepath.Base(path))
	if b == "dockerfile" || b == "containerfile" || strings.HasSuffix(b, ".dockerfile") || strings.HasSuffix(b, ".containerfile") {
		return true
	}
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	head := make([]byte, 4096)
	n, _ := f.Read(head)
	if !utf8.Valid(head[:n]) {
		return false
	}
	for _, line := range strings.Split(string(head[:n]), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		w := strings.ToUpper(strings.Fields(line)[0])
		return w == "FROM" || w == "ARG"
	}
	return false
}

// isLocalImage is looks_local plus "-" (classify, src/data/image_source.rs:56).
func isLocalImage(ref string) bool {
	if ref == "-" {
		return true
	}
	for _, p := range []string{"/", "./", "../"} {
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

// createFlagNames are the create flags smolvm names when they come after
// "--" (create_flags_in_workload).
func strayCreateFlags(rest []string) []string {
	var out []string
	for _, a := range rest {
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || a == "--" {
			continue
		}
		for _, f := range createFlags {
			if f.long == name {
				out = append(out, a)
			}
		}
	}
	return out
}

// cmdCreate is CreateCmd (src/cli/machine.rs:2923, run at :3104).
func cmdCreate(st *store, args []string) error {
	p, err := parseFlags(args, createFlags, 0)
	if err != nil {
		return err
	}
	if p.has("from") && p.has("image") {
		return usagef("the argument '--from <PATH>' cannot be used with '--image <IMAGE>'")
	}
	if p.has("from") && p.has("smolfile") {
		return usagef("the argument '--from <PATH>' cannot be used with '--smolfile <PATH>'")
	}
	if p.has("image") && strings.TrimSpace(p.get("image")) == "" {
		return usagef("invalid value '' for '--image <IMAGE>': image reference must not be empty")
	}
	if p.has("smolfile") {
		return runtimef("the fake smolvm does not implement --smolfile")
	}
	if stray := strayCreateFlags(p.rest); len(stray) > 0 {
		fmt.Fprintf(os.Stderr, "note: %s came after `--`, so it was passed to the workload and did not configure the machine. Machine options go before `--`.\n", strings.Join(stray, ", "))
	}
	name := p.get("name")
	if name == "" {
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		name = "vm-" + hex.EncodeToString(b)
	}
	m := &machine{Name: name, State: "created", CPUs: 4, MemoryMiB: 8192, Labels: map[string]string{},
		CreatedAt: uint64(time.Now().Unix()), Workdir: p.get("workdir"), Workload: p.rest}
	if v := p.get("cpus"); v != "" {
		n, err := strconv.ParseUint(v, 10, 8)
		if err != nil {
			return usagef("invalid value '%s' for '--cpus <N>': invalid digit found in string", v)
		}
		m.CPUs = int(n)
	}
	if v := p.get("mem"); v != "" {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return usagef("invalid value '%s' for '--mem <MiB>': invalid digit found in string", v)
		}
		m.MemoryMiB = int(n)
	}
	for _, f := range []struct {
		flag string
		dst  **uint64
	}{{"storage", &m.StorageGB}, {"overlay", &m.OverlayGB}} {
		if v := p.get(f.flag); v != "" {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return usagef("invalid value '%s' for '--%s <GiB>': invalid digit found in string", v, f.flag)
			}
			*f.dst = &n
		}
	}
	if p.has("from") {
		return createFromPack(st, p, m)
	}
	if err := allowHosts(p, m); err != nil {
		return err
	}
	for _, c := range p.vals["allow-cidr"] {
		if _, _, err := net.ParseCIDR(c); err != nil && net.ParseIP(c) == nil {
			return usagef("invalid value '%s' for '--allow-cidr <CIDR>': invalid CIDR", c)
		}
		m.AllowCIDRs = append(m.AllowCIDRs, c)
	}
	policy := len(m.AllowHosts) > 0 || len(m.AllowCIDRs) > 0 || p.has("outbound-localhost-only")
	m.Network = p.has("net") || policy
	if err := validateName(name); err != nil {
		return configErr("create machine", "%v", err)
	}
	if err := configure(p, m); err != nil {
		return err
	}
	if m.CPUs == 0 {
		return configErr("validate resources", "CPU count must be at least 1")
	}
	if policy && p.get("net-backend") == "tsi" {
		return configErr("network backend", "--net-backend tsi cannot enforce an egress policy; use virtio-net")
	}
	if p.has("image") {
		if err := resolveImage(p.get("image"), m, policy); err != nil {
			return err
		}
	} else {
		m.ImageKind = "bare"
	}
	if m.ImageKind == "registry" && !m.Network && len(m.Ports) == 0 {
		img := *m.Image
		return configErr("create machine", "image '%s' must be pulled from a registry, but this machine has no network, so the pull can never succeed. Add --net (or publish a port with -p, or set an egress policy with --allow-cidr/--allow-host). To keep the machine network-isolated, supply the image locally instead: `docker save %s | smolvm machine create --image - ...`", img, img)
	}
	return commitCreate(st, m, p, nil)
}

// allowHosts is resolve_egress_flags's --allow-host half
// (src/cli/machine.rs:82): every host must resolve at create.
func allowHosts(p parsed, m *machine) error {
	for _, h := range p.vals["allow-host"] {
		if err := resolveAllowHost(h); err != nil {
			return configErr("--allow-host", "%v", err)
		}
		m.AllowHosts = append(m.AllowHosts, h)
	}
	return nil
}

// configure applies the flags shared by both create paths: volumes, env,
// secret references, labels and ports.
func configure(p parsed, m *machine) error {
	seen := map[string]bool{}
	for _, v := range p.vals["volume"] {
		mt, err := parseVolume(v)
		if err != nil {
			return err
		}
		if seen[mt.Guest] {
			return runtimef("mount operation failed: validate mounts: duplicate mount target '%s'", mt.Guest)
		}
		seen[mt.Guest] = true
		m.Mounts = append(m.Mounts, mt)
	}
	for _, e := range p.vals["env"] {
		k, _, ok := strings.Cut(e, "=")
		if !ok || !envName.MatchString(k) {
			return configErr("parse env", "invalid environment variable '%s': expected KEY=VALUE", e)
		}
		m.Env = append(m.Env, e)
	}
	for _, s := range p.vals["secret-env"] {
		g, h, ok := strings.Cut(s, "=")
		if !ok || !envName.MatchString(g) || !envName.MatchString(h) {
			return configErr("secret", "invalid --secret-env '%s': expected GUEST_VAR=HOST_VAR", s)
		}
		m.SecretEnv = append(m.SecretEnv, s)
	}
	if len(p.vals["secret-file"]) > 0 {
		return runtimef("the fake smolvm does not implement --secret-file")
	}
	for _, l := range p.vals["label"] {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return configErr("parse labels", "invalid label '%s': expected KEY=VALUE", l)
		}
		m.Labels[k] = v
	}
	m.Ports = append(m.Ports, p.vals["port"]...)
	if m.Workdir != "" && !filepath.IsAbs(m.Workdir) {
		return configErr("create machine", "workdir '%s' must be an absolute path", m.Workdir)
	}
	return nil
}

// resolveImage is classify and resolve (src/data/image_source.rs:56, :169):
// a registry ref is kept as given; a rootfs dir becomes
// local-dir:<canonical path>, an archive local:<sha256>.
func resolveImage(ref string, m *machine, policy bool) error {
	set := func(kind, r string) { m.ImageKind, m.Image = kind, &r }
	switch {
	case ref == "-":
		h := sha256.New()
		if _, err := io.Copy(h, os.Stdin); err != nil {
			return runtimef("io operation failed: %v", err)
		}
		set("archive", "local:"+hex.EncodeToString(h.Sum(nil)))
	case isLocalImage(ref):
		if fi, err := os.Stat(ref); err == nil && fi.IsDir() {
			c, err := filepath.EvalSymlinks(ref)
			if err == nil {
				c, err = filepath.Abs(c)
			}
			if err != nil {
				return configErr("--image", "cannot use rootfs directory %s: %v", ref, err)
			}
			set("rootfs", "local-dir:"+c)
			return nil
		}
		fi, err := os.Stat(ref)
		if err != nil {
			return configErr("--image", "cannot read archive %s: No such file or directory (os error 2)", ref)
		}
		if !fi.Mode().IsRegular() {
			return configErr("--image", "%s is not a file", ref)
		}
		if looksLikeDockerfile(ref) {
			return configErr("--image", "%s looks like a Dockerfile, not an image.\nsmolvm boots images, it does not build them — build first, then pass the result:\n  docker build -t myapp . && docker save myapp | smolvm machine run --image - -- ...", ref)
		}
		if err := checkArchive(ref); err != nil {
			return configErr("--image", "cannot read archive %s: %v", ref, err)
		}
		sum, err := fileSHA256(ref)
		if err != nil {
			return configErr("--image", "cannot read archive %s: %v", ref, err)
		}
		set("archive", "local:"+sum)
	default:
		set("registry", ref)
		if policy {
			// allow_image_pull_egress: the registry joins the allow-list.
			m.RegistryHosts = registryHosts(ref)
		}
	}
	return nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// createFromPack is run_from_smolmachine (src/cli/machine.rs:3265).
func createFromPack(st *store, p parsed, m *machine) error {
	from := p.get("from")
	if _, err := os.Stat(from); err != nil {
		return configErr("create from .smolmachine", "file not found: %s", from)
	}
	pk, err := readPack(from)
	if err != nil {
		return err
	}
	if err := validateName(m.Name); err != nil {
		return configErr("create machine", "%v", err)
	}
	if err := allowHosts(p, m); err != nil {
		return err
	}
	m.Network = p.has("net") || len(m.AllowHosts) > 0 || pk.Network
	if err := configure(p, m); err != nil {
		return err
	}
	m.ImageKind, m.From, m.Image = "pack", from, pk.Image
	if m.Workdir == "" {
		m.Workdir = pk.Workdir
	}
	if len(m.Workload) == 0 {
		m.Workload = pk.Workload
	}
	m.Env = append(append([]string{}, pk.Env...), m.Env...)
	fmt.Println("Extracting .smolmachine assets...")
	return commitCreate(st, m, p, func(rootfs string) error { return untarInto(rootfs, pk.Rootfs) })
}

// commitCreate reserves the name, lays out the guest files and saves the
// record, then prints print_create_success (src/cli/vm_common.rs:720).
func commitCreate(st *store, m *machine, p parsed, restore func(rootfs string) error) error {
	unlock, err := st.lock()
	if err != nil {
		return err
	}
	defer unlock()
	if st.exists(m.Name) {
		return configErr("create machine", "machine '%s' already exists or is being created", m.Name)
	}
	rootfs := st.rootfs(m.Name)
	for _, d := range []string{"tmp", "root", "workspace", "run"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return err
		}
	}
	if restore != nil {
		if err := restore(rootfs); err != nil {
			os.RemoveAll(rootfs)
			return agentErr("extract .smolmachine", "%v", err)
		}
	}
	if err := st.save(m); err != nil {
		return err
	}
	fmt.Printf("Created machine: %s\n", m.Name)
	fmt.Printf("  CPUs: %d, Memory: %d MiB\n", m.CPUs, m.MemoryMiB)
	if n := len(p.vals["volume"]); n > 0 {
		fmt.Printf("  Mounts: %d\n", n)
	}
	if n := len(p.vals["port"]); n > 0 {
		fmt.Printf("  Ports: %d\n", n)
	}
	if n := len(p.vals["init"]); n > 0 {
		fmt.Printf("  Init commands: %d\n", n)
	}
	fmt.Printf("\nUse 'smolvm machine start --name %s' to start the machine\n", m.Name)
	fmt.Printf("Then use 'smolvm machine exec --name %s -- <command>' to run commands\n", m.Name)
	return nil
}

// nameOf is the target machine: --name, else "default". Only create
// validates names; elsewhere an odd name is simply not found.
func nameOf(p parsed) (string, error) {
	n := p.get("name")
	if n == "" {
		n = "default"
	}
	return n, nil
}

// secretEnv resolves a machine's --secret-env references from this
// process's environment, as smolvm does at every start and exec.
func secretEnv(m *machine) ([]string, error) {
	var out []string
	for _, s := range m.SecretEnv {
		g, h, _ := strings.Cut(s, "=")
		v, ok := os.LookupEnv(h)
		if !ok {
			// resolve_secret_ref (src/secrets.rs:452) names the guest
			// variable and the failure's kind, not the host variable.
			return nil, configErr(fmt.Sprintf("resolve secret '%s'", g), "env_unset")
		}
		out = append(out, g+"="+v)
	}
	return out, nil
}

// cmdStart is StartCmd (src/cli/machine.rs:3590) and start_vm_named
// (src/cli/vm_common.rs:1264).
func cmdStart(st *store, args []string) error {
	p, err := parseFlags(args, []flagSpec{nameFlag, {long: "forkable"}}, 0)
	if err != nil {
		return err
	}
	name, _ := nameOf(p)
	return st.withMachine(name, func(m *machine) error {
		if m.State == "running" {
			fmt.Printf("Machine '%s' already running%s\n", name, pidSuffix(m.PID))
			return nil
		}
		if _, err := secretEnv(m); err != nil {
			return err
		}
		for _, h := range m.AllowHosts {
			if resolveAllowHost(h) != nil {
				fmt.Fprintf(os.Stderr, "warning: could not resolve allowed host '%s'\n", h)
			}
		}
		// ensure_vm_dir: the data dir, with the name it belongs to.
		dir := st.dataDir(name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "name"), []byte(name), 0o644); err != nil {
			return err
		}
		mountInfo := ""
		if len(m.Mounts) > 0 {
			mountInfo = fmt.Sprintf(" with %d mount(s)", len(m.Mounts))
		}
		fmt.Fprintf(os.Stderr, "Starting machine '%s'%s...\n", name, mountInfo)
		pid := os.Getpid()
		m.State, m.PID = "running", &pid
		if err := st.save(m); err != nil {
			return err
		}
		fmt.Printf("Machine '%s' running (PID: %d)\n", name, pid)
		return nil
	})
}

// pidSuffix is format_pid_suffix (src/cli/mod.rs:40).
func pidSuffix(pid *int) string {
	if pid == nil {
		return ""
	}
	return fmt.Sprintf(" (PID: %d)", *pid)
}

// killGuests ends the host processes standing in for a machine's guest.
func killGuests(m *machine) {
	for _, pid := range m.GuestPIDs {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	m.GuestPIDs = nil
}

// cmdStop is StopCmd (src/cli/machine.rs:3950) and stop_vm_named
// (src/cli/vm_common.rs:1923).
func cmdStop(st *store, args []string) error {
	p, err := parseFlags(args, []flagSpec{nameFlag}, 0)
	if err != nil {
		return err
	}
	name, _ := nameOf(p)
	return st.withMachine(name, func(m *machine) error {
		if m.State != "running" {
			fmt.Printf("Machine '%s' is not running (state: %s)\n", name, m.State)
			return nil
		}
		fmt.Printf("Stopping machine '%s'...\n", name)
		killGuests(m)
		m.State, m.PID = "stopped", nil
		if err := st.save(m); err != nil {
			return err
		}
		fmt.Printf("Stopped machine: %s\n", name)
		return nil
	})
}

// cmdDelete is DeleteCmd (src/cli/machine.rs:3974) and delete_vm
// (src/cli/vm_common.rs:2262): a running machine is stopped first, then,
// without -f, the question goes to stderr and anything but y/yes (EOF
// included) cancels with exit 0.
func cmdDelete(st *store, args []string) error {
	p, err := parseFlags(args, []flagSpec{nameFlag, {long: "force", short: 'f'}, {long: "cascade"}}, 0)
	if err != nil {
		return err
	}
	if !p.has("name") {
		return usagef("the following required arguments were not provided:\n  --name <NAME>")
	}
	name := p.get("name")
	m, err := st.load(name)
	if err != nil {
		return err
	}
	if m.State == "running" {
		if err := st.withMachine(name, func(m *machine) error {
			fmt.Printf("Stopping machine '%s'...\n", name)
			killGuests(m)
			m.State, m.PID = "stopped", nil
			return st.save(m)
		}); err != nil {
			return err
		}
	}
	if !p.has("force") && !p.has("cascade") {
		fmt.Fprintf(os.Stderr, "Delete machine '%s'? [y/N] ", name)
		line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
		if ans := strings.ToLower(strings.TrimSpace(line)); ans != "y" && ans != "yes" {
			fmt.Println("Cancelled")
			return nil
		}
	}
	return st.withMachine(name, func(m *machine) error {
		killGuests(m)
		if _, err := os.Stat(st.dataDir(name)); err == nil {
			fmt.Printf("Cleaning up data directory for vm: %s\n", name)
		}
		if err := st.remove(name); err != nil {
			return err
		}
		fmt.Printf("Deleted machine: %s\n", name)
		return nil
	})
}

// cmdStatus is StatusCmd (src/cli/machine.rs:4018): status_vm_json
// (src/cli/vm_common.rs:2524) with --json, else status_vm.
func cmdStatus(st *store, args []string) error {
	p, err := parseFlags(args, []flagSpec{nameFlag, {long: "json"}}, 0)
	if err != nil {
		return err
	}
	name, _ := nameOf(p)
	m, err := st.load(name)
	if p.has("json") {
		if err != nil {
			return configErr("machine status", "machine '%s' not found", name)
		}
		return printJSON(statusJSON(m))
	}
	if err != nil {
		return err
	}
	if m.State == "running" {
		fmt.Printf("Machine '%s': running%s\n", name, pidSuffix(m.PID))
	} else {
		fmt.Printf("Machine '%s': %s\n", name, m.State)
	}
	return nil
}

// cmdList is LsCmd (src/cli/machine.rs:4106) and list_vms
// (src/cli/vm_common.rs:2549).
func cmdList(st *store, args []string) error {
	p, err := parseFlags(args, []flagSpec{{long: "json"}, {long: "verbose", short: 'v'}}, 0)
	if err != nil {
		return err
	}
	ms, err := st.all()
	if err != nil {
		return err
	}
	if len(ms) == 0 {
		if p.has("json") {
			fmt.Println("[]")
		} else {
			fmt.Println("No machines found")
		}
		return nil
	}
	if p.has("json") {
		out := make([]map[string]any, 0, len(ms))
		for _, m := range ms {
			out = append(out, statusJSON(m))
		}
		return printJSON(out)
	}
	fmt.Printf("%-20s %-12s %5s %10s %7s %7s %8s %8s\n", "NAME", "STATE", "CPUS", "MEMORY", "MOUNTS", "PORTS", "STORAGE", "OVERLAY")
	fmt.Println(strings.Repeat("-", 88))
	for _, m := range ms {
		storage, overlay := uint64(20), uint64(10)
		if m.StorageGB != nil {
			storage = *m.StorageGB
		}
		if m.OverlayGB != nil {
			overlay = *m.OverlayGB
		}
		n := m.Name
		if len(n) > 18 {
			n = n[:15] + "..."
		}
		fmt.Printf("%-20s %-12s %5d %10s %7d %7d %8s %8s\n", n, m.State, m.CPUs, fmt.Sprintf("%d MiB", m.MemoryMiB),
			len(m.Mounts), len(m.Ports), fmt.Sprintf("%d GiB", storage), fmt.Sprintf("%d GiB", overlay))
	}
	return nil
}

// errNotRunning is ensure_running_and_connect's refusal to reach a machine
// that is not up (src/cli/vm_common.rs:113).
func errNotRunning(name string) error {
	return agentErr("connect", "machine '%s' is not running. Use 'smolvm machine start --name %s' first.", name, name)
}
