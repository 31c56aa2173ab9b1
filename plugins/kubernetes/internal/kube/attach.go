package kube

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"

	"github.com/bot-bottle/bot-bottle/plugins/kubernetes/internal/gate"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// exitTimeout bounds the wait for the kubelet to report an agent's exit
// after its attach stream ended.
const exitTimeout = 30 * time.Second

// setupTimeout bounds an attach's first start (the wait for the agent's
// container and the gate's opening), which a detach does not cancel.
const setupTimeout = time.Minute

// Attach connects the caller's streams to the agent's container through the
// API server, opening its gate on the first attach so that none of its
// output is lost, and returns its exit code from the pod's status, where a
// later plugin process finds it too.
func (b *Backend) Attach(ctx context.Context, req sdk.AttachRequest, s sdk.AttachStreams) (sdk.ExitStatus, error) {
	hd, err := decodeHandle(req.Handle)
	if err != nil {
		return sdk.ExitStatus{}, err
	}
	cl, err := b.connect(hd.Context)
	if err != nil {
		return sdk.ExitStatus{}, err
	}
	cl = cl.in(hd.Namespace)
	// A detach during the first start must leave the agent running: a gate
	// left shut leaves the pod created, not running, to List (and prune).
	// So the wait for the agent and the gate's opening run to their end,
	// bounded by setupTimeout, and a detach returns only after them.
	setup, cancelSetup := context.WithTimeout(context.WithoutCancel(ctx), setupTimeout)
	defer cancelSetup()
	pod, err := b.waitAgent(setup, cl, hd.Pod)
	if err != nil {
		return sdk.ExitStatus{}, err
	}
	if st := agentStatus(pod); st != nil && st.State.Terminated != nil {
		return sdk.ExitStatus{Code: int(st.State.Terminated.ExitCode)}, nil
	}
	gated := pod.Annotations[annStarted] != "true"
	tty := hd.TTY
	stdin := s.Stdin
	if !req.Stdin {
		stdin = nil
	}
	out, errOut := s.Stdout, s.Stderr
	if out == nil {
		out = io.Discard
	}
	if errOut == nil {
		errOut = io.Discard
	}
	// The stream's own context: a detach ends it (below), once the gate
	// is open.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	if hd.ProxyIP != "" && hd.EgressLog != "" {
		// While attached, the audit reaches the operator's host as it
		// happens; what is left waits for the next collector.
		go func() {
			t := time.NewTicker(collectEvery)
			defer t.Stop()
			for {
				select {
				case <-sctx.Done():
					return
				case <-t.C:
				}
				if err := b.collect(sctx, cl, req.Handle.Identity, hd.EgressLog); err != nil && sctx.Err() == nil {
					b.log.Debug("collect the egress audit", "pod", hd.Pod, "error", err)
				}
			}
		}()
	}
	// In pipe mode the gate outlives the agent until this attach has all
	// its output (package gate): take End out and release the gate.
	var ends []*gate.EndFilter
	if !tty {
		eo, ee := gate.NewEndFilter(out), gate.NewEndFilter(errOut)
		out, errOut, ends = eo, ee, []*gate.EndFilter{eo, ee}
		defer eo.Close()
		defer ee.Close()
		go func() {
			if gate.WaitEnded(sctx, ends...) != nil {
				return
			}
			if _, err := b.exec(sctx, cl, hd.Pod, []string{helperPath, "bye"}, nil); err != nil && b.log != nil {
				b.log.Debug("release the gate", "pod", hd.Pod, "error", err)
			}
		}()
	}
	var filters gate.Filters
	if gated {
		fo := gate.NewFilter(out)
		out, filters = fo, append(filters, fo)
		if !tty {
			fe := gate.NewFilter(errOut)
			errOut, filters = fe, append(filters, fe)
		}
	}
	go func() {
		select {
		case <-ctx.Done():
		case <-sctx.Done():
			return
		}
		if gated {
			// A gate that fails cancels sctx; one that hangs, setup.
			wctx, wcancel := context.WithCancel(sctx)
			stop := context.AfterFunc(setup, wcancel)
			_ = filters.WaitOpened(wctx)
			stop()
			wcancel()
		}
		cancel()
	}()
	var in io.Reader
	var closeIn func()
	gateDone := make(chan error, 1)
	if gated || stdin != nil {
		pr, pw := io.Pipe()
		in, closeIn = pr, func() { _ = pw.CloseWithError(io.EOF) }
		go func() {
			if gated {
				err := b.openGateOn(sctx, cl, hd.Pod, pw, filters)
				gateDone <- err
				if err != nil {
					_ = pw.CloseWithError(err)
					cancel()
					return
				}
			}
			if stdin == nil {
				return // held open: no input is not the end of input
			}
			_, _ = io.Copy(pw, stdin)
			// An input that ends with a detach is not the user closing
			// it: the stream may still be opening the gate.
			if ctx.Err() == nil {
				_ = pw.Close()
			}
		}()
	}
	opts := remotecommand.StreamOptions{Stdin: in, Stdout: out, Tty: tty}
	if !tty {
		opts.Stderr = errOut
	} else {
		opts.TerminalSizeQueue = newSizeQueue(ctx, req, s.Resize)
	}
	serr := b.stream(sctx, cl, hd.Pod, "attach", &corev1.PodAttachOptions{
		Container: agentContainer, Stdin: in != nil, Stdout: true, Stderr: !tty, TTY: tty,
	}, opts)
	if closeIn != nil {
		closeIn()
	}
	if ctx.Err() != nil && (!gated || filters.Opened()) {
		return sdk.ExitStatus{Detached: true}, nil
	}
	if gated && !filters.Opened() {
		// The stream ended before the gate opened: the agent has not
		// started, and waiting for its exit would wait for nothing.
		cancel()
		gerr := <-gateDone
		err := gerr
		if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, io.ErrClosedPipe) {
			err = serr
		}
		if err == nil {
			var seen []string
			for _, f := range filters {
				select {
				case <-f.Ready():
					seen = append(seen, "ready")
				default:
					seen = append(seen, "no ready")
				}
			}
			err = fmt.Errorf("the attach ended before the agent started (streams: %s; gate: %v; stream: %v)", strings.Join(seen, ", "), gerr, serr)
		}
		return sdk.ExitStatus{}, fmt.Errorf("kubernetes: attach to %s: %s", hd.Pod, oneLine(err))
	}
	code, err := b.exitCode(ctx, cl, hd.Pod)
	if err != nil {
		if serr != nil {
			return sdk.ExitStatus{}, fmt.Errorf("kubernetes: attach to %s: %s", hd.Pod, oneLine(serr))
		}
		return sdk.ExitStatus{}, err
	}
	return sdk.ExitStatus{Code: code}, nil
}

// in returns the cluster's client for another namespace.
func (c *cluster) in(ns string) *cluster {
	if ns == "" || ns == c.namespace {
		return c
	}
	cp := *c
	cp.namespace = ns
	return &cp
}

// exitCode waits for the kubelet to report the agent's end.
func (b *Backend) exitCode(ctx context.Context, cl *cluster, name string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, exitTimeout)
	defer cancel()
	p, err := b.waitPod(ctx, cl, name, func(p *corev1.Pod) (bool, error) {
		s := agentStatus(p)
		return s != nil && s.State.Terminated != nil, nil
	})
	if err != nil {
		return 0, err
	}
	return int(agentStatus(p).State.Terminated.ExitCode), nil
}

// openGateOn runs the plugin's side of the start handshake (package gate)
// on an attach whose stdin is w and whose output streams pass through
// filters: Start, then, once every stream has carried Ready (so none of the
// agent's output can go to nobody), the started mark and Go.
func (b *Backend) openGateOn(ctx context.Context, cl *cluster, name string, w io.Writer, filters gate.Filters) error {
	if _, err := io.WriteString(w, gate.Start); err != nil {
		return fmt.Errorf("kubernetes: start the agent of %s: %w", name, err)
	}
	if err := filters.WaitReady(ctx); err != nil {
		return err
	}
	if err := b.markStarted(ctx, cl, name); err != nil {
		return err
	}
	if _, err := io.WriteString(w, gate.Go); err != nil {
		return fmt.Errorf("kubernetes: start the agent of %s: %w", name, err)
	}
	return nil
}

// markStarted records that the gate is being opened, before Go is sent: a
// later attach that sent the tokens again would give them to the agent.
// An attach that dies before this leaves the mark unset, and the gate takes
// the next attach's Start as a new one.
func (b *Backend) markStarted(ctx context.Context, cl *cluster, name string) error {
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"true"}}}`, annStarted)
	_, err := cl.cs.CoreV1().Pods(cl.namespace).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	return apiErr("kubernetes: mark pod "+name+" started", err)
}

// openGate starts a detached bottle's agent: the handshake on an attach of
// its own, which ends once the gate has opened.
func (b *Backend) openGate(ctx context.Context, cl *cluster, name string, tty bool) error {
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	filters := gate.Filters{gate.NewFilter(io.Discard)}
	opts := remotecommand.StreamOptions{Stdout: filters[0], Tty: tty}
	if !tty {
		filters = append(filters, gate.NewFilter(io.Discard))
		opts.Stderr = filters[1]
	}
	pr, pw := io.Pipe()
	opts.Stdin = pr
	gateErr := make(chan error, 1)
	go func() { gateErr <- b.openGateOn(sctx, cl, name, pw, filters) }()
	done := make(chan error, 1)
	go func() {
		done <- b.stream(sctx, cl, name, "attach", &corev1.PodAttachOptions{Container: agentContainer, Stdin: true, Stdout: true, Stderr: !tty, TTY: tty}, opts)
	}()
	fail := func(err error) error {
		return fmt.Errorf("kubernetes: start the agent of %s: %s", name, oneLine(err))
	}
	// The gate has opened once every stream carried Opened. The markers
	// come before the stream's end, so a stream that ended (the agent's
	// quick exit) has them too, unless it ended before the gate opened.
	opened := make(chan error, 1)
	go func() { opened <- filters.WaitOpened(sctx) }()
	select {
	case <-opened:
	case err := <-done:
		done <- err
	}
	// Either way the handshake and this attach are over: a write still
	// waiting on the pipe fails, and the stream goes.
	_ = pw.CloseWithError(io.EOF)
	cancel()
	gerr, serr := <-gateErr, <-done
	switch {
	case filters.Opened():
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case gerr != nil && !errors.Is(gerr, context.Canceled) && !errors.Is(gerr, context.DeadlineExceeded) && !errors.Is(gerr, io.ErrClosedPipe):
		return fail(gerr)
	case serr != nil && !errors.Is(serr, context.Canceled):
		return fail(serr)
	default:
		return fail(errors.New("the gate did not open in 30s"))
	}
}

// stream runs an attach or exec session over the API server: WebSocket
// first, SPDY where a proxy in between does not speak it.
func (b *Backend) stream(ctx context.Context, cl *cluster, pod, sub string, opts runtime.Object, so remotecommand.StreamOptions) error {
	u := cl.cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(cl.namespace).Name(pod).
		SubResource(sub).VersionedParams(opts, scheme.ParameterCodec).URL()
	spdy, err := remotecommand.NewSPDYExecutor(cl.rest, http.MethodPost, u)
	if err != nil {
		return err
	}
	ws, err := remotecommand.NewWebSocketExecutor(cl.rest, http.MethodGet, u.String())
	if err != nil {
		return err
	}
	ex, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return err
	}
	return ex.StreamWithContext(ctx, so)
}

// sizeQueue feeds the initial size and then every resize to the session.
type sizeQueue struct {
	ctx   context.Context
	first *remotecommand.TerminalSize
	ch    <-chan sdk.TermSize
}

func newSizeQueue(ctx context.Context, req sdk.AttachRequest, ch <-chan sdk.TermSize) *sizeQueue {
	q := &sizeQueue{ctx: ctx, ch: ch}
	if req.Size.Rows > 0 && req.Size.Cols > 0 {
		q.first = &remotecommand.TerminalSize{Width: req.Size.Cols, Height: req.Size.Rows}
	}
	return q
}

func (q *sizeQueue) Next() *remotecommand.TerminalSize {
	if q.first != nil {
		f := q.first
		q.first = nil
		return f
	}
	select {
	case <-q.ctx.Done():
		return nil
	case s, ok := <-q.ch:
		if !ok {
			<-q.ctx.Done()
			return nil
		}
		return &remotecommand.TerminalSize{Width: s.Cols, Height: s.Rows}
	}
}

// exec runs argv in the agent's container and buffers its output.
func (b *Backend) exec(ctx context.Context, cl *cluster, pod string, argv []string, stdin []byte) (sdk.ExecResult, error) {
	return b.execIn(ctx, cl, pod, agentContainer, argv, stdin)
}

// execIn runs argv in one container of a pod.
func (b *Backend) execIn(ctx context.Context, cl *cluster, pod, container string, argv []string, stdin []byte) (sdk.ExecResult, error) {
	var out, errOut bytes.Buffer
	so := remotecommand.StreamOptions{Stdout: &out, Stderr: &errOut}
	if len(stdin) > 0 {
		so.Stdin = bytes.NewReader(stdin)
	}
	err := b.stream(ctx, cl, pod, "exec", &corev1.PodExecOptions{
		Container: container, Command: argv, Stdin: len(stdin) > 0, Stdout: true, Stderr: true,
	}, so)
	res := sdk.ExecResult{Stdout: out.Bytes(), Stderr: errOut.Bytes()}
	var ce utilexec.CodeExitError
	if errors.As(err, &ce) {
		res.ExitCode = ce.Code
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("kubernetes: exec in %s: %s", pod, oneLine(err))
	}
	return res, nil
}
