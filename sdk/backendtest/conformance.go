package backendtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/host"
)

// Harness is what RunConformance needs from a backend's test.
type Harness struct {
	// New returns the backend under test: Start for a plugin binary,
	// InProcess for an implementation. The suite calls it more than once,
	// because a handle from one plugin process must drive the bottle from a
	// fresh one; return a new process or server each time.
	New func(t testing.TB) sdk.Backend
	// Agent is launched for every check; its Command is replaced. Its image
	// must have a POSIX sh, cat, echo, sleep and stty.
	Agent sdk.Agent
	// Spec, when set, adjusts every spec before Prepare (mounts, env…).
	Spec func(*sdk.Spec)
	// Timeout bounds each check (default 2 minutes).
	Timeout time.Duration
	// Leftovers, when set, lists what the backend's runtime still holds for
	// an identity (containers, networks, volumes, files, processes). After
	// Stop it must list nothing. Without it only List is checked.
	Leftovers func(ctx context.Context, identity string) ([]string, error)
	// RemoveSnapshot, when set, removes what a Commit made; Stop never does,
	// by contract, so the suite calls it when a commit check ends.
	RemoveSnapshot func(ctx context.Context, image string) error

	// What the backend declares it does for the user; each item that
	// depends on a declaration is skipped without it.

	// Project: Spec.Cwd is mounted read-write at the agent's workdir, the
	// agent starts there, and with CopyCwd it is copied (the host tree is
	// never written).
	Project bool
	// ProjectUID, when set, owns the project directory (when the suite runs
	// as root, which alone can give it away): for a backend whose runtime is not the
	// user (a root daemon), a user's project is not root's, and rarely
	// uid 1000.
	ProjectUID int
	// SnapshotContains reports whether the snapshot ref (a CommitResult.Image)
	// holds needle anywhere, its config and its layers: the suite looks for
	// a passed-through secret in it. It wraps sdk.ErrNotFound when ref does
	// not exist, which is how the suite sees a snapshot removed. Required
	// with commit.
	SnapshotContains func(ctx context.Context, ref, needle string) (bool, error)
	// SnapshotFiles: the backend's snapshots are files in the snapshot dir
	// the core gives Commit, which the core removes with the bottle's state;
	// so Stop with RemoveSnapshots is not asked to remove them.
	SnapshotFiles bool
	// Egress is how the backend treats Spec.Egress.
	Egress Egress
	// Queue: Spec.QueueDir is at sdk.GuestQueueDir, read-only but for its
	// inbox, and
	// Spec.HelperBinary is executable and read-only at sdk.GuestHelperPath.
	Queue bool
	// NewInHome returns the backend as New does, serving the bot-bottle home
	// with the given id (for a plugin binary: Start with
	// sdk.EnvHomeID+"="+home), on the same engine or root as New.
	NewInHome func(t testing.TB, home string) sdk.Backend
	// Hardening is what the backend declares about the agent's process.
	Hardening *Hardening
	// BuildsImages: the backend builds the agent's Dockerfile and a
	// per-bottle Dockerfile, and falls back from a committed image that is
	// gone with a note (Plan.Warnings or Progress naming it).
	BuildsImages bool
}

// Contract items, as subtest names. A failure message starts with the
// item's words, so that a backend author sees which promise broke.
const (
	ItemInfo           = "Info"
	ItemCapabilities   = "CapabilityGating"
	ItemExitCode       = "ExitCode"
	ItemStreams        = "StdoutStderrSeparation"
	ItemStdinClose     = "StdinClose"
	ItemResize         = "TerminalResize"
	ItemDetach         = "DetachLeavesAgentRunning"
	ItemAttachDetached = "AttachToDetachedBottle"
	ItemStop           = "StopIdempotentAndComplete"
	ItemStopByIdentity = "StopByIdentityAlone"
	ItemStopUnknown    = "StopOfUnknownBottle"
	ItemFreshProcess   = "HandleFromFreshProcess"
	ItemStatusCodes    = "ErrorsAreStatusCodes"
	ItemExec           = "Exec"
	ItemCopy           = "CopyRoundTrip"
	ItemCommit         = "CommitAndResume"
)

// optional maps each capability to the call that must be declined, the same
// way everywhere, when the backend does not declare it.
var optional = []struct {
	cap  sdk.Capability
	call func(ctx context.Context, b sdk.Backend, h sdk.Handle) error
}{
	{sdk.CapCommit, func(ctx context.Context, b sdk.Backend, h sdk.Handle) error {
		c, ok := b.(sdk.Committer)
		if !ok {
			return fmt.Errorf("commit: %w", sdk.ErrNotSupported)
		}
		_, err := c.Commit(ctx, h, "")
		return err
	}},
	{sdk.CapExec, func(ctx context.Context, b sdk.Backend, h sdk.Handle) error {
		e, ok := b.(sdk.Execer)
		if !ok {
			return fmt.Errorf("exec: %w", sdk.ErrNotSupported)
		}
		_, err := e.Exec(ctx, sdk.ExecRequest{Handle: h, Command: []string{"true"}})
		return err
	}},
	{sdk.CapCopy, func(ctx context.Context, b sdk.Backend, h sdk.Handle) error {
		c, ok := b.(sdk.Copier)
		if !ok {
			return fmt.Errorf("copy: %w", sdk.ErrNotSupported)
		}
		_, err := c.CopyOut(ctx, h, "/tmp")
		return err
	}},
	{sdk.CapLiveEgress, func(ctx context.Context, b sdk.Backend, h sdk.Handle) error {
		u, ok := b.(sdk.EgressUpdater)
		if !ok {
			return fmt.Errorf("update egress: %w", sdk.ErrNotSupported)
		}
		return u.UpdateEgress(ctx, h, nil)
	}},
	{sdk.CapCredentials, func(ctx context.Context, b sdk.Backend, h sdk.Handle) error {
		r, ok := b.(sdk.CredentialRevoker)
		if !ok {
			return fmt.Errorf("revoke credential: %w", sdk.ErrNotSupported)
		}
		return r.RevokeCredential(ctx, h, "conformance")
	}},
	{sdk.CapQueueSync, func(ctx context.Context, b sdk.Backend, h sdk.Handle) error {
		q, ok := b.(sdk.QueueSyncer)
		if !ok {
			return fmt.Errorf("sync queue: %w", sdk.ErrNotSupported)
		}
		return q.SyncQueue(ctx, h, "")
	}},
}

var known = map[sdk.Capability]bool{
	sdk.CapCommit: true, sdk.CapExec: true, sdk.CapCopy: true, sdk.CapLiveEgress: true, sdk.CapEgressAudit: true,
	sdk.CapCredentials: true, sdk.CapQueueSync: true,
}

// RunConformance checks, one subtest per contract item, that a backend
// keeps every promise the bot-bottle core relies on: Info and capability
// gating; exit codes, stdout and stderr apart, stdin's end and terminal
// resizes through Attach; detaching and attaching again, also to a bottle
// launched detached; Stop that is complete, repeatable and works by
// identity alone; a handle from a plugin process that was killed driving
// the bottle from a fresh one; errors as the documented gRPC status codes;
// and Exec, CopyIn/CopyOut and Commit with resume where the backend
// declares them. Every bottle it launches is stopped when its check ends,
// pass or fail.
func RunConformance(t *testing.T, h Harness) {
	if h.New == nil {
		t.Fatal("backendtest: Harness.New is required")
	}
	if h.Timeout == 0 {
		h.Timeout = 2 * time.Minute
	}
	be := h.New(t)
	r := &run{h: h, be: be}
	t.Run(ItemInfo, r.info)
	t.Run(ItemCapabilities, r.capabilities)
	t.Run(ItemExitCode, r.exitCode)
	t.Run(ItemStreams, r.streams)
	t.Run(ItemStdinClose, r.stdinClose)
	t.Run(ItemResize, r.resize)
	t.Run(ItemDetach, r.detach)
	t.Run(ItemAttachDetached, r.attachDetached)
	t.Run(ItemStop, r.stop)
	t.Run(ItemStopByIdentity, r.stopByIdentity)
	t.Run(ItemStopUnknown, r.stopUnknown)
	t.Run(ItemFreshProcess, r.freshProcess)
	t.Run(ItemStatusCodes, r.statusCodes)
	t.Run(ItemExec, r.exec)
	t.Run(ItemCopy, r.copy)
	t.Run(ItemCommit, r.commit)
	t.Run(ItemProject, r.project)
	t.Run(ItemSecret, r.secret)
	t.Run(ItemNoNetwork, r.noNetwork)
	t.Run(ItemQueue, r.queue)
	t.Run(ItemQueueSync, r.queueSync)
	t.Run(ItemHomes, r.homes)
	t.Run(ItemSnapshots, r.snapshots)
	t.Run(ItemHardening, r.hardening)
	t.Run(ItemImages, r.images)
}

type run struct {
	h        Harness
	be       sdk.Backend
	infoOnce sync.Once
	info_    sdk.Info
	infoErr  error
}

func (r *run) getInfo(t *testing.T) sdk.Info {
	t.Helper()
	r.infoOnce.Do(func() { r.info_, r.infoErr = r.be.Info(r.ctx(t)) })
	if r.infoErr != nil {
		t.Fatalf("info: Info failed: %v", r.infoErr)
	}
	return r.info_
}

func (r *run) ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), r.h.Timeout)
	t.Cleanup(cancel)
	return ctx
}

func (r *run) info(t *testing.T) {
	info := r.getInfo(t)
	if info.Name == "" || info.Version == "" {
		t.Errorf("info: Info names no plugin or no version: %+v", info)
	}
	ok := false
	want, _, _ := strings.Cut(sdk.APIVersion, ".")
	for _, v := range info.APIVersions {
		major, _, _ := strings.Cut(strings.TrimPrefix(v, "v"), ".")
		ok = ok || major == want
	}
	if !ok {
		t.Errorf("info: APIVersions %v does not include API %s.x of this SDK", info.APIVersions, want)
	}
	for _, c := range info.Capabilities {
		if !known[c] {
			t.Errorf("info: declares unknown capability %q (the core would ignore it)", c)
		}
	}
}

func (r *run) capabilities(t *testing.T) {
	info := r.getInfo(t)
	ctx := r.ctx(t)
	_, handle := r.launch(t, ctx, r.be, true, "sleep", "300")
	for _, o := range optional {
		if info.Has(o.cap) {
			continue
		}
		err := o.call(ctx, r.be, handle)
		if !errors.Is(err, sdk.ErrNotSupported) {
			t.Errorf("capability gating: %s is not declared, so its call must fail with ErrNotSupported (gRPC Unimplemented); got %v", o.cap, err)
			continue
		}
		var re *host.RemoteError
		if errors.As(err, &re) && re.Code != codes.Unimplemented {
			t.Errorf("capability gating: %s declined with gRPC code %s, want Unimplemented", o.cap, re.Code)
		}
	}
	if info.Has(sdk.CapCredentials) {
		// The bottle was launched with no credential: revoking one is
		// ErrNotFound, which the core tells the operator as such.
		rv, ok := r.be.(sdk.CredentialRevoker)
		if !ok {
			t.Fatalf("capability gating: %s is declared, but the backend is no CredentialRevoker", sdk.CapCredentials)
		}
		if err := rv.RevokeCredential(ctx, handle, "conformance"); !errors.Is(err, sdk.ErrNotFound) {
			t.Errorf("credentials: revoking a credential the bottle does not have: %v, want ErrNotFound", err)
		}
	}
}

func (r *run) exitCode(t *testing.T) {
	for _, want := range []int{0, 7, 126} {
		out, _, st := r.runOnce(t, nil, "sh", "-c", fmt.Sprintf("echo exiting; exit %d", want))
		if st.Detached {
			t.Fatalf("exit code: Attach reported a detach, but the agent exited %d", want)
		}
		if st.Code != want {
			t.Errorf("exit code: the agent exited %d, Attach reported %d (output %q)", want, st.Code, out)
		}
	}
}

func (r *run) streams(t *testing.T) {
	out, errOut, st := r.runOnce(t, nil, "sh", "-c", "echo to-stdout; echo to-stderr >&2")
	if st.Code != 0 {
		t.Fatalf("stdout/stderr: agent exited %d", st.Code)
	}
	if !strings.Contains(out, "to-stdout") || strings.Contains(out, "to-stderr") {
		t.Errorf("stdout/stderr: stdout is %q, want to-stdout only", out)
	}
	if !strings.Contains(errOut, "to-stderr") || strings.Contains(errOut, "to-stdout") {
		t.Errorf("stdout/stderr: stderr is %q, want to-stderr only", errOut)
	}
}

func (r *run) stdinClose(t *testing.T) {
	ctx := r.ctx(t)
	spec, handle := r.launch(t, ctx, r.be, false, "sh", "-c", "cat; echo done")
	out := &lockedBuffer{}
	type result struct {
		st  sdk.ExitStatus
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := r.be.Attach(ctx, sdk.AttachRequest{Handle: handle, Stdin: true},
			sdk.AttachStreams{Stdin: strings.NewReader("first\nsecond\n"), Stdout: out, Stderr: io.Discard})
		done <- result{st, err}
	}()
	select {
	case res := <-done:
		if res.err != nil || res.st.Code != 0 || out.String() != "first\nsecond\ndone\n" {
			t.Fatalf("stdin close: Attach = %+v, %v, stdout %q; want the input echoed, then done", res.st, res.err, out.String())
		}
	case <-time.After(stepTimeout):
		_, _ = r.be.Stop(context.WithoutCancel(ctx), sdk.StopRequest{Identity: spec.Identity})
		t.Fatalf("stdin close: the agent never saw its stdin end (cat still reading after %v; stdout %q)", stepTimeout, out.String())
	}
}

// stepTimeout bounds a wait for something that, in a correct backend,
// happens at once; it keeps a broken backend from costing the whole check's
// Timeout and names what never happened.
const stepTimeout = 10 * time.Second

// resize checks the initial terminal size and a resize while attached. The
// agent prints its size each time it reads a line, so the check pokes it
// until the expected size shows (a resize and a line travel separately).
func (r *run) resize(t *testing.T) {
	ctx := r.ctx(t)
	_, handle := r.launch(t, ctx, r.be, false, "sh", "-c", `stty size; while read l; do [ "$l" = quit ] && exit 0; stty size; done`,
		func(s *sdk.Spec) { s.TTY = true })
	stdinR, stdinW := io.Pipe()
	defer stdinW.Close()
	out := &lockedBuffer{}
	resizes := make(chan sdk.TermSize, 1)
	type result struct {
		st  sdk.ExitStatus
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := r.be.Attach(ctx, sdk.AttachRequest{Handle: handle, TTY: true, Stdin: true, Size: sdk.TermSize{Rows: 31, Cols: 97}},
			sdk.AttachStreams{Stdin: stdinR, Stdout: out, Stderr: out, Resize: resizes})
		done <- result{st, err}
	}()
	await := func(what, want string) {
		t.Helper()
		deadline := time.Now().Add(stepTimeout)
		for !strings.Contains(out.String(), want) {
			select {
			case res := <-done:
				t.Fatalf("terminal resize: Attach ended (%+v, %v) before the agent saw %s; output %q", res.st, res.err, what, out.String())
			case <-time.After(200 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("terminal resize: the agent never saw %s (stty size printed %q, want %q)", what, out.String(), want)
			}
			_, _ = io.WriteString(stdinW, "size\n")
		}
	}
	await("the initial size 31x97 from the AttachRequest", "31 97")
	resizes <- sdk.TermSize{Rows: 43, Cols: 131}
	await("a resize to 43x131 sent while attached", "43 131")
	_, _ = io.WriteString(stdinW, "quit\n")
	select {
	case res := <-done:
		if res.err != nil || res.st.Code != 0 {
			t.Fatalf("terminal resize: Attach ended with %+v, %v; want exit 0", res.st, res.err)
		}
	case <-ctx.Done():
		t.Fatal("terminal resize: Attach did not return after the agent exited")
	}
}

// detach is the user pressing the detach keys: the session ends, the agent
// does not, and `bot-bottle attach` later gets its exit code.
func (r *run) detach(t *testing.T) {
	ctx := r.ctx(t)
	spec, handle := r.launch(t, ctx, r.be, false, "sh", "-c", "echo attached; sleep 3; exit 6")
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := &lockedBuffer{}
	go func() {
		for !strings.Contains(out.String(), "attached") && actx.Err() == nil {
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
	}()
	st, err := r.be.Attach(actx, sdk.AttachRequest{Handle: handle}, sdk.AttachStreams{Stdout: out, Stderr: io.Discard})
	if err != nil || !st.Detached {
		t.Fatalf("detach: a cancelled Attach must return ExitStatus{Detached: true} and no error; got %+v, %v", st, err)
	}
	b, ok := r.listed(t, ctx, r.be, spec.Identity)
	if !ok {
		t.Fatalf("detach: after a detach List no longer has %s; the agent must keep running", spec.Identity)
	}
	if b.Status != sdk.StatusRunning {
		t.Errorf("detach: right after a detach List reports %s as %q, want running (prune keeps a detached bottle only while it is)", spec.Identity, b.Status)
	}
	st, err = r.h.New(t).Attach(ctx, sdk.AttachRequest{Handle: handle}, sdk.AttachStreams{Stdout: io.Discard, Stderr: io.Discard})
	switch {
	case err != nil:
		t.Fatalf("detach: attaching again from a fresh process failed: %v; the agent must keep running after a detach, and its bottle stay attachable", err)
	case st.Detached:
		t.Fatalf("detach: attaching again from a fresh process reported a detach, but nothing cancelled it; report Detached only when the Attach context is cancelled")
	case st.Code < 0 || st.Code > 128:
		t.Fatalf("detach: attaching again from a fresh process reported exit %d, a signal's, where the agent exits 6 on its own: the detach killed it; a cancelled Attach must leave the agent running", st.Code)
	case st.Code != 6:
		t.Fatalf("detach: attaching again from a fresh process reported exit %d, the agent exited 6; report the agent's own exit code to a later Attach (record it where a fresh process finds it)", st.Code)
	}
}

// attachDetached is `bot-bottle start --detach` followed by `bot-bottle
// attach` from another terminal: a fresh plugin process must get the output
// that follows and the agent's own exit code.
func (r *run) attachDetached(t *testing.T) {
	ctx := r.ctx(t)
	// Ticks for a while, so that however long a fresh process takes to
	// attach, there is output left to see.
	_, handle := r.launch(t, ctx, r.be, true, "sh", "-c", "i=0; while [ $i -lt 8 ]; do echo tick; sleep 1; i=$((i+1)); done; exit 5")
	var out bytes.Buffer
	st, err := r.h.New(t).Attach(ctx, sdk.AttachRequest{Handle: handle}, sdk.AttachStreams{Stdout: &out, Stderr: io.Discard})
	if err != nil || st.Detached || st.Code != 5 || !strings.Contains(out.String(), "tick") {
		t.Fatalf("attach to a detached bottle: Attach = %+v, %v, stdout %q; want its output (tick) and the agent's exit 5", st, err, out.String())
	}
}

func (r *run) stop(t *testing.T) {
	ctx := r.ctx(t)
	spec, handle := r.launch(t, ctx, r.be, true, "sleep", "300")
	if _, ok := r.listed(t, ctx, r.be, spec.Identity); !ok {
		t.Fatalf("stop: List does not report %s, launched detached", spec.Identity)
	}
	for i := 1; i <= 2; i++ {
		if _, err := r.be.Stop(ctx, sdk.StopRequest{Handle: &handle, Identity: spec.Identity}); err != nil {
			t.Fatalf("stop: Stop #%d failed: %v (Stop must succeed when there is nothing left)", i, err)
		}
	}
	r.assertGone(t, ctx, r.be, spec.Identity)
}

func (r *run) stopByIdentity(t *testing.T) {
	ctx := r.ctx(t)
	spec, _ := r.launch(t, ctx, r.be, true, "sleep", "300")
	if _, err := r.be.Stop(ctx, sdk.StopRequest{Identity: spec.Identity}); err != nil {
		t.Fatalf("stop by identity: Stop without a handle failed: %v (a crash can leave the core with no handle)", err)
	}
	r.assertGone(t, ctx, r.be, spec.Identity)
}

func (r *run) stopUnknown(t *testing.T) {
	ctx := r.ctx(t)
	if _, err := r.be.Stop(ctx, sdk.StopRequest{Identity: newIdentity(t)}); err != nil {
		t.Fatalf("stop of unknown bottle: Stop of a bottle that never existed must succeed; got %v", err)
	}
}

// freshProcess is the core's own pattern: one plugin process launches and
// goes away with the bot-bottle command that started it; later commands
// start their own and carry on from the handle.
func (r *run) freshProcess(t *testing.T) {
	ctx := r.ctx(t)
	first := r.h.New(t)
	spec, handle := r.launch(t, ctx, first, false, "sh", "-c", `read l; echo "got $l"; exit 3`)
	kill(first)
	second := r.h.New(t)
	var out bytes.Buffer
	st, err := second.Attach(ctx, sdk.AttachRequest{Handle: handle, Stdin: true},
		sdk.AttachStreams{Stdin: strings.NewReader("hello\n"), Stdout: &out, Stderr: io.Discard})
	if err != nil || st.Code != 3 || !strings.Contains(out.String(), "got hello") {
		t.Fatalf("handle from a fresh process: Attach from a second plugin process, after the launching one was killed = %+v, %v, stdout %q; want exit 3 and got hello", st, err, out.String())
	}
	if _, err := second.Stop(ctx, sdk.StopRequest{Handle: &handle, Identity: spec.Identity}); err != nil {
		t.Fatalf("handle from a fresh process: Stop from a second plugin process: %v", err)
	}
	r.assertGone(t, ctx, second, spec.Identity)

	first = r.h.New(t)
	spec, handle = r.launch(t, ctx, first, true, "sleep", "300")
	kill(first)
	third := r.h.New(t)
	b, ok := r.listed(t, ctx, third, spec.Identity)
	if !ok {
		t.Fatalf("handle from a fresh process: a bottle launched detached is not in a fresh process's List after the launching process was killed")
	}
	if b.Status != sdk.StatusRunning {
		t.Fatalf("handle from a fresh process: after the launching plugin process was killed, a bottle launched detached is %q, want running: it must outlive that process", b.Status)
	}
	if _, err := third.Stop(ctx, sdk.StopRequest{Handle: &handle, Identity: spec.Identity}); err != nil {
		t.Fatalf("handle from a fresh process: Stop from a fresh plugin process: %v", err)
	}
	r.assertGone(t, ctx, third, spec.Identity)
}

// kill ends a plugin process the way a core's exit does, when the harness
// can (Start and InProcess can).
func kill(be sdk.Backend) {
	if k, ok := be.(interface{ Kill() }); ok {
		k.Kill()
	}
}

func (r *run) statusCodes(t *testing.T) {
	info := r.getInfo(t)
	ctx := r.ctx(t)
	// A stale handle: the core still holds it, the bottle is gone.
	spec, stale := r.launch(t, ctx, r.be, true, "sleep", "300")
	if _, err := r.be.Stop(ctx, sdk.StopRequest{Handle: &stale, Identity: spec.Identity}); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, ok := r.listed(t, ctx, r.be, spec.Identity); ok {
		t.Fatalf("errors as status codes: Stop left %s behind, so a stale handle cannot be checked", spec.Identity)
	}
	_, err := r.be.Attach(ctx, sdk.AttachRequest{Handle: stale}, sdk.AttachStreams{Stdout: io.Discard, Stderr: io.Discard})
	expectCode(t, "Attach to a bottle that was stopped", err, codes.NotFound)
	if e, ok := r.be.(sdk.Execer); ok && info.Has(sdk.CapExec) {
		_, err := e.Exec(ctx, sdk.ExecRequest{Handle: stale, Command: []string{"true"}})
		expectCode(t, "Exec in a bottle that was stopped", err, codes.NotFound)
	}
	if c, ok := r.be.(sdk.Copier); ok && info.Has(sdk.CapCopy) {
		_, handle := r.launch(t, ctx, r.be, true, "sleep", "300")
		_, err := c.CopyOut(ctx, handle, "/tmp/no-such-file-here")
		expectCode(t, "CopyOut of a path that does not exist", err, codes.NotFound)
	}
}

func expectCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if err == nil {
		t.Errorf("errors as status codes: %s succeeded; want gRPC %s", what, want)
		return
	}
	var re *host.RemoteError
	if errors.As(err, &re) && re.Code != want {
		t.Errorf("errors as status codes: %s: gRPC %s (%v); want %s", what, re.Code, err, want)
	}
	if want == codes.NotFound && !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("errors as status codes: %s: %v does not wrap sdk.ErrNotFound", what, err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("errors as status codes: %s: message spans lines: %q", what, err.Error())
	}
}

func (r *run) exec(t *testing.T) {
	info := r.getInfo(t)
	e, ok := r.be.(sdk.Execer)
	if !info.Has(sdk.CapExec) || !ok {
		t.Skip("backend does not declare exec")
	}
	ctx := r.ctx(t)
	_, handle := r.launch(t, ctx, r.be, true, "sleep", "300")
	res, err := e.Exec(ctx, sdk.ExecRequest{Handle: handle, Command: []string{"sh", "-c", "echo exec-out; echo exec-err >&2; exit 4"}})
	if err != nil || res.ExitCode != 4 || !strings.Contains(string(res.Stdout), "exec-out") || !strings.Contains(string(res.Stderr), "exec-err") {
		t.Fatalf("exec: Exec = %+v, %v; want exit 4, exec-out on stdout, exec-err on stderr", res, err)
	}
}

func (r *run) copy(t *testing.T) {
	info := r.getInfo(t)
	c, ok := r.be.(sdk.Copier)
	if !info.Has(sdk.CapCopy) || !ok {
		t.Skip("backend does not declare copy")
	}
	ctx := r.ctx(t)
	_, handle := r.launch(t, ctx, r.be, true, "sleep", "300")
	in := tarOf(t, "conformance.txt", "copied in and out\n")
	if err := c.CopyIn(ctx, handle, "/tmp", in); err != nil {
		t.Fatalf("copy round trip: CopyIn: %v", err)
	}
	out, err := c.CopyOut(ctx, handle, "/tmp/conformance.txt")
	if err != nil {
		t.Fatalf("copy round trip: CopyOut: %v", err)
	}
	if got := fileFromTar(t, out, "conformance.txt"); got != "copied in and out\n" {
		t.Fatalf("copy round trip: CopyOut returned %q, CopyIn wrote %q", got, "copied in and out\n")
	}
}

func (r *run) commit(t *testing.T) {
	info := r.getInfo(t)
	c, ok := r.be.(sdk.Committer)
	if !info.Has(sdk.CapCommit) || !ok {
		t.Skip("backend does not declare commit")
	}
	ctx := r.ctx(t)
	marker := newIdentity(t)
	// The path travels as an argument, not inside the script, so that a
	// backend that maps guest paths (a fake VM) can see it.
	spec, handle := r.launch(t, ctx, r.be, false, "sh", "-c", `echo "$1" > "$2"`, "sh", marker, "/tmp/bb-conformance-marker")
	st, err := r.be.Attach(ctx, sdk.AttachRequest{Handle: handle}, sdk.AttachStreams{Stdout: io.Discard, Stderr: io.Discard})
	if err != nil || st.Code != 0 {
		t.Fatalf("commit and resume: writing the marker: %+v, %v", st, err)
	}
	res, err := c.Commit(ctx, handle, t.TempDir())
	if err != nil {
		t.Fatalf("commit and resume: Commit: %v", err)
	}
	if res.Image == "" {
		t.Fatal("commit and resume: Commit returned no snapshot reference")
	}
	if r.h.RemoveSnapshot != nil {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := r.h.RemoveSnapshot(ctx, res.Image); err != nil {
				t.Errorf("backendtest: remove snapshot %s: %v", res.Image, err)
			}
		})
	}
	if _, err := r.be.Stop(ctx, sdk.StopRequest{Handle: &handle, Identity: spec.Identity}); err != nil {
		t.Fatalf("commit and resume: Stop after Commit: %v", err)
	}
	out, errOut, st := r.runOnce(t, nil, "cat", "/tmp/bb-conformance-marker", func(s *sdk.Spec) {
		s.CommittedImage, s.Resume = res.Image, true
	})
	if st.Code != 0 || strings.TrimSpace(out) != marker {
		t.Fatalf("commit and resume: a bottle resumed from %s read %q (exit %d, stderr %q), want the committed %q", res.Image, out, st.Code, errOut, marker)
	}
}

// launch prepares and launches a bottle running cmd on be, stopped at the
// end of the test whatever happens. Trailing func(*sdk.Spec) arguments
// adjust the spec after the harness's own Spec.
func (r *run) launch(t *testing.T, ctx context.Context, be sdk.Backend, detach bool, args ...any) (sdk.Spec, sdk.Handle) {
	t.Helper()
	spec := r.spec(t, detach, args...)
	_, handle := r.launchSpec(t, ctx, be, spec)
	return spec, handle
}

// spec is the spec launch uses, with a Stop of its identity registered as
// cleanup.
func (r *run) spec(t *testing.T, detach bool, args ...any) sdk.Spec {
	t.Helper()
	spec := sdk.Spec{Identity: newIdentity(t), Agent: r.h.Agent, Detach: detach, Env: map[string]string{}}
	var adjust []func(*sdk.Spec)
	for _, a := range args {
		switch v := a.(type) {
		case string:
			spec.Command = append(spec.Command, v)
		case func(*sdk.Spec):
			adjust = append(adjust, v)
		}
	}
	if r.h.Spec != nil {
		r.h.Spec(&spec)
	}
	for _, f := range adjust {
		f(&spec)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// r.be, not the backend that launched it: that may be a plugin
		// process the check killed.
		_, _ = r.be.Stop(ctx, sdk.StopRequest{Identity: spec.Identity})
	})
	return spec
}

// launchSpec prepares and launches spec on be.
func (r *run) launchSpec(t *testing.T, ctx context.Context, be sdk.Backend, spec sdk.Spec) (sdk.Plan, sdk.Handle) {
	t.Helper()
	plan, err := be.Prepare(ctx, spec)
	if err != nil {
		t.Fatalf("prepare: %v", err)
	}
	handle, err := be.Launch(ctx, spec, plan, func(sdk.Progress) {})
	if err != nil {
		t.Fatalf("launch: %v", err)
	}
	if handle.Identity != "" && handle.Identity != spec.Identity {
		t.Fatalf("launch: the handle names %q, the spec %q", handle.Identity, spec.Identity)
	}
	return plan, handle
}

// runOnce launches cmd, attaches until it exits and stops the bottle.
func (r *run) runOnce(t *testing.T, stdin io.Reader, args ...any) (string, string, sdk.ExitStatus) {
	t.Helper()
	ctx := r.ctx(t)
	spec, handle := r.launch(t, ctx, r.be, false, args...)
	var out, errOut bytes.Buffer
	st, err := r.be.Attach(ctx, sdk.AttachRequest{Handle: handle, Stdin: stdin != nil, TTY: spec.TTY},
		sdk.AttachStreams{Stdin: stdin, Stdout: &out, Stderr: &errOut})
	if err != nil {
		t.Fatalf("attach: %v", err)
	}
	if _, err := r.be.Stop(ctx, sdk.StopRequest{Handle: &handle, Identity: spec.Identity}); err != nil {
		t.Fatalf("stop: %v", err)
	}
	return out.String(), errOut.String(), st
}

func (r *run) listed(t *testing.T, ctx context.Context, be sdk.Backend, id string) (sdk.Bottle, bool) {
	t.Helper()
	bs, err := be.List(ctx)
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	for _, b := range bs {
		if b.Identity == id {
			return b, true
		}
	}
	return sdk.Bottle{}, false
}

// assertGone checks that Stop left nothing: not in List, and nothing the
// harness's Leftovers can see.
func (r *run) assertGone(t *testing.T, ctx context.Context, be sdk.Backend, id string) {
	t.Helper()
	r.assertRemoved(t, ctx, be, id, false)
}

// assertRemoved is assertGone, allowing a List entry of the identity's
// snapshots alone (StatusSnapshot) when keptSnapshots.
func (r *run) assertRemoved(t *testing.T, ctx context.Context, be sdk.Backend, id string, keptSnapshots bool) {
	t.Helper()
	if b, ok := r.listed(t, ctx, be, id); ok && !(keptSnapshots && b.Status == sdk.StatusSnapshot) {
		t.Errorf("stop is not complete: after Stop, List still reports %s (status %q, resources %v)", id, b.Status, b.Resources)
	}
	if r.h.Leftovers == nil {
		return
	}
	left, err := r.h.Leftovers(ctx, id)
	if err != nil {
		t.Fatalf("backendtest: Leftovers(%s): %v", id, err)
	}
	if len(left) > 0 {
		t.Errorf("stop is not complete: after Stop, %s still has %s", id, strings.Join(left, ", "))
	}
}

func newIdentity(t testing.TB) string {
	const digits = "0123456789abcdefghijklmnopqrstuvwxyz"
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = digits[int(b[i])%len(digits)]
	}
	return "conf-" + string(b[:])
}

// lockedBuffer collects output written from the attach goroutine while the
// test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
