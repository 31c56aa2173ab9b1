package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/docker/docker/client"

	"github.com/bot-bottle/bot-bottle/plugins/docker/internal/settings"
	"github.com/bot-bottle/bot-bottle/plugins/internal/buildsrc"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// Image source kinds, in order of precedence.
const (
	srcCommitted        = "committed"
	srcBottleDockerfile = "bottle-dockerfile"
	srcAgentDockerfile  = "agent-dockerfile"
	srcImage            = "image"
)

// DefaultWorkdir is where the project goes when the agent names no workdir.
const DefaultWorkdir = "/workspace"

// source is where a bottle's image comes from.
type source struct {
	Kind string `json:"kind"`
	// Image is the committed or agent image reference.
	Image string `json:"image,omitempty"`
	// Dockerfile is a host path, or empty with DockerfileText set when the
	// per-bottle Dockerfile came as text.
	Dockerfile     string `json:"dockerfile,omitempty"`
	DockerfileText string `json:"-"`
	ContextDir     string `json:"context,omitempty"`
}

func (s source) describe() string {
	switch s.Kind {
	case srcCommitted:
		return "committed image " + s.Image
	case srcBottleDockerfile:
		return "per-bottle Dockerfile"
	case srcAgentDockerfile:
		return "agent Dockerfile " + s.Dockerfile
	default:
		return "image " + s.Image
	}
}

// planData is the opaque plan Prepare hands to Launch.
type planData struct {
	Source source `json:"source"`
	// Subnet is the internal network's subnet the preflight announced, for
	// a bottle with egress; Launch takes another if it is taken meanwhile.
	Subnet string `json:"subnet,omitempty"`
	// UserUnknown: the preflight could not tell the image's user, so Launch
	// warns if it turns out to be root on a bind-mounted project.
	UserUnknown bool `json:"user_unknown,omitempty"`
}

func (pd planData) subnet() netip.Prefix {
	p, err := netip.ParsePrefix(pd.Subnet)
	if err != nil {
		return netip.Prefix{}
	}
	return p
}

// checkSpec validates what the core handed over, so that bad input fails in
// Prepare with one clear line instead of halfway through a launch.
func (b *Backend) checkSpec(spec sdk.Spec) (settings.Settings, error) {
	if err := checkIdentity(spec.Identity); err != nil {
		return settings.Settings{}, err
	}
	if spec.Agent.Name == "" {
		return settings.Settings{}, errors.New("spec names no agent")
	}
	if b.setErr != nil {
		return settings.Settings{}, b.setErr
	}
	set := b.set
	// Here, where the capability is granted, so that whoever drives the
	// plugin gets the same refusal; the opt-in is in the plugin's own
	// config (plugins.hcl), which an agent definition cannot set.
	if _, err := set.DangerousAllowed(spec.Agent.CapAdd); err != nil {
		return set, fmt.Errorf("agent %s: %w", spec.Agent.Name, err)
	}
	if spec.Cwd != "" {
		if err := checkDir("project directory", spec.Cwd); err != nil {
			return set, err
		}
	}
	if spec.QueueDir != "" {
		if err := checkDir("queue directory", spec.QueueDir); err != nil {
			return set, err
		}
	}
	if spec.HelperBinary != "" {
		if !filepath.IsAbs(spec.HelperBinary) {
			return set, fmt.Errorf("helper binary %q is not an absolute path", spec.HelperBinary)
		}
		st, err := os.Stat(spec.HelperBinary)
		if err != nil {
			return set, fmt.Errorf("helper binary: %w", err)
		}
		if !st.Mode().IsRegular() {
			return set, fmt.Errorf("helper binary %s is not a regular file", spec.HelperBinary)
		}
	}
	if w := spec.Agent.Workdir; w != "" && !strings.HasPrefix(w, "/") {
		return set, fmt.Errorf("agent %s: workdir %q is not an absolute path", spec.Agent.Name, w)
	}
	for k := range spec.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return set, fmt.Errorf("environment variable name %q is not valid", k)
		}
	}
	if err := checkCredentials(spec); err != nil {
		return set, err
	}
	return set, nil
}

func checkDir(what, p string) error {
	if !filepath.IsAbs(p) {
		return fmt.Errorf("%s %q is not an absolute path", what, p)
	}
	st, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("%s %s is not a directory", what, p)
	}
	return nil
}

// chooseSource applies the image precedence: a committed image the engine
// still has, the per-bottle Dockerfile, the agent's Dockerfile, the agent's
// image. A vanished committed image is a warning, not an error.
func chooseSource(ctx context.Context, c *client.Client, spec sdk.Spec) (source, []string, error) {
	var warnings []string
	fallback := func() (source, error) {
		a := spec.Agent
		if spec.BottleDockerfile != "" {
			s := source{Kind: srcBottleDockerfile, ContextDir: a.ContextDir}
			// The core normally passes a path; text is accepted too, so a
			// core that keeps the Dockerfile in memory works the same.
			if filepath.IsAbs(spec.BottleDockerfile) && !strings.ContainsRune(spec.BottleDockerfile, '\n') {
				s.Dockerfile = spec.BottleDockerfile
				s.ContextDir = buildsrc.ContextDir(a, spec.BottleDockerfile)
			} else {
				s.DockerfileText = spec.BottleDockerfile
			}
			return s, nil
		}
		if a.Dockerfile != "" {
			return source{Kind: srcAgentDockerfile, Dockerfile: a.Dockerfile, ContextDir: buildsrc.ContextDir(a, a.Dockerfile)}, nil
		}
		if a.Image != "" {
			return source{Kind: srcImage, Image: a.Image}, nil
		}
		return source{}, fmt.Errorf("agent %s has neither a Dockerfile nor an image", a.Name)
	}
	if ref := spec.CommittedImage; ref != "" {
		_, err := c.ImageInspect(ctx, ref)
		if err == nil {
			return source{Kind: srcCommitted, Image: ref}, nil, nil
		}
		if !isNotFound(err) {
			return source{}, nil, engineErr(c, "inspect committed image "+ref, err)
		}
		s, ferr := fallback()
		if ferr != nil {
			return source{}, nil, fmt.Errorf("committed image %s is gone and %w", ref, ferr)
		}
		warnings = append(warnings, fmt.Sprintf("committed image %s is gone; falling back to %s", ref, s.describe()))
		return s, warnings, nil
	}
	s, err := fallback()
	return s, warnings, err
}

// checkSource makes sure the files a source needs are there.
func checkSource(s source) error {
	if s.Dockerfile != "" {
		if _, err := os.Stat(s.Dockerfile); err != nil {
			return fmt.Errorf("dockerfile: %w", err)
		}
	}
	if s.ContextDir != "" {
		if err := checkDir("build context", s.ContextDir); err != nil {
			return err
		}
	} else if s.Kind == srcBottleDockerfile || s.Kind == srcAgentDockerfile {
		return errors.New("build context: no context directory for the Dockerfile")
	}
	return nil
}

// Prepare decides the image source and describes the launch. It creates
// nothing.
func (b *Backend) Prepare(ctx context.Context, spec sdk.Spec) (sdk.Plan, error) {
	plan, err := b.prepare(ctx, spec)
	return plan, finish(err)
}

func (b *Backend) prepare(ctx context.Context, spec sdk.Spec) (sdk.Plan, error) {
	set, err := b.checkSpec(spec)
	if err != nil {
		return sdk.Plan{}, fmt.Errorf("prepare %s: %w", spec.Identity, err)
	}
	c, err := b.engine(ctx)
	if err != nil {
		return sdk.Plan{}, fmt.Errorf("prepare %s: %w", spec.Identity, err)
	}
	src, warnings, err := chooseSource(ctx, c, spec)
	if err != nil {
		return sdk.Plan{}, fmt.Errorf("prepare %s: %w", spec.Identity, err)
	}
	if err := checkSource(src); err != nil {
		return sdk.Plan{}, fmt.Errorf("prepare %s: %w", spec.Identity, err)
	}
	pd := planData{Source: src}
	var in internalNet
	if len(spec.Egress) > 0 {
		if _, err := checkEgress(ctx, c, spec, set); err != nil {
			return sdk.Plan{}, fmt.Errorf("prepare %s: %w", spec.Identity, err)
		}
		subnet, err := randomSubnet(set.SubnetPool)
		if err != nil {
			return sdk.Plan{}, fmt.Errorf("prepare %s: %w", spec.Identity, err)
		}
		in = internalNet{subnet: subnet}
		pd.Subnet = subnet.String()
	}
	feat, err := probeEngine(ctx, c)
	if err != nil {
		return sdk.Plan{}, fmt.Errorf("prepare %s: %w", spec.Identity, err)
	}
	if err := feat.checkRuntime(set.Runtime); err != nil {
		return sdk.Plan{}, fmt.Errorf("prepare %s: %w", spec.Identity, err)
	}
	var up userPlan
	if spec.Cwd != "" && !spec.CopyCwd {
		proj, err := projectOwner(spec.Cwd)
		if err != nil {
			return sdk.Plan{}, fmt.Errorf("prepare %s: %w", spec.Identity, err)
		}
		imgUser, known := imageUser(ctx, c, src)
		pd.UserUnknown = !known
		up = planUser(spec.Cwd, proj, spec.Agent.User, imgUser, known, spec.Agent.CapAdd)
		if up.warning != "" {
			warnings = append(warnings, up.warning)
		}
	}
	if !feat.seccomp {
		warnings = append(warnings, "the engine applies no seccomp profile: setuid and setgid file modes are not refused in this bottle")
	}
	data, err := json.Marshal(pd)
	if err != nil {
		return sdk.Plan{}, fmt.Errorf("prepare %s: %w", spec.Identity, err)
	}
	return sdk.Plan{Preflight: preflight(c, spec, set, src, in, feat, up), Warnings: warnings, Data: data}, nil
}

// imageUser is the USER the bottle's image will have, when it can be told
// before a build: a local image's, or the last one its Dockerfile sets.
func imageUser(ctx context.Context, c *client.Client, src source) (string, bool) {
	ref := src.Image
	if src.Kind == srcBottleDockerfile || src.Kind == srcAgentDockerfile {
		text := src.DockerfileText
		if src.Dockerfile != "" {
			b, err := os.ReadFile(src.Dockerfile)
			if err != nil {
				return "", false
			}
			text = string(b)
		}
		user, from, set, ok := dockerfileUser(text)
		if !ok || set {
			return user, ok
		}
		ref = from
	}
	r, err := inspectRef(ctx, c, ref)
	if err != nil {
		return "", false
	}
	return r.User, true
}

func preflight(c *client.Client, spec sdk.Spec, set settings.Settings, src source, in internalNet, feat engineFeatures, up userPlan) []sdk.PreflightLine {
	var lines []sdk.PreflightLine
	add := func(k, v string) { lines = append(lines, sdk.PreflightLine{Key: k, Value: v}) }
	add("backend", "docker ("+c.DaemonHost()+")")
	add("identity", spec.Identity)
	add("container", resourceName(spec.Identity))
	add("image source", src.describe())
	workdir := workdirOf(spec.Agent)
	switch {
	case spec.Cwd != "" && spec.CopyCwd && src.Kind == srcCommitted:
		add("project", "already inside the committed image at "+workdir+" (not copied again)")
	case spec.Cwd != "" && spec.CopyCwd:
		add("project", spec.Cwd+" copied into a per-bottle image layer at "+workdir+" (the host tree is not written)")
	case spec.Cwd != "":
		add("mount", spec.Cwd+" -> "+workdir+" (bind, read-write)")
	}
	if spec.QueueDir != "" {
		add("mount", spec.QueueDir+" -> "+sdk.GuestQueueDir+" (request queue)")
	}
	if spec.HelperBinary != "" {
		add("mount", spec.HelperBinary+" -> "+sdk.GuestHelperPath+" (read-only)")
	}
	if len(spec.Egress) == 0 {
		add("network", "none (loopback only)")
		add("egress", "none (deny all; no network, so an approval applies from the next resume)")
	} else {
		add("network", "internal "+in.subnet.String()+" of its own (or one like it that the home's egress proxy made ahead): the agent at "+in.agentIP().String()+" and the proxy only; no route out")
		add("network", groupOf(set.Labels).outboundName()+" (bridge: the home's egress proxy's way out, shared by its bottles)")
		if len(set.EgressNetworks) > 0 {
			add("network", strings.Join(set.EgressNetworks, ", ")+" (egress_networks: the proxy is on them too)")
		}
		add("egress", "proxy "+in.proxyAddr()+", deny by default")
		add("allowlist", strings.Join(spec.Egress, ", "))
		add("dns", "no resolver that forwards; only the proxy resolves, and only allowed names")
		if spec.EgressLog != "" {
			add("egress audit", "every connection attempt -> "+spec.EgressLog)
		}
		add("tls", "a CA of this bottle's own, made at launch (its key only in the egress proxy), trusted at "+GuestCABundle+
			" (the image's roots plus it; SSL_CERT_FILE, CURL_CA_BUNDLE, REQUESTS_CA_BUNDLE, NODE_EXTRA_CA_CERTS): the proxy terminates TLS only for credential hosts and request rules; other hosts are plain tunnels")
		if len(spec.Agent.Credentials) > 0 {
			add("credentials", "injected by the egress proxy toward their hosts only; the agent, its environment and its image hold placeholders; revoke live with bot-bottle revoke")
		}
	}
	limits := fmt.Sprintf("memory %s, pids %d", set.Memory, set.PidsLimit)
	if set.CPUs > 0 {
		limits += fmt.Sprintf(", cpus %g", set.CPUs)
	}
	add("limits", limits)
	caps := "drop ALL"
	if len(spec.Agent.CapAdd) > 0 {
		caps += ", add " + strings.Join(spec.Agent.CapAdd, " ")
	}
	seccomp := "seccomp: the engine's default, and no setuid/setgid file modes"
	if !feat.seccomp {
		seccomp = "no seccomp (the engine has none)"
	}
	add("security", caps+"; no-new-privileges; not privileged; "+seccomp)
	if weak, _ := set.DangerousAllowed(spec.Agent.CapAdd); len(weak) > 0 {
		add("WEAKENED", "dangerous capabilities "+strings.Join(weak, " ")+" allowed by "+settings.OptIn+" in plugins.hcl: this bottle is not a strong boundary")
	}
	if set.Runtime != "" {
		add("runtime", set.Runtime+" (OCI runtime, from plugins.hcl)")
	} else {
		add("runtime", "the engine's default")
	}
	if feat.init {
		add("init", "the engine's init as PID 1: it reaps orphans and forwards signals")
	} else {
		add("init", "none (the engine has no init binary): the agent is PID 1 and must reap its own children")
	}
	switch {
	case up.line != "":
		add("user", up.line)
	case spec.Agent.User != "":
		add("user", spec.Agent.User)
	default:
		add("user", "the image's own")
	}
	names := make([]string, 0, len(spec.Env))
	for k := range spec.Env {
		names = append(names, k)
	}
	sort.Strings(names)
	if len(names) > 0 {
		add("env", strings.Join(names, " "))
	} else {
		add("env", "(none passed through)")
	}
	return lines
}

func workdirOf(a sdk.Agent) string {
	if a.Workdir != "" {
		return a.Workdir
	}
	return DefaultWorkdir
}
