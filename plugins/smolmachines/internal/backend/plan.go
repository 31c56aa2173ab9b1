package backend

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/bot-bottle/bot-bottle/plugins/smolmachines/internal/smolvm"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// Image kinds, by how smolvm gets the image.
const (
	kindRegistry   = "registry"   // pulled inside the guest
	kindArchive    = "archive"    // a docker-save tar on the host
	kindRootfs     = "rootfs"     // a directory on the host
	kindSnapshot   = "snapshot"   // a .smolmachine from Commit (--from)
	kindDockerfile = "dockerfile" // built with Docker, then an archive
)

const defaultWorkdir = "/workspace"

// guestAgentDir holds a detached agent's output and exit code.
const guestAgentDir = "/run/bot-bottle/agent"

// launchPlan is what Prepare resolves and Launch carries out. It holds no
// secret values, so it can travel as Plan.Data.
type launchPlan struct {
	Identity    string            `json:"identity"`
	Machine     string            `json:"machine"`
	Smolvm      string            `json:"smolvm"`
	ImageKind   string            `json:"image_kind"`
	Image       string            `json:"image"` // ref, archive/rootfs/snapshot path, or Dockerfile
	ContextDir  string            `json:"context_dir,omitempty"`
	BuildTag    string            `json:"build_tag,omitempty"`
	Workdir     string            `json:"workdir"`
	Volumes     []string          `json:"volumes,omitempty"`
	Env         []string          `json:"env,omitempty"`
	SecretNames []string          `json:"secret_names,omitempty"`
	AllowHosts  []string          `json:"allow_hosts,omitempty"`
	Labels      map[string]string `json:"labels"`
	CPUs        int               `json:"cpus,omitempty"`
	MemoryMiB   int               `json:"memory_mib,omitempty"`
	CopyCwd     string            `json:"copy_cwd,omitempty"`
	Helper      string            `json:"helper,omitempty"`
	Command     []string          `json:"command"`
	TTY         bool              `json:"tty"`
	Detach      bool              `json:"detach"`
	EgressLog   string            `json:"egress_log,omitempty"`

	warnings []string
}

var (
	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	hostRE    = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$`)
)

// machineName is the smolvm machine of a bottle.
func machineName(identity string) string { return "bb-" + identity }

func checkIdentity(identity string) error {
	if !sdk.ValidIdentity(identity) {
		return fmt.Errorf("identity %q is not a valid bottle identity: %s", identity, sdk.NameRule)
	}
	return smolvm.ValidateName(machineName(identity))
}

// Prepare resolves the launch without creating anything.
func (b *Backend) Prepare(ctx context.Context, spec sdk.Spec) (sdk.Plan, error) {
	lp, err := b.plan(ctx, spec)
	if err != nil {
		return sdk.Plan{}, err
	}
	data, err := json.Marshal(lp)
	if err != nil {
		return sdk.Plan{}, fmt.Errorf("prepare %s: %w", spec.Identity, err)
	}
	return sdk.Plan{Preflight: lp.preflight(), Warnings: lp.warnings, Data: data}, nil
}

func (b *Backend) plan(_ context.Context, spec sdk.Spec) (*launchPlan, error) {
	if err := checkIdentity(spec.Identity); err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	cfg, err := parseConfig(sdk.PluginConfig())
	if err != nil {
		return nil, err
	}
	path, err := smolvm.Locate(cfg.Smolvm)
	if err != nil {
		return nil, err
	}
	lp := &launchPlan{
		Identity:  spec.Identity,
		Machine:   machineName(spec.Identity),
		Smolvm:    path,
		Workdir:   spec.Agent.Workdir,
		CPUs:      cfg.CPUs,
		MemoryMiB: cfg.MemoryMiB,
		Command:   spec.Command,
		TTY:       spec.TTY,
		Detach:    spec.Detach,
		Labels: map[string]string{
			sdk.LabelManaged:  "true",
			sdk.LabelIdentity: spec.Identity,
			sdk.LabelAgent:    spec.Agent.Name,
		},
	}
	if home := sdk.HomeID(); home != "" {
		lp.Labels[sdk.LabelHome] = home
	}
	if lp.Workdir == "" {
		lp.Workdir = defaultWorkdir
	}
	if !filepath.IsAbs(lp.Workdir) {
		return nil, fmt.Errorf("agent %s: workdir %q must be an absolute guest path", spec.Agent.Name, lp.Workdir)
	}
	if len(lp.Command) == 0 {
		lp.Command = spec.Agent.Command
	}
	if len(lp.Command) == 0 {
		return nil, fmt.Errorf("agent %s: no command to run", spec.Agent.Name)
	}
	if err := lp.resolveImage(spec); err != nil {
		return nil, err
	}
	if err := lp.resolveEgress(spec); err != nil {
		return nil, err
	}
	if err := checkEgressLog(spec.EgressLog); err != nil {
		return nil, fmt.Errorf("prepare %s: %w", spec.Identity, err)
	}
	if spec.EgressLog != "" && len(lp.AllowHosts) > 0 {
		// Where List and a Stop without a handle find it.
		lp.EgressLog = spec.EgressLog
		lp.Labels[LabelEgressLog] = spec.EgressLog
	}
	if lp.ImageKind == kindRegistry && len(lp.AllowHosts) == 0 {
		return nil, fmt.Errorf("agent %s: registry image %q is pulled inside the VM, but the egress allowlist is empty (no network): add the registry host to egress, or define the agent by a Dockerfile (built locally and handed over as an archive)", spec.Agent.Name, lp.Image)
	}
	if lp.ImageKind == kindRegistry {
		lp.warnings = append(lp.warnings, fmt.Sprintf("smolvm adds the registry hosts of %q to the enforced egress allowlist (it pulls the image inside the VM)", lp.Image))
	}
	if spec.Cwd != "" {
		cwd, err := existingDir(spec.Cwd)
		if err != nil {
			return nil, fmt.Errorf("project dir: %w", err)
		}
		if spec.CopyCwd {
			lp.CopyCwd = cwd
		} else {
			lp.Volumes = append(lp.Volumes, cwd+":"+lp.Workdir)
		}
	}
	if spec.QueueDir != "" {
		q, err := existingDir(spec.QueueDir)
		if err != nil {
			return nil, fmt.Errorf("queue dir: %w", err)
		}
		// Read-only but for the inbox: a bottle can ask, never decide.
		lp.Volumes = append(lp.Volumes, q+":"+sdk.GuestQueueDir+":ro")
		if fi, err := os.Stat(filepath.Join(q, sdk.QueueInbox)); err == nil && fi.IsDir() {
			lp.Volumes = append(lp.Volumes, filepath.Join(q, sdk.QueueInbox)+":"+sdk.GuestQueueDir+"/"+sdk.QueueInbox+":rw")
		}
		lp.Env = append(lp.Env, sdk.EnvQueueDir+"="+sdk.GuestQueueDir)
	}
	lp.Env = append(lp.Env, sdk.EnvIdentity+"="+spec.Identity)
	// smolvm enforces the allowlist itself: there is no proxy to ask.
	if len(lp.AllowHosts) == 0 {
		lp.Env = append(lp.Env, sdk.EnvEgress+"="+sdk.EgressOff)
	} else {
		lp.Env = append(lp.Env, sdk.EnvEgress+"="+sdk.EgressAllowlist)
	}
	if spec.HelperBinary != "" {
		fi, err := os.Stat(spec.HelperBinary)
		if err != nil || !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("helper binary %s: not a file", spec.HelperBinary)
		}
		lp.Helper, _ = filepath.Abs(spec.HelperBinary)
	}
	for _, n := range sortedKeys(spec.Env) {
		if !envNameRE.MatchString(n) {
			return nil, fmt.Errorf("passed-through env name %q is not a valid variable name", n)
		}
		lp.SecretNames = append(lp.SecretNames, n)
	}
	return lp, nil
}

func existingDir(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("%s does not exist", abs)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("%s is not a directory", abs)
	}
	return abs, nil
}

// resolveImage applies the image precedence of ARCHITECTURE.md: committed snapshot (if the
// file is still there) → per-bottle Dockerfile → the agent's Dockerfile or
// image.
func (lp *launchPlan) resolveImage(spec sdk.Spec) error {
	if c := spec.CommittedImage; c != "" {
		fi, err := os.Stat(c)
		switch {
		case err == nil && fi.Mode().IsRegular() && strings.HasSuffix(c, ".smolmachine") && filepath.IsAbs(c):
			lp.ImageKind, lp.Image = kindSnapshot, c
			return nil
		case err != nil:
			lp.warnings = append(lp.warnings, fmt.Sprintf("committed snapshot %s is gone; falling back to the bottle's image", c))
		default:
			lp.warnings = append(lp.warnings, fmt.Sprintf("committed image %s is not a .smolmachine file; falling back to the bottle's image", c))
		}
	}
	switch {
	case spec.BottleDockerfile != "":
		return lp.dockerfile(spec.BottleDockerfile, spec.Agent.ContextDir, "bot-bottle-smolmachines/"+spec.Identity+":latest")
	case spec.Agent.Dockerfile != "":
		return lp.dockerfile(spec.Agent.Dockerfile, spec.Agent.ContextDir, "bot-bottle-smolmachines/agent-"+slug(spec.Agent.Name)+":latest")
	case spec.Agent.Image != "":
		ref := spec.Agent.Image
		if !smolvm.IsLocalImage(ref) {
			lp.ImageKind, lp.Image = kindRegistry, ref
			return nil
		}
		if ref == "-" {
			return fmt.Errorf("agent %s: image \"-\" (stdin) cannot be used for a bottle", spec.Agent.Name)
		}
		abs, err := filepath.Abs(ref)
		if err != nil {
			return err
		}
		fi, err := os.Stat(abs)
		if err != nil {
			return fmt.Errorf("agent %s: local image %s does not exist", spec.Agent.Name, abs)
		}
		lp.ImageKind, lp.Image = kindArchive, abs
		if fi.IsDir() {
			lp.ImageKind = kindRootfs
		}
		return nil
	}
	return fmt.Errorf("agent %s has neither an image nor a Dockerfile", spec.Agent.Name)
}

func (lp *launchPlan) dockerfile(df, ctxDir, tag string) error {
	abs, err := filepath.Abs(df)
	if err != nil {
		return err
	}
	if _, err := os.Stat(abs); err != nil {
		return fmt.Errorf("dockerfile %s does not exist", abs)
	}
	if ctxDir == "" {
		ctxDir = filepath.Dir(abs)
	}
	if ctxDir, err = existingDir(ctxDir); err != nil {
		return fmt.Errorf("build context: %w", err)
	}
	lp.ImageKind, lp.Image, lp.ContextDir, lp.BuildTag = kindDockerfile, abs, ctxDir, tag
	return nil
}

var nonSlug = regexp.MustCompile(`[^a-z0-9]+`)

func slug(s string) string {
	s = strings.Trim(nonSlug.ReplaceAllString(strings.ToLower(s), "-"), "-")
	if s == "" {
		s = "agent"
	}
	return s
}

// resolveEgress turns host[:port] rules into --allow-host values. smolvm
// filters by host only, so ports are dropped, with a warning.
func (lp *launchPlan) resolveEgress(spec sdk.Spec) error {
	rules := spec.Egress
	if rules == nil {
		rules = spec.Agent.Egress
	}
	seen := map[string]bool{}
	var dropped []string
	for _, r := range rules {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		host := r
		if h, port, err := net.SplitHostPort(r); err == nil {
			if n, perr := strconv.Atoi(port); perr != nil || n < 1 || n > 65535 {
				return fmt.Errorf("egress rule %q is not host[:port]", r)
			}
			host = h
			dropped = append(dropped, r+" (port "+port+")")
		}
		if w, ok := strings.CutPrefix(host, "*."); ok {
			host = w // smolvm matches subdomains by suffix anyway
		}
		if net.ParseIP(host) == nil && !hostRE.MatchString(host) {
			return fmt.Errorf("egress rule %q: %q is not a host name", r, host)
		}
		if !seen[host] {
			seen[host] = true
			lp.AllowHosts = append(lp.AllowHosts, host)
		}
	}
	sort.Strings(lp.AllowHosts)
	if len(dropped) > 0 {
		lp.warnings = append(lp.warnings, "smolvm cannot filter egress by port; all ports are open to the allowed hosts of: "+strings.Join(dropped, ", "))
	}
	return nil
}

func (lp *launchPlan) preflight() []sdk.PreflightLine {
	var img string
	switch lp.ImageKind {
	case kindSnapshot:
		img = "committed snapshot " + lp.Image
	case kindDockerfile:
		img = "Dockerfile " + lp.Image + " (built with the local Docker Engine, handed over as a docker save archive)"
	case kindArchive:
		img = "image archive " + lp.Image
	case kindRootfs:
		img = "rootfs " + lp.Image
	default:
		img = "registry image " + lp.Image + " (pulled inside the VM)"
	}
	mounts := "none"
	if len(lp.Volumes) > 0 {
		mounts = strings.Join(lp.Volumes, ", ")
	}
	if lp.CopyCwd != "" {
		mounts += "; project copied in from " + lp.CopyCwd
	}
	network := "none (no network; an approval applies from the next resume)"
	if len(lp.AllowHosts) > 0 {
		network = "allow-host " + strings.Join(lp.AllowHosts, ", ") + " (enforced by smolvm; approvals apply from the next resume)"
	}
	lines := []sdk.PreflightLine{
		{Key: "backend", Value: Name + " (smolvm " + lp.Smolvm + ")"},
		{Key: "machine", Value: lp.Machine},
		{Key: "image", Value: img},
		{Key: "workdir", Value: lp.Workdir},
		{Key: "mounts", Value: mounts},
		{Key: "egress", Value: network},
	}
	if lp.EgressLog != "" {
		lines = append(lines, sdk.PreflightLine{Key: "egress audit", Value: "refused connections (smolvm machine egress-events) -> " + lp.EgressLog + ", when listed and at stop"})
	}
	if len(lp.SecretNames) > 0 {
		lines = append(lines, sdk.PreflightLine{Key: "secrets", Value: strings.Join(lp.SecretNames, ", ") + " (via --secret-env)"})
	}
	return lines
}

// createArgs is the `machine create` command line. Secrets appear only as
// --secret-env NAME=NAME references; their values go in the process env.
func (lp *launchPlan) createArgs(image string) []string {
	a := []string{"machine", "create", "--name", lp.Machine}
	if lp.ImageKind == kindSnapshot {
		a = append(a, "--from", lp.Image)
	} else {
		a = append(a, "--image", image)
	}
	if lp.CPUs > 0 {
		a = append(a, "--cpus", fmt.Sprint(lp.CPUs))
	}
	if lp.MemoryMiB > 0 {
		a = append(a, "--mem", fmt.Sprint(lp.MemoryMiB))
	}
	for _, v := range lp.Volumes {
		a = append(a, "-v", v)
	}
	for _, e := range lp.Env {
		a = append(a, "-e", e)
	}
	for _, n := range lp.SecretNames {
		a = append(a, "--secret-env", n+"="+n)
	}
	for _, h := range lp.AllowHosts {
		a = append(a, "--allow-host", h)
	}
	a = append(a, "-w", lp.Workdir)
	for _, k := range sortedKeys(lp.Labels) {
		a = append(a, "--label", k+"="+lp.Labels[k])
	}
	// A workload that never ends keeps the machine up; the agent runs
	// through exec so that Attach gets its stdio and exit code.
	return append(a, "--", "sleep", "infinity")
}
