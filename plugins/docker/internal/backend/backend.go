// Package backend is bot-bottle's Docker backend: it turns an sdk.Spec into a
// hardened container on its own network, and attaches to, snapshots and
// removes it through the Docker Engine API. Everything it needs between calls
// travels in the sdk.Handle, so any plugin process can drive any bottle.
package backend

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/docker/docker/client"
	"log/slog"

	"github.com/bot-bottle/bot-bottle/plugins/docker/internal/settings"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// Name is the backend's name in handles, metadata and plugins.hcl.
const Name = "docker"

// HandleVersion is the version of the handle Data layout below.
const HandleVersion = 1

// Backend implements sdk.Backend, Committer, Execer, Copier and
// EgressUpdater on the Docker Engine.
type Backend struct {
	sdk.UnimplementedBackend
	log     *slog.Logger
	version string
	// set is the plugin's config block (plugins.hcl), parsed once: the core
	// gives it in the environment at exec, so it cannot change while the
	// process runs. setErr says why it does not parse; every launch
	// refuses with it.
	set    settings.Settings
	setErr error

	mu     sync.Mutex
	cli    *client.Client
	pinged bool
	// launches are the launches in progress in this process, by identity,
	// so that a Stop right after a cancelled Launch waits for its rollback
	// instead of racing it.
	launches map[string][]chan struct{}
	// refilling are the shared proxies whose network pool this process is
	// refilling (replenish).
	refilling map[string]bool
	// roots are the host's trusted roots for the proxy image (proxyimage.go).
	roots rootsMemo
}

var (
	_ sdk.Backend       = (*Backend)(nil)
	_ sdk.Committer     = (*Backend)(nil)
	_ sdk.Execer        = (*Backend)(nil)
	_ sdk.Copier        = (*Backend)(nil)
	_ sdk.EgressUpdater = (*Backend)(nil)
)

// New returns a backend that logs to log and reports version in Info. It
// does not contact the engine until a call needs it.
func New(log *slog.Logger, version string) *Backend {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	set, err := settings.Parse(sdk.PluginConfig())
	return &Backend{log: log, version: version, set: set, setErr: err}
}

// client returns the engine client, creating it on first use. Creating it
// does not connect.
func (b *Backend) client() (*client.Client, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cli == nil {
		c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
		if err != nil {
			return nil, fmt.Errorf("docker client: %w", err)
		}
		b.cli = c
	}
	return b.cli, nil
}

// engine returns a client whose engine answered a ping, so that a missing
// engine is reported once, clearly, instead of as the first failing call.
func (b *Backend) engine(ctx context.Context) (*client.Client, error) {
	c, err := b.client()
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	ok := b.pinged
	b.mu.Unlock()
	if ok {
		return c, nil
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := c.Ping(pctx); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("cannot reach the Docker Engine at %s: %s", c.DaemonHost(), oneLine(err.Error()))
	}
	b.mu.Lock()
	b.pinged = true
	b.mu.Unlock()
	return c, nil
}

// Info describes the plugin. It never fails because the engine is down: the
// engine's version is a detail shown when it answers quickly.
func (b *Backend) Info(ctx context.Context) (sdk.Info, error) {
	info := sdk.Info{
		Name:         Name,
		Version:      b.version,
		APIVersions:  []string{sdk.APIVersion},
		Capabilities: []sdk.Capability{sdk.CapCommit, sdk.CapExec, sdk.CapCopy, sdk.CapLiveEgress, sdk.CapEgressAudit, sdk.CapCredentials},
		Details:      map[string]string{},
	}
	c, err := b.client()
	if err != nil {
		info.Details["engine"] = "unavailable: " + oneLine(err.Error())
		return info, nil
	}
	info.Details["engine_host"] = c.DaemonHost()
	vctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	v, err := c.ServerVersion(vctx)
	if err != nil {
		info.Details["engine"] = "unreachable"
		return info, nil
	}
	info.Details["engine"] = v.Version
	info.Details["engine_api"] = v.APIVersion
	return info, nil
}

// inflight records a launch of identity until the returned func is called.
func (b *Backend) inflight(identity string) func() {
	done := make(chan struct{})
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.launches == nil {
		b.launches = map[string][]chan struct{}{}
	}
	b.launches[identity] = append(b.launches[identity], done)
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		close(done)
		list := b.launches[identity]
		for i, ch := range list {
			if ch == done {
				list = append(list[:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(b.launches, identity)
		} else {
			b.launches[identity] = list
		}
	}
}

// waitLaunches waits until the launches of identity in progress in this
// process have ended, or ctx ends.
func (b *Backend) waitLaunches(ctx context.Context, identity string) error {
	b.mu.Lock()
	pending := append([]chan struct{}(nil), b.launches[identity]...)
	b.mu.Unlock()
	for _, ch := range pending {
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
