// Package lifecycle is the bottle's state machine and the flows on it —
// start, resume, attach, commit, stop, rm, revert, list, prune, approve —
// on top of the state store, the configuration and the plugin host.
//
// Transition (machine.go) is the machine: from a phase (new, resuming,
// running, stopped, removed) and the kept mark, an event (launched,
// launch-failed, exited, stop, stop-preserve, commit, capability, resume,
// revert, orphaned, rm, …) leads to an outcome or is refused. apply carries
// an outcome out and is the only code that deletes a bottle's state. Kept
// means kept until rm; a failed resume keeps the bottle as it was.
// ARCHITECTURE.md draws the machine. Flows tell the operator what happens
// through typed Notices, which the CLI and the dashboard render.
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
	// Backends starts the backends flows use; nil means Host. Tests give
	// in-process backends here.
	Backends Backends
	In       *os.File  // the user's stdin
	Out      io.Writer // the agent's output goes here
	Err      io.Writer // bot-bottle's own messages
	Getenv   func(string) string
	Now      func() time.Time
	// HelperBinary is the host path of the in-bottle `bottle` helper, or "".
	HelperBinary string
	// Notify receives what flows tell the operator; nil prints each notice
	// as a line on Err.
	Notify func(Notice)

	// retries is when this process may next try to finish each held
	// approval whose carrying out failed (finishHeld).
	retries heldRetries
}

// lookupEnv is the one way a flow reads the host's environment (the
// variables an agent passes through, credentials, the core's own knobs):
// Getenv when it is set (the dashboard's, a test's), which cannot tell an
// empty variable from an unset one, so both read as unset; else the
// process's.
func (e *Env) lookupEnv(k string) (string, bool) {
	if e.Getenv != nil {
		v := e.Getenv(k)
		return v, v != ""
	}
	return os.LookupEnv(k)
}

// getenv is lookupEnv's value, "" when unset.
func (e *Env) getenv(k string) string {
	v, _ := e.lookupEnv(k)
	return v
}

func (e *Env) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
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
	return e.backends().Start(ctx, backend)
}

// Backends starts backend plugins by name and finds the installed ones;
// *pluginhost.Host is the real one.
type Backends interface {
	Start(ctx context.Context, name string) (*pluginhost.Plugin, error)
	Discover() ([]pluginhost.Found, []error)
}

func (e *Env) backends() Backends {
	if e.Backends != nil {
		return e.Backends
	}
	return e.Host
}

// pluginGone reports whether err means the plugin died or stopped answering.
func pluginGone(err error) bool { return errors.Is(err, host.ErrPluginGone) }
