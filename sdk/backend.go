package sdk

import (
	"context"
	"fmt"
)

// Backend is what every backend plugin implements. Embed
// UnimplementedBackend so that methods added to later API versions do not
// break your build.
type Backend interface {
	// Info describes the plugin; it must be cheap and must not block on the
	// backend's runtime being reachable.
	Info(ctx context.Context) (Info, error)
	// Prepare resolves what Launch will do, without side effects the
	// operator did not approve.
	Prepare(ctx context.Context, spec Spec) (Plan, error)
	// Launch creates the bottle for spec.Command (building or fetching its
	// image, reporting progress) and returns a handle to it. With
	// spec.Detach the agent is started before Launch returns; otherwise a
	// backend may leave it created and start it at the first Attach, so that
	// none of its output is lost. Launch must be safe to abandon midway:
	// Stop by identity removes whatever it created. Of plan, only Data
	// comes back from Prepare (possibly to another plugin process): put in
	// it whatever Launch needs.
	Launch(ctx context.Context, spec Spec, plan Plan, progress func(Progress)) (Handle, error)
	// Attach connects the caller's streams to the agent (starting it if
	// Launch left it created) until it exits, and returns its exit code. When
	// ctx is cancelled the caller has detached: return ExitStatus{Detached:
	// true} and leave the agent running. req.TTY, not the Spec's, says whether
	// this session has a terminal (see Spec.TTY).
	Attach(ctx context.Context, req AttachRequest, streams AttachStreams) (ExitStatus, error)
	// Stop removes every resource the bottle has (never committed snapshots)
	// and returns a short name of each resource it removed, which the core
	// shows the operator. It succeeds, returning none, when there is nothing
	// left to remove.
	Stop(ctx context.Context, req StopRequest) ([]string, error)
	// List returns the bottles this backend has in this home (HomeID),
	// including ones the core has no record of (a crash), so that prune can
	// find them.
	List(ctx context.Context) ([]Bottle, error)
}

// Committer is implemented by backends with CapCommit. Commit snapshots the
// bottle so that a resume starts from it; snapshotDir is
// a per-bottle host directory (Spec.SnapshotDir) for backends whose
// snapshots are files. See CommitResult for who removes snapshots, and
// Spec.Env for keeping secrets out of them.
type Committer interface {
	Commit(ctx context.Context, h Handle, snapshotDir string) (CommitResult, error)
}

// Execer is implemented by backends with CapExec. See ExecRequest and
// ExecResult for what a not-running bottle, stdin and errors mean.
type Execer interface {
	Exec(ctx context.Context, req ExecRequest) (ExecResult, error)
}

// Copier is implemented by backends with CapCopy. Archives are tar streams.
type Copier interface {
	CopyIn(ctx context.Context, h Handle, path string, tar []byte) error
	CopyOut(ctx context.Context, h Handle, path string) ([]byte, error)
}

// EgressUpdater is implemented by backends with CapLiveEgress: it replaces
// a running bottle's allowlist with egress, effective for new connections
// at once.
type EgressUpdater interface {
	UpdateEgress(ctx context.Context, h Handle, egress []string) error
}

// QueueSyncer is implemented by backends with CapQueueSync, whose bottles
// cannot share Spec.QueueDir with the host. SyncQueue moves the requests the
// bottle wrote since the last sync into queueDir's inbox on the host, and
// the host's decisions (queueDir's decided files) into the bottle, where the
// agent can read but not write them. It must be idempotent and safe to run
// from two processes at once: a request's file name is its token, so a file
// copied twice is one request, and a decision is written once on the host.
// The core calls it before it reads a bottle's queue and after it writes a
// decision, with a bounded context; a bottle that is not running is an
// error wrapping ErrNotFound.
type QueueSyncer interface {
	SyncQueue(ctx context.Context, h Handle, queueDir string) error
}

// UnimplementedBackend answers every optional method with ErrNotSupported.
// Embed it in your backend type.
type UnimplementedBackend struct{}

func (UnimplementedBackend) Commit(context.Context, Handle, string) (CommitResult, error) {
	return CommitResult{}, fmt.Errorf("commit: %w", ErrNotSupported)
}

func (UnimplementedBackend) Exec(context.Context, ExecRequest) (ExecResult, error) {
	return ExecResult{}, fmt.Errorf("exec: %w", ErrNotSupported)
}

func (UnimplementedBackend) CopyIn(context.Context, Handle, string, []byte) error {
	return fmt.Errorf("copy in: %w", ErrNotSupported)
}

func (UnimplementedBackend) CopyOut(context.Context, Handle, string) ([]byte, error) {
	return nil, fmt.Errorf("copy out: %w", ErrNotSupported)
}

func (UnimplementedBackend) RevokeCredential(context.Context, Handle, string) error {
	return fmt.Errorf("revoke credential: %w", ErrNotSupported)
}

func (UnimplementedBackend) UpdateEgress(context.Context, Handle, []string) error {
	return fmt.Errorf("update egress: %w", ErrNotSupported)
}

func (UnimplementedBackend) SyncQueue(context.Context, Handle, string) error {
	return fmt.Errorf("sync queue: %w", ErrNotSupported)
}
