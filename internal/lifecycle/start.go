package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/audit"
	"github.com/bot-bottle/bot-bottle/internal/config"
	"github.com/bot-bottle/bot-bottle/internal/pluginhost"
	"github.com/bot-bottle/bot-bottle/internal/state"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// StartOptions are the user's choices for `bot-bottle start`.
type StartOptions struct {
	Agent   string
	Cwd     string
	CopyCwd bool
	Backend string // the --backend flag, or ""
	Detach  bool
	Command []string // after `--`, or nil for the agent's command
	// Review gives the bottle its own clone of Cwd's repository, on the
	// branch bot-bottle/<identity> from From ("" for HEAD), its commits
	// by Author ("Name <email>"; "" says the bottle).
	Review bool
	From   string
	Author string
}

// Start launches a new bottle and, unless detached, attaches to it. The
// returned code is the agent's exit code.
func (e *Env) Start(ctx context.Context, o StartOptions) (int, error) {
	if err := state.ValidateName("agent name", o.Agent); err != nil {
		return 0, err
	}
	agent, err := e.loadAgent(o.Agent)
	if err != nil {
		return 0, err
	}
	cwd, err := resolveCwd(o.Cwd, o.CopyCwd)
	if err != nil {
		return 0, err
	}
	rv, err := reviewProject(ctx, o, cwd, e.Store.Within)
	if err != nil {
		return 0, err
	}
	backend := config.ResolveBackend(o.Backend, e.getenv("BOT_BOTTLE_BACKEND"), e.Plugins)
	// The plugin starts before anything is written, so a missing or
	// tampered plugin leaves no trace in the state dir.
	p, err := e.startPlugin(ctx, backend)
	if err != nil {
		return 0, err
	}
	defer p.Close()

	// Minted with its lock held, so that no prune or second process can
	// touch the bottle between its birth and its launch.
	id, unlock, err := e.Store.MintLocked(agent.Name, e.identityTaken)
	if err != nil {
		return 0, fmt.Errorf("mint identity: %w", err)
	}
	defer unlock()
	meta := state.Metadata{
		SchemaVersion: state.SchemaVersion,
		Identity:      id,
		AgentName:     agent.Name,
		Cwd:           cwd,
		CopyCwd:       o.CopyCwd,
		StartedAt:     e.now().UTC().Format(time.RFC3339),
		Backend:       backend,
		Egress:        agent.Egress,
	}
	if rv != nil {
		meta.Review = &state.Review{Repo: rv.project.Top, Base: rv.project.Base}
	}
	b := &bottle{rec: &state.Record{Meta: meta}, phase: PhaseNew, agent: agent}
	if err := e.Store.WriteMetadata(meta); err != nil {
		_, _ = e.apply(b, EvLaunchFailed, nil)
		return 0, err
	}
	if rv != nil {
		if err := e.createClone(ctx, meta, rv); err != nil {
			_, _ = e.apply(b, EvLaunchFailed, nil)
			return 0, err
		}
	}
	e.halt(HaltMinted)
	cmd := o.Command
	if len(cmd) == 0 {
		cmd = agent.Command
	}
	return e.session(ctx, session{b: b, meta: meta, agent: agent, plugin: p, command: cmd, detach: o.Detach})
}

// ResumeOptions are the user's choices for `bot-bottle resume`.
type ResumeOptions struct {
	Detach  bool
	Command []string
}

// Resume relaunches a kept bottle with the same identity, cwd, copy_cwd and
// the backend recorded in its metadata — never the current default.
func (e *Env) Resume(ctx context.Context, id string, o ResumeOptions) (int, error) {
	if _, err := e.readMeta(id); err != nil {
		return 0, err
	}
	unlock, err := e.Store.Lock(id)
	if err != nil {
		return 0, err
	}
	defer unlock()
	b, err := e.load(id)
	if err != nil {
		return 0, err
	}
	if b.phase == PhaseRunning && b.rec.Detached {
		return 0, fmt.Errorf("resume %s: it is running detached; attach to it (bot-bottle attach %s) or stop it first", id, id)
	}
	meta := b.rec.Meta
	agent, err := e.loadAgent(meta.AgentName)
	if err != nil {
		return 0, fmt.Errorf("resume %s: %w", id, err)
	}
	if meta.Review != nil {
		if _, err := e.reviewBottle(meta); err != nil {
			return 0, fmt.Errorf("resume %s: %w", id, err)
		}
	} else if meta.Cwd != "" {
		if _, err := resolveCwd(meta.Cwd, meta.CopyCwd); err != nil {
			return 0, fmt.Errorf("resume %s: recorded project: %w", id, err)
		}
	}
	p, err := e.startPlugin(ctx, meta.Backend)
	if err != nil {
		return 0, fmt.Errorf("resume %s: %w", id, err)
	}
	defer p.Close()
	b.agent = agent
	if b.phase == PhaseRunning {
		// A launch that no process holds and that was not detached: what a
		// killed session left. Close it first.
		if _, err := e.apply(b, EvOrphaned, p); err != nil {
			return 0, fmt.Errorf("resume %s: %w", id, err)
		}
	}
	if err := e.clearLeftovers(ctx, p, id); err != nil {
		return 0, err
	}
	if _, err := e.apply(b, EvResume, nil); err != nil {
		return 0, err
	}
	cmd := o.Command
	if len(cmd) == 0 {
		cmd = agent.ResumeCommand
	}
	return e.session(ctx, session{b: b, meta: meta, agent: agent, plugin: p, command: cmd, detach: o.Detach, resume: true})
}

func (e *Env) readMeta(id string) (state.Metadata, error) {
	if err := state.ValidateIdentity(id); err != nil {
		return state.Metadata{}, err
	}
	return e.Store.ReadMetadata(id)
}

func resolveCwd(cwd string, copyCwd bool) (string, error) {
	if cwd == "" {
		if copyCwd {
			return "", errors.New("--copy-cwd needs --cwd DIR")
		}
		return "", nil
	}
	abs, err := filepath.Abs(cwd)
	if err != nil {
		return "", fmt.Errorf("--cwd %s: %w", cwd, err)
	}
	abs, err = filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("--cwd %s: %w", cwd, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("--cwd %s: %w", cwd, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("--cwd %s: not a directory", cwd)
	}
	return abs, nil
}

// tty decides whether the agent gets a terminal: when the operator is on
// one, and always for a detached bottle, which a later attach from a
// terminal expects to find on one (as `docker run -dit` does).
func (s session) tty(e *Env) bool { return s.detach || isTerminal(e.In) }

// session is one launch of a bottle, from Prepare to cleanup.
type session struct {
	b       *bottle
	meta    state.Metadata
	agent   *config.Agent
	plugin  *pluginhost.Plugin
	command []string
	detach  bool
	resume  bool
}

func (e *Env) buildSpec(s session) (sdk.Spec, error) {
	id := s.meta.Identity
	a := s.agent
	spec := sdk.Spec{
		Identity: id,
		Agent: sdk.Agent{
			Name: a.Name, Description: a.Description, Dockerfile: a.Dockerfile, ContextDir: a.ContextDir,
			Image: a.Image, Command: a.Command, ResumeCommand: a.ResumeCommand, Workdir: a.Workdir,
			EnvNames: a.Env, TranscriptPath: a.TranscriptPath, Egress: a.Egress, CapAdd: a.CapAdd, User: a.User,
		},
		Cwd:          s.meta.Cwd,
		CopyCwd:      s.meta.CopyCwd,
		Egress:       s.meta.Egress,
		Command:      s.command,
		TTY:          s.tty(e),
		Resume:       s.resume,
		Detach:       s.detach,
		HelperBinary: e.HelperBinary,
		Env:          map[string]string{},
	}
	if s.meta.Review != nil {
		// The bottle's project is its clone, never the operator's tree.
		rb, err := e.reviewBottle(s.meta)
		if err != nil {
			return sdk.Spec{}, err
		}
		spec.Cwd = rb.CloneDir()
	}
	if df, ok := e.Store.DockerfilePath(id); ok && s.b.rec.Dockerfile != nil {
		spec.BottleDockerfile = df
	}
	spec.CommittedImage = s.b.rec.CommittedImage
	var err error
	if spec.SnapshotDir, err = e.Store.SnapshotDir(id); err != nil {
		return sdk.Spec{}, err
	}
	if spec.QueueDir, err = e.queueDir(id); err != nil {
		return sdk.Spec{}, err
	}
	// Only a backend that reports connection attempts gets a log to append
	// them to (sdk.CapEgressAudit).
	if s.plugin != nil && s.plugin.Info.Has(sdk.CapEgressAudit) {
		if spec.EgressLog, err = audit.Open(e.Home).EgressPath(id); err != nil {
			return sdk.Spec{}, err
		}
	}
	var missing []string
	for _, name := range a.Env {
		if v, ok := e.lookupEnv(name); ok {
			spec.Env[name] = v
		} else {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		e.warn("%s not set on this host; the agent starts without it", strings.Join(missing, ", "))
	}
	return spec, nil
}

// clearLeftovers removes what a crashed session of id left behind, which
// would collide with the new launch. A clean end leaves no handle and
// nothing behind; a Stop by identity alone can be slow, so it is only asked
// for when the backend still lists the bottle.
func (e *Env) clearLeftovers(ctx context.Context, p *pluginhost.Plugin, id string) error {
	sctx, cancel := context.WithTimeout(ctx, stopTimeout)
	defer cancel()
	h, _ := e.Store.ReadHandle(id)
	if h == nil {
		bs, err := p.Backend.List(sctx)
		if err != nil {
			return p.Wrap(fmt.Errorf("clear leftovers of %s: %w", id, err))
		}
		found := false
		for _, b := range bs {
			if b.Identity == id {
				found, h = true, b.Handle
			}
		}
		if !found {
			return nil
		}
	}
	if _, err := p.Backend.Stop(sctx, sdk.StopRequest{Handle: h, Identity: id}); err != nil {
		return p.Wrap(fmt.Errorf("clear leftovers of %s: %w", id, err))
	}
	return nil
}
