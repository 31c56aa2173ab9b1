package host_test

import (
	"bufio"
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/backendtest"
	"github.com/bot-bottle/bot-bottle/sdk/host"
)

// slowStart is a backend whose first start takes a while and, like the
// Docker backend, is not cut short by a detach: its agent "starts" only
// after firstStart, and then runs until it is stopped.
type slowStart struct {
	sdk.UnimplementedBackend
	firstStart time.Duration
	setupBegan chan struct{}
	ended      chan sdk.ExitStatus // what Attach returned to the SDK

	mu     sync.Mutex
	status string
}

func newSlowStart(d time.Duration) *slowStart {
	return &slowStart{firstStart: d, setupBegan: make(chan struct{}), ended: make(chan sdk.ExitStatus, 1),
		status: sdk.StatusCreated}
}

func (b *slowStart) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{Name: "slow", Version: "1.0.0"}, nil
}
func (b *slowStart) Prepare(context.Context, sdk.Spec) (sdk.Plan, error) { return sdk.Plan{}, nil }
func (b *slowStart) Launch(context.Context, sdk.Spec, sdk.Plan, func(sdk.Progress)) (sdk.Handle, error) {
	return sdk.Handle{}, nil
}
func (b *slowStart) Stop(context.Context, sdk.StopRequest) ([]string, error) { return nil, nil }

func (b *slowStart) List(context.Context) ([]sdk.Bottle, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return []sdk.Bottle{{Identity: "slow-abcde", Status: b.status}}, nil
}

func (b *slowStart) Attach(ctx context.Context, _ sdk.AttachRequest, _ sdk.AttachStreams) (sdk.ExitStatus, error) {
	close(b.setupBegan)
	time.Sleep(b.firstStart) // the first start, which a detach does not cancel
	b.mu.Lock()
	b.status = sdk.StatusRunning
	b.mu.Unlock()
	<-ctx.Done()
	st := sdk.ExitStatus{Detached: true}
	b.ended <- st
	return st, nil
}

// A detach while the plugin is in the agent's first start returns only
// once the start is done: right after it List says running, not created
// (the core would otherwise take the detached bottle for one that never
// came up). It fails on the client that returned at the caller's cancel.
func TestDetachWaitsForFirstStart(t *testing.T) {
	be := newSlowStart(300 * time.Millisecond)
	p := backendtest.InProcess(t, be)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-be.setupBegan
		cancel()
	}()
	stdin, stdinW := io.Pipe()
	defer stdinW.Close()
	st, err := p.Attach(ctx, sdk.AttachRequest{Handle: sdk.Handle{Identity: "slow-abcde"}, Stdin: true},
		sdk.AttachStreams{Stdin: stdin, Stdout: io.Discard, Stderr: io.Discard})
	if err != nil || !st.Detached {
		t.Fatalf("attach cancelled during the first start = %+v, %v; want Detached and no error", st, err)
	}
	lctx, lcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer lcancel()
	bs, err := p.List(lctx)
	if err != nil || len(bs) != 1 || bs[0].Status != sdk.StatusRunning {
		t.Fatalf("List right after the detach = %+v, %v; want the bottle running (Attach returned before its first start ended)", bs, err)
	}
	select {
	case got := <-be.ended:
		if !got.Detached {
			t.Fatalf("the backend ended the session with %+v; a detach must reach it as a detach", got)
		}
	default:
		t.Fatal("Attach returned before the backend ended its session")
	}
}

// stdinReader is a backend whose agent reads its stdin to the end, as a
// shell does: EOF while the session is not cancelled is the user closing
// the agent's input, and the agent exits.
type stdinReader struct {
	*slowStart
	got chan string
}

func (b *stdinReader) Attach(ctx context.Context, _ sdk.AttachRequest, s sdk.AttachStreams) (sdk.ExitStatus, error) {
	sc := bufio.NewScanner(s.Stdin)
	for sc.Scan() {
		b.got <- sc.Text()
	}
	st := sdk.ExitStatus{Code: 3} // stdin closed: the agent is done
	if ctx.Err() != nil {
		st = sdk.ExitStatus{Detached: true}
	}
	b.ended <- st
	return st, nil
}

// A detach reaches a backend as a cancelled context before its stdin ends,
// so a backend does not take it for the user closing the agent's input
// (and end or starve the agent). The SDK server that ended stdin first
// cancelled a moment later, which won the race in practice, so this guards
// the order rather than showing a failure seen.
func TestDetachIsNotStdinClose(t *testing.T) {
	be := &stdinReader{slowStart: newSlowStart(0), got: make(chan string, 1)}
	p := backendtest.InProcess(t, be)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdin, stdinW := io.Pipe()
	defer stdinW.Close()
	go func() {
		_, _ = io.WriteString(stdinW, "hello\n")
		<-be.got // the session is in place
		cancel()
	}()
	st, err := p.Attach(ctx, sdk.AttachRequest{Handle: sdk.Handle{Identity: "slow-abcde"}, Stdin: true},
		sdk.AttachStreams{Stdin: stdin, Stdout: io.Discard, Stderr: io.Discard})
	if err != nil || !st.Detached {
		t.Fatalf("detach = %+v, %v; want Detached and no error", st, err)
	}
	select {
	case got := <-be.ended:
		if !got.Detached {
			t.Fatalf("the backend saw the detach as its stdin closing (it returned %+v); the session's context must be cancelled first", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the backend's Attach did not end after the detach")
	}
}

// silent is a backend that never ends an Attach, whatever happens.
type silent struct {
	*slowStart
	release chan struct{}
}

func (b *silent) Attach(context.Context, sdk.AttachRequest, sdk.AttachStreams) (sdk.ExitStatus, error) {
	close(b.setupBegan)
	<-b.release
	return sdk.ExitStatus{}, nil
}

// A plugin that does not answer a detach costs the caller DetachGrace, not
// forever: then the stream is cancelled and the detach stands.
func TestDetachFromSilentPluginIsBounded(t *testing.T) {
	be := &silent{slowStart: newSlowStart(0), release: make(chan struct{})}
	p := backendtest.InProcess(t, be)
	t.Cleanup(func() { close(be.release) }) // before the server stops
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var cancelled time.Time
	go func() {
		<-be.setupBegan
		cancelled = time.Now()
		cancel()
	}()
	type result struct {
		st  sdk.ExitStatus
		err error
		at  time.Time
	}
	done := make(chan result, 1)
	go func() {
		st, err := p.Attach(ctx, sdk.AttachRequest{Handle: sdk.Handle{Identity: "slow-abcde"}},
			sdk.AttachStreams{Stdout: io.Discard, Stderr: io.Discard})
		done <- result{st, err, time.Now()}
	}()
	select {
	case r := <-done:
		if r.err != nil || !r.st.Detached {
			t.Fatalf("detach from a silent plugin = %+v, %v; want Detached and no error", r.st, r.err)
		}
		// The wait is the bound, which is what a slow first start gets.
		if waited := r.at.Sub(cancelled); waited < host.DetachGrace {
			t.Fatalf("Attach returned %v after the detach, before DetachGrace (%v): it did not wait for the plugin", waited, host.DetachGrace)
		}
	case <-time.After(host.DetachGrace + 5*time.Second):
		t.Fatalf("Attach had not returned %v after the detach; the wait must be bounded by DetachGrace", host.DetachGrace+5*time.Second)
	}
}
