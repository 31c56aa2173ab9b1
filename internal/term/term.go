// Package term owns the user's terminal while a bottle is attached: raw mode
// (always restored), window-size changes, and the detach key sequence.
package term

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"

	xterm "golang.org/x/term"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool { return f != nil && xterm.IsTerminal(int(f.Fd())) }

// Size returns f's window size, or zero when unknown.
func Size(f *os.File) sdk.TermSize {
	cols, rows, err := xterm.GetSize(int(f.Fd()))
	if err != nil {
		return sdk.TermSize{}
	}
	return sdk.TermSize{Rows: uint16(rows), Cols: uint16(cols)}
}

// Raw puts f into raw mode and returns the function that restores it. The
// restore is idempotent so every exit path can call it.
func Raw(f *os.File) (restore func(), err error) {
	st, err := xterm.MakeRaw(int(f.Fd()))
	if err != nil {
		return func() {}, err
	}
	var once sync.Once
	return func() { once.Do(func() { _ = xterm.Restore(int(f.Fd()), st) }) }, nil
}

// WatchResize sends f's size on every SIGWINCH until ctx ends.
func WatchResize(ctx context.Context, f *os.File) <-chan sdk.TermSize {
	ch := make(chan sdk.TermSize, 1)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGWINCH)
	go func() {
		defer signal.Stop(sig)
		for {
			select {
			case <-ctx.Done():
				return
			case <-sig:
				select {
				case ch <- Size(f):
				default:
				}
			}
		}
	}()
	return ch
}

// DetachKeys is Ctrl-P Ctrl-Q, the sequence Docker users already know.
var DetachKeys = []byte{0x10, 0x11}

// DetachReader passes input through until it sees the detach sequence, then
// calls onDetach and reports EOF. A lone Ctrl-P is held back until the next
// byte shows it is not the start of the sequence.
type DetachReader struct {
	R        io.Reader
	OnDetach func()
	pending  []byte
	out      []byte
	done     bool
}

func (d *DetachReader) Read(p []byte) (int, error) {
	for len(d.out) == 0 {
		if d.done {
			return 0, io.EOF
		}
		buf := make([]byte, len(p))
		n, err := d.R.Read(buf)
		for _, b := range buf[:n] {
			d.pending = append(d.pending, b)
			if bytes.HasPrefix(DetachKeys, d.pending) {
				if len(d.pending) == len(DetachKeys) {
					d.done = true
					d.pending = nil
					if d.OnDetach != nil {
						d.OnDetach()
					}
					break
				}
				continue
			}
			// Not the sequence: release bytes until what is held back could
			// still start it.
			for len(d.pending) > 0 && !bytes.HasPrefix(DetachKeys, d.pending) {
				d.out = append(d.out, d.pending[0])
				d.pending = d.pending[1:]
			}
		}
		if err != nil && len(d.out) == 0 {
			if len(d.pending) > 0 {
				d.out, d.pending = d.pending, nil
				break
			}
			return 0, err
		}
	}
	n := copy(p, d.out)
	d.out = d.out[n:]
	return n, nil
}
