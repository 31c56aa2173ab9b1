// Package lifecycle implements the bottle flows of DESIGN §4 — start,
// resume, attach, commit, stop, list, prune — on top of the state store, the
// configuration and the plugin host. It owns the preserve/cleanup policy.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/config"
	"github.com/bot-bottle/bot-bottle/internal/pluginhost"
	"github.com/bot-bottle/bot-bottle/internal/state"
	"github.com/bot-bottle/bot-bottle/sdk/host"
)

// Env is everything a flow needs. The CLI builds one per invocation.
type Env struct {
	Home    string
	Store   *state.Store
	Plugins *config.Plugins
	Host    *pluginhost.Host
	In      *os.File  // the user's stdin
	Out     io.Writer // the agent's output goes here
	Err     io.Writer // bot-bottle's own messages
	Getenv  func(string) string
	Now     func() time.Time
	// HelperBinary is the host path of the in-bottle `bottle` helper, or "".
	HelperBinary string
}

func (e *Env) getenv(k string) string {
	if e.Getenv != nil {
		return e.Getenv(k)
	}
	return os.Getenv(k)
}

func (e *Env) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

func (e *Env) say(format string, args ...any) {
	fmt.Fprintf(e.Err, "bot-bottle: "+format+"\n", args...)
}

// Deadlines for calls that must not hang the CLI.
const (
	prepareTimeout = 2 * time.Minute
	stopTimeout    = 2 * time.Minute
	listTimeout    = 10 * time.Second
)

// ExitError carries the agent's exit code out of a flow that otherwise
// succeeded, so the CLI can exit with it.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("agent exited with status %d", e.Code) }

// startPlugin starts backend's plugin and names it in every error.
func (e *Env) startPlugin(ctx context.Context, backend string) (*pluginhost.Plugin, error) {
	if err := state.ValidateName("backend name", backend); err != nil {
		return nil, err
	}
	return e.Host.Start(ctx, backend)
}

// pluginGone reports whether err means the plugin died or stopped answering.
func pluginGone(err error) bool { return errors.Is(err, host.ErrPluginGone) }
