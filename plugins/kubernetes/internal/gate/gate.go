// Package gate is the start handshake between the kubernetes plugin and
// kube-init, the helper that holds a bottle's agent in its pod until an
// attach is there to see the agent's first output.
//
// A token on stdin alone is not enough: the runtime starts copying an
// attach's stdin before it has joined the attach to the container's stdout
// and stderr (containerd's CRI attach does exactly that), so an agent
// started by the token could write its first lines to nobody. So the gate,
// once it has the start token, announces Ready on its output until the
// plugin, having seen Ready on every output stream it attached, sends Go;
// the gate then writes Opened and becomes the agent. The plugin drops
// everything before Opened, so the markers never reach the user, and what
// follows Opened is the agent's output, whole.
package gate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

const (
	// Start asks the gate to announce itself. A later attach may send it
	// again (one that died before it saw Ready); the gate takes it as such.
	Start = "BOT-BOTTLE-START\n"
	// Go opens the gate.
	Go = "BOT-BOTTLE-GO\n"
	// Ready says the gate has Start and waits for Go; seen on a stream,
	// it proves that stream is joined.
	Ready = "<bot-bottle-gate-ready>"
	// Opened is the gate's last output: what follows is the agent's.
	Opened = "<bot-bottle-gate-open>"
)

// Announce bounds: the first Ready goes at once, repeats back off so a
// gate whose plugin went away does not flood the container's log.
const (
	firstRepeat = 10 * time.Millisecond
	maxRepeat   = time.Second
	maxLine     = 64
)

// Wait is the pod's side: it reads Start from in, announces Ready on every
// out until it reads Go, then writes Opened on every out. It reads byte by
// byte, so that nothing after Go is taken from the agent.
func Wait(in io.Reader, outs ...io.Writer) error {
	line, err := readLine(in)
	if err != nil {
		return fmt.Errorf("no start token: %w", err)
	}
	if line != Start {
		return fmt.Errorf("bad start token %q", line)
	}
	for {
		stop := announce(outs)
		line, err = readLine(in)
		stop()
		if err != nil {
			return fmt.Errorf("no go token: %w", err)
		}
		switch line {
		case Go:
			for _, w := range outs {
				if _, err := io.WriteString(w, Opened); err != nil {
					return fmt.Errorf("open the gate: %w", err)
				}
			}
			return nil
		case Start:
			// A new attach: announce again from the start of the backoff.
		default:
			return fmt.Errorf("bad go token %q", line)
		}
	}
}

// announce writes Ready on every out, at once and then backing off, until
// the returned stop is called; stop returns once no write is under way, so
// no Ready can follow Opened.
func announce(outs []io.Writer) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for d := firstRepeat; ; d = min(2*d, maxRepeat) {
			for _, w := range outs {
				_, _ = io.WriteString(w, Ready)
			}
			select {
			case <-done:
				return
			case <-time.After(d):
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

func readLine(r io.Reader) (string, error) {
	var b [1]byte
	var line []byte
	for len(line) < maxLine {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			if errors.Is(err, io.EOF) && len(line) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return string(line), err
		}
		line = append(line, b[0])
		if b[0] == '\n' {
			return string(line), nil
		}
	}
	return string(line), errors.New("token too long")
}

// Filter is the plugin's side, in front of one attached output stream: it
// holds back the gate's markers, says when it has seen Ready and Opened,
// and passes everything after Opened through.
type Filter struct {
	w      io.Writer
	mu     sync.Mutex
	buf    []byte
	open   bool
	ready  chan struct{}
	opened chan struct{}
}

// NewFilter returns a Filter that writes the agent's output to w.
func NewFilter(w io.Writer) *Filter {
	return &Filter{w: w, ready: make(chan struct{}), opened: make(chan struct{})}
}

// Ready is closed once the stream has carried Ready (or Opened).
func (f *Filter) Ready() <-chan struct{} { return f.ready }

// Opened is closed once the stream has carried Opened.
func (f *Filter) Opened() <-chan struct{} { return f.opened }

func (f *Filter) Write(p []byte) (int, error) {
	f.mu.Lock()
	if f.open {
		f.mu.Unlock()
		return f.w.Write(p)
	}
	defer f.mu.Unlock()
	f.buf = append(f.buf, p...)
	if i := bytes.Index(f.buf, []byte(Opened)); i >= 0 {
		rest := f.buf[i+len(Opened):]
		f.buf, f.open = nil, true
		f.seeReady()
		close(f.opened)
		if len(rest) > 0 {
			if _, err := f.w.Write(rest); err != nil {
				return 0, err
			}
		}
		return len(p), nil
	}
	if bytes.Contains(f.buf, []byte(Ready)) {
		f.seeReady()
	}
	// Before Opened the stream carries only markers, maybe cut at the
	// front: keep just enough to find one that straddles two writes.
	if keep := max(len(Ready), len(Opened)) - 1; len(f.buf) > keep {
		f.buf = append(f.buf[:0], f.buf[len(f.buf)-keep:]...)
	}
	return len(p), nil
}

func (f *Filter) seeReady() {
	select {
	case <-f.ready:
	default:
		close(f.ready)
	}
}

// The end of a bottle's agent, in pipe mode: the runtime ends an attach
// when the container exits and may drop what was still on its way (the
// kubelet's streams break at once), so the gate outlives the agent until
// an attach, having seen End on every stream, releases it (kube-init bye,
// run through exec: the attach's own input may be closed by then).
const End = "<bot-bottle-gate-end>"

// Hold is the pod's side of the end: it writes End on every out and waits
// until released, at most timeout (no attach may be there: a detached
// bottle's agent ends too).
func Hold(released <-chan struct{}, timeout time.Duration, outs ...io.Writer) {
	for _, w := range outs {
		_, _ = io.WriteString(w, End)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-released:
	case <-t.C:
	}
}

// EndFilter is the plugin's side of the end, in front of one attached
// output stream in pipe mode: it takes End out of the stream and says when
// it has seen it. Output that ends in what could be the start of End is
// held back until the next write or a moment later, so an agent's prompt
// without a newline still shows.
type EndFilter struct {
	w     io.Writer
	mu    sync.Mutex
	held  []byte
	ended bool
	done  chan struct{}
	timer *time.Timer
	err   error
}

// NewEndFilter returns an EndFilter that writes the agent's output to w.
func NewEndFilter(w io.Writer) *EndFilter {
	return &EndFilter{w: w, done: make(chan struct{})}
}

// Ended is closed once the stream has carried End.
func (f *EndFilter) Ended() <-chan struct{} { return f.done }

const holdFor = 30 * time.Millisecond

func (f *EndFilter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return 0, f.err
	}
	if f.ended {
		return f.w.Write(p)
	}
	buf := append(f.held, p...)
	f.held = nil
	if i := bytes.Index(buf, []byte(End)); i >= 0 {
		f.ended = true
		close(f.done)
		rest := append(buf[:i:i], buf[i+len(End):]...)
		if len(rest) > 0 {
			if _, err := f.w.Write(rest); err != nil {
				return 0, err
			}
		}
		return len(p), nil
	}
	keep := 0
	for n := min(len(End)-1, len(buf)); n > 0; n-- {
		if bytes.HasSuffix(buf, []byte(End[:n])) {
			keep = n
			break
		}
	}
	if out := buf[:len(buf)-keep]; len(out) > 0 {
		if _, err := f.w.Write(out); err != nil {
			return 0, err
		}
	}
	if keep > 0 {
		f.held = append([]byte(nil), buf[len(buf)-keep:]...)
		if f.timer == nil {
			f.timer = time.AfterFunc(holdFor, f.flush)
		} else {
			f.timer.Reset(holdFor)
		}
	}
	return len(p), nil
}

// flush writes what was held back: no End followed it in time.
func (f *EndFilter) flush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.held) > 0 && !f.ended {
		_, f.err = f.w.Write(f.held)
		f.held = nil
	}
}

// Close writes what is still held back (the stream ended without End).
func (f *EndFilter) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.timer != nil {
		f.timer.Stop()
	}
	if len(f.held) > 0 {
		_, _ = f.w.Write(f.held)
		f.held = nil
	}
}

// Filters are the start filters of one attach's output streams: the
// handshake goes on only once every stream has carried a marker.
type Filters []*Filter

// WaitReady waits until every stream has carried Ready, or ctx ends.
func (fs Filters) WaitReady(ctx context.Context) error {
	return waitAll(ctx, len(fs), func(i int) <-chan struct{} { return fs[i].Ready() })
}

// WaitOpened waits until every stream has carried Opened, or ctx ends.
func (fs Filters) WaitOpened(ctx context.Context) error {
	return waitAll(ctx, len(fs), func(i int) <-chan struct{} { return fs[i].Opened() })
}

// Opened says whether every stream has carried Opened, without waiting.
func (fs Filters) Opened() bool {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return fs.WaitOpened(ctx) == nil
}

// WaitEnded waits until every stream has carried End, or ctx ends.
func WaitEnded(ctx context.Context, fs ...*EndFilter) error {
	return waitAll(ctx, len(fs), func(i int) <-chan struct{} { return fs[i].Ended() })
}

func waitAll(ctx context.Context, n int, ch func(int) <-chan struct{}) error {
	for i := range n {
		select {
		case <-ch(i):
			continue
		default:
		}
		select {
		case <-ch(i):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
