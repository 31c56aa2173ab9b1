package backend

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/client"

	"github.com/bot-bottle/bot-bottle/plugins/docker/internal/settings"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// Launch creates the bottle: image, network and container. The container is
// started only with spec.Detach; otherwise the first Attach starts it so that
// none of its output is lost. A failed or cancelled launch removes what it
// created; Stop by identity removes anything a crash left behind.
func (b *Backend) Launch(ctx context.Context, spec sdk.Spec, plan sdk.Plan, progress func(sdk.Progress)) (sdk.Handle, error) {
	if progress == nil {
		progress = func(sdk.Progress) {}
	}
	h, err := b.launch(ctx, spec, plan, progress)
	if err != nil {
		return sdk.Handle{}, finish(fmt.Errorf("launch %s: %w", spec.Identity, err))
	}
	return h, nil
}

func (b *Backend) launch(ctx context.Context, spec sdk.Spec, plan sdk.Plan, progress func(sdk.Progress)) (h sdk.Handle, err error) {
	set, err := b.checkSpec(spec)
	if err != nil {
		return h, err
	}
	defer b.inflight(spec.Identity)()
	tm := newSteps()
	c, err := b.engine(ctx)
	if err != nil {
		return h, err
	}
	// The plan may be old: take the source again and say so when it moved.
	src, warnings, err := chooseSource(ctx, c, spec)
	if err != nil {
		return h, err
	}
	for _, w := range warnings {
		progress(sdk.Progress{Stage: StageImage, Message: "warning: " + w})
	}
	var pd planData
	if len(plan.Data) > 0 && json.Unmarshal(plan.Data, &pd) != nil {
		pd = planData{}
	}
	if pd.Source.Kind != "" && pd.Source.Kind != src.Kind {
		progress(sdk.Progress{Stage: StageImage, Message: "image source changed since prepare: now " + src.describe()})
	}
	if err := checkSource(src); err != nil {
		return h, err
	}
	tm.mark("source")

	launchID, err := randomID()
	if err != nil {
		return h, err
	}
	labels := labelsFor(spec.Identity, spec.Agent.Name, launchID, set.Labels)
	data := handleData{Agent: spec.Agent.Name, Labels: set.Labels}
	defer func() {
		if err != nil {
			b.rollback(c, spec.Identity, launchID, data)
		}
	}()

	img, err := b.resolveImage(ctx, c, spec, src, set.Labels, progress)
	if err != nil {
		return h, err
	}
	// Before the project owner's layer: the image's own user, which an
	// approved RUN is switched back to.
	imageUser := img.User
	if imageUser == "" {
		imageUser = "root"
	}
	tm.mark("image")
	feat, err := probeEngine(ctx, c)
	if err != nil {
		return h, err
	}
	tm.mark("engine-info")
	hard, err := hardeningFor(feat)
	if err != nil {
		return h, err
	}
	// A bind-mounted project: the image's non-root user takes its owner's
	// ids, so that the agent can write it and what it writes is the
	// owner's. Never root's: a root-owned project keeps the image's user.
	asUser := ""
	if spec.Cwd != "" && !spec.CopyCwd && spec.Agent.User == "" {
		proj, err := projectOwner(spec.Cwd)
		if err != nil {
			return h, err
		}
		switch {
		case isRootUser(img.User):
			if pd.UserUnknown {
				progress(sdk.Progress{Stage: StageImage, Message: "warning: " + rootWarning(spec.Cwd, spec.Agent.CapAdd)})
			}
		case proj.uid != 0:
			if img, asUser, err = b.remapUser(ctx, c, spec, img, proj, set.Labels, labels, progress); err != nil {
				return h, err
			}
		}
	}
	user := spec.Agent.User
	if user == "" {
		user = img.User
	}
	if asUser != "" {
		user = asUser
	}
	if spec.Cwd != "" && spec.CopyCwd && src.Kind != srcCommitted {
		derived, err := b.buildDerived(ctx, c, spec, img, user, labels, progress)
		if err != nil {
			return h, err
		}
		data.Images = append(data.Images, derived.ID)
		img = derived
	}

	// Creation calls run to completion even when ctx is cancelled: a cancelled
	// request may still create the resource on the engine's side, after a
	// rollback looked for it. They are short; ctx is checked between them.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	name := resourceName(spec.Identity)
	if err := ctx.Err(); err != nil {
		return h, err
	}
	ctLabels := map[string]string{LabelImage: img.Name}
	for k, v := range labels {
		ctLabels[k] = v
	}
	hard.user = spec.Agent.User
	if asUser != "" {
		hard.user = asUser
	}
	cfg, hc := containerConfig(spec, set, img, ctLabels, hard)
	tm.mark("config")
	// Deny-by-default at its cheapest and strictest: with no egress allowed
	// the bottle gets no network at all, only loopback (and no DNS). A
	// bottle with an allowlist reaches out only through its egress proxy
	// (see egress.go).
	hc.NetworkMode = container.NetworkMode("none")
	var created container.CreateResponse
	var caPEM, roots []byte
	var caf caFiles
	rootsKnown := false
	if len(spec.Egress) > 0 {
		// The rules, and the bottle's new CA and credentials
		// (credentials.go); the CA's files, with the bundle when the
		// image's roots are known already (otherwise they are read from
		// the created container before it starts).
		var rules []byte
		if rules, caPEM, err = addInput(spec, set); err != nil {
			return h, err
		}
		if caf, err = caFilesFor(spec.Identity, launchID); err != nil {
			return h, err
		}
		roots, rootsKnown = cachedRoots(img.ID)
		if err := caf.write(caPEM, roots, rootsKnown); err != nil {
			return h, err
		}
		hc.Mounts = append(hc.Mounts, caf.mounts()...)
		cfg.Env = caEnv(cfg.Env)
		tm.mark("egress-ca")
		// The agent's container is made on a network while the proxy
		// takes one (launchEgress), and again if it took another.
		create := func(p pooled) (container.CreateResponse, error) {
			ecfg, ehc := *cfg, *hc
			ecfg.Env = slices.Clone(cfg.Env)
			ecfg.Labels = maps.Clone(cfg.Labels)
			// A Stop without the handle finds the bottle's proxy by it.
			ecfg.Labels[LabelProxy] = data.ProxyName
			netCfg := agentEgress(c, &ecfg, &ehc, p.id, p.in)
			made, err := c.ContainerCreate(cctx, &ecfg, &ehc, netCfg, nil, name)
			if err != nil {
				return made, engineErr(c, "create container "+name, err)
			}
			return made, nil
		}
		// The agent may start (here or at its first Attach) only once its
		// proxy listens: launchEgress returns once it does.
		if created, err = b.launchEgress(ctx, cctx, c, spec, set, pd.subnet(), rules, &data, tm, progress, create); err != nil {
			return h, err
		}
	} else if created, err = c.ContainerCreate(cctx, cfg, hc, nil, nil, name); err != nil {
		return h, engineErr(c, "create container "+name, err)
	}
	data.Container, data.Name = created.ID, name
	tm.mark("create")
	if caPEM != nil && !rootsKnown {
		if roots, err = readImageRoots(cctx, c, created.ID); err != nil {
			return h, err
		}
		if err := caf.writeBundle(caPEM, roots); err != nil {
			return h, err
		}
		storeRoots(img.ID, roots)
		tm.mark("image-roots")
	}
	for _, w := range created.Warnings {
		if len(spec.Egress) > 0 && strings.Contains(w, "Localhost DNS") {
			continue // on purpose: the agent's resolver must forward nowhere
		}
		b.log.Warn("engine warning", "container", name, "warning", w)
	}
	progress(sdk.Progress{Stage: StageContainer, Message: "created container " + name, ID: created.ID})

	if spec.Detach {
		if err := c.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
			return h, engineErr(c, "start container "+name, err)
		}
		progress(sdk.Progress{Stage: StageStart, Message: "started " + name, ID: created.ID})
		tm.mark("start")
	}
	// A caller that gave up meanwhile gets no handle: the bottle goes.
	if err := ctx.Err(); err != nil {
		return h, err
	}
	tm.log(b.log, "launch timing", "identity", spec.Identity)
	if h, err = encodeHandle(spec.Identity, data); err != nil {
		return h, err
	}
	h.ImageUser = imageUser
	return h, nil
}

// hardening is what containerConfig adds that depends on the engine and the
// image, not on the spec alone.
type hardening struct {
	// user overrides the image's USER ("": the image's own).
	user string
	// init runs the engine's init as PID 1, to reap and forward signals.
	init bool
	// seccomp is a whole seccomp profile ("": the engine's default).
	seccomp string
}

// hardeningFor is the init and seccomp profile the engine allows.
func hardeningFor(f engineFeatures) (hardening, error) {
	h := hardening{init: f.init}
	if f.seccomp {
		p, err := noSetidProfile()
		if err != nil {
			return h, err
		}
		h.seccomp = string(p)
	}
	return h, nil
}

// containerConfig is the hardened container for spec: no privileges, no
// capabilities but the agent's named ones, no-new-privileges, no setuid or
// setgid file mode (seccomp), an init as PID 1, memory and pids limits, and
// no host path but the project, the queue dir and the helper.
func containerConfig(spec sdk.Spec, set settings.Settings, img imageRef, labels map[string]string, hard hardening) (*container.Config, *container.HostConfig) {
	env := make([]string, 0, len(spec.Env)+4)
	for k, v := range spec.Env {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	env = append(env, sdk.EnvIdentity+"="+spec.Identity)
	// No allowlist is no network at all (see Launch); one goes through the
	// proxy (agentEgress).
	if len(spec.Egress) == 0 {
		env = append(env, sdk.EnvEgress+"="+sdk.EgressOff)
	} else {
		env = append(env, sdk.EnvEgress+"="+sdk.EgressProxy)
	}
	var mounts []mount.Mount
	workdir := spec.Agent.Workdir
	if spec.Cwd != "" {
		workdir = workdirOf(spec.Agent)
		if !spec.CopyCwd {
			mounts = append(mounts, mount.Mount{Type: mount.TypeBind, Source: spec.Cwd, Target: workdir})
		}
	}
	if spec.QueueDir != "" {
		// Read-only but for the inbox: a bottle can ask, never decide.
		mounts = append(mounts, mount.Mount{Type: mount.TypeBind, Source: spec.QueueDir, Target: sdk.GuestQueueDir, ReadOnly: true})
		if inbox := filepath.Join(spec.QueueDir, sdk.QueueInbox); isDir(inbox) {
			mounts = append(mounts, mount.Mount{Type: mount.TypeBind, Source: inbox, Target: path.Join(sdk.GuestQueueDir, sdk.QueueInbox)})
		}
		env = append(env, sdk.EnvQueueDir+"="+sdk.GuestQueueDir)
	}
	if spec.HelperBinary != "" {
		mounts = append(mounts, mount.Mount{Type: mount.TypeBind, Source: spec.HelperBinary, Target: sdk.GuestHelperPath, ReadOnly: true})
	}
	if _, ok := spec.Env["TERM"]; spec.TTY && !ok {
		env = append(env, "TERM=xterm-256color")
	}
	cfg := &container.Config{
		Image:        img.ID,
		Hostname:     spec.Identity,
		Env:          env,
		WorkingDir:   workdir,
		User:         hard.user,
		Tty:          spec.TTY,
		OpenStdin:    true,
		AttachStdin:  true,
		AttachStdout: true,
		AttachStderr: true,
		// Without a terminal, closing the attached stdin must reach the
		// agent as EOF, as it does for `docker run -i`.
		StdinOnce: !spec.TTY,
		Labels:    labels,
	}
	if len(spec.Command) > 0 {
		cfg.Cmd = spec.Command
	}
	pids := set.PidsLimit
	secOpt := []string{"no-new-privileges"}
	if hard.seccomp != "" {
		secOpt = append(secOpt, "seccomp="+hard.seccomp)
	}
	init := hard.init
	hc := &container.HostConfig{
		Mounts:      mounts,
		Privileged:  false,
		CapDrop:     []string{"ALL"},
		CapAdd:      spec.Agent.CapAdd,
		SecurityOpt: secOpt,
		Init:        &init,
		Runtime:     set.Runtime,
		Resources: container.Resources{
			Memory:    set.MemoryBytes,
			PidsLimit: &pids,
			NanoCPUs:  set.NanoCPUs,
		},
	}
	return cfg, hc
}

// rollback removes what the launch launchID created, and has the shared
// proxy forget the bottle (data says which). It runs after the caller may
// have given up, so it has its own deadline.
func (b *Backend) rollback(c *client.Client, identity, launchID string, data handleData) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The agent's container first: its network goes back to the proxy's
	// pool with the forget.
	f := filters.NewArgs(filters.Arg("label", LabelLaunch+"="+launchID))
	removed, err := removeMatching(ctx, c, f, true, handleData{})
	if err == nil {
		if cerr := removeCAFiles(identity, launchID); cerr != nil {
			b.log.Warn("could not remove a failed launch's CA files", "identity", identity, "error", cerr)
		}
	}
	if data.Shared && data.Proxy != "" && err == nil {
		forgot, left, ferr := forgetBottle(ctx, c, data.Proxy, identity)
		if ferr != nil {
			b.log.Warn("the egress proxy could not let a failed launch's bottle go", "identity", identity, "error", ferr)
		}
		if forgot && left == 0 {
			more, err := servedNobody(ctx, c, data.Proxy, b.keepProxy())
			removed = append(removed, more...)
			if err != nil {
				b.log.Warn("could not remove the idle egress proxy; prune removes it", "error", err)
			}
		}
	}
	if err != nil {
		b.log.Warn("could not remove what a failed launch created; stop the bottle to retry", "identity", identity, "error", err)
	}
	if len(removed) > 0 {
		b.log.Info("removed what a failed launch created", "identity", identity, "removed", strings.Join(removed, ", "))
	}
}

func randomID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random launch id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}
