package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The proxy's bytes move in the kernel where it can: between two TCP
// connections, net.TCPConn.ReadFrom splices, and nothing is copied through
// the proxy's memory. A wrapper on either side (a reader noting activity, a
// writer hiding ReadFrom) makes it fall back to a read and a write per
// buffer, which cost the proxy 40 % of a direct download. Idleness is then
// judged from the kernel's own counters (TCP_INFO), not from each read.

// spliceMin is the smallest forwarded body worth the switch to splicing.
const spliceMin = 64 << 10

// kernelBytes is what the kernel counts as moved on c: bytes received, and
// bytes sent that the peer acknowledged. ok is false for a connection that
// is not TCP (then the caller copies through its own buffer).
func kernelBytes(c net.Conn) (n uint64, ok bool) {
	tc, isTCP := c.(*net.TCPConn)
	if !isTCP {
		return 0, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || gerr != nil {
		return 0, false
	}
	return info.Bytes_received + info.Bytes_acked, true
}

// progress sums kernelBytes over conns; ok only when every one is TCP.
func progress(conns ...net.Conn) (uint64, bool) {
	var sum uint64
	for _, c := range conns {
		n, ok := kernelBytes(c)
		if !ok {
			return 0, false
		}
		sum += n
	}
	return sum, true
}

// idleWatch calls stop once conns moved no byte for idle, checking a few
// times per idle period, until the returned function is called.
func idleWatch(idle time.Duration, stop func(), conns ...net.Conn) (done func()) {
	quit := make(chan struct{})
	go func() {
		every := min(max(idle/4, 10*time.Millisecond), 30*time.Second)
		tick := time.NewTicker(every)
		defer tick.Stop()
		last, _ := progress(conns...)
		lastMove := time.Now()
		for {
			select {
			case <-quit:
				return
			case now := <-tick.C:
				if n, _ := progress(conns...); n != last {
					last, lastMove = n, now
				} else if now.Sub(lastMove) >= idle {
					stop()
					return
				}
			}
		}
	}()
	return func() { close(quit) }
}

// countingConn is an upstream connection of a forwarded request: it fails
// a read or write that makes no progress for idle, and counts the reads
// made through it, so that the forwarder can tell when the transport's
// buffer holds no more of the body and the rest can be spliced from raw.
type countingConn struct {
	net.Conn
	idle  time.Duration
	reads atomic.Int64
}

func (c *countingConn) Read(b []byte) (int, error) {
	c.reads.Add(1)
	c.Conn.SetReadDeadline(time.Now().Add(c.idle))
	return c.Conn.Read(b)
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.idle))
	return c.Conn.Write(b)
}

// upstreamKey holds, in a forwarded request's context, the connection the
// transport dialed for it.
type upstreamKey struct{}

type upstreamSlot struct{ c atomic.Pointer[countingConn] }

type writerKey struct{}

// spliceResponse lets a large response with a known length go from the
// upstream connection to the client's in the kernel. It runs as the
// forwarder's ModifyResponse and replaces the body with one that does the
// whole copy on its first read, when the status and headers are written.
func (p *Proxy) spliceResponse(resp *http.Response) error {
	ctx := resp.Request.Context()
	slot, _ := ctx.Value(upstreamKey{}).(*upstreamSlot)
	w, _ := ctx.Value(writerKey{}).(http.ResponseWriter)
	if slot == nil || w == nil || resp.ContentLength < spliceMin || len(resp.TransferEncoding) > 0 ||
		len(resp.Trailer) > 0 || resp.Request.Method == http.MethodHead || resp.StatusCode < 200 ||
		resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified {
		return nil
	}
	up := slot.c.Load()
	if up == nil {
		return nil
	}
	if _, ok := up.Conn.(*net.TCPConn); !ok {
		return nil
	}
	resp.Body = &splicedBody{ReadCloser: resp.Body, up: up, w: w, left: resp.ContentLength, idle: p.idleTimeout}
	return nil
}

// splicedBody is a response body that, on its first read, writes itself to
// the client: first what the transport already buffered, through a buffer,
// then the rest spliced from the upstream connection. It then reports EOF.
type splicedBody struct {
	io.ReadCloser
	up   *countingConn
	w    http.ResponseWriter
	left int64
	idle time.Duration
	done bool
}

func (b *splicedBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	b.done = true
	if err := b.copy(); err != nil {
		return 0, err
	}
	return 0, io.EOF
}

func (b *splicedBody) copy() error {
	// The transport reads the body through its own buffer (4 KiB). A read
	// of at least that size that reaches the connection shows the buffer
	// empty: the rest of the body is still in the socket.
	buf := make([]byte, 32<<10)
	for b.left > 0 {
		want := int64(len(buf))
		before := b.up.reads.Load()
		n, err := b.ReadCloser.Read(buf[:min(want, b.left)])
		if n > 0 {
			if _, werr := b.w.Write(buf[:n]); werr != nil {
				return werr
			}
			b.left -= int64(n)
		}
		if err != nil {
			if errors.Is(err, io.EOF) && b.left > 0 {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		if b.up.reads.Load() != before && b.left >= want {
			break
		}
	}
	if b.left == 0 {
		return nil
	}
	rf, ok := b.w.(io.ReaderFrom)
	if !ok {
		// Not a connection of net/http's own: copy the rest as the
		// transport would, through the deadline-keeping connection.
		n, err := io.CopyBuffer(struct{ io.Writer }{b.w}, io.LimitReader(b.up, b.left), buf)
		if b.left -= n; err == nil && b.left > 0 {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	raw := b.up.Conn.(*net.TCPConn)
	rc := http.NewResponseController(b.w)
	raw.SetDeadline(time.Time{})
	done := idleWatch(b.idle, func() {
		raw.SetDeadline(time.Now())
		rc.SetWriteDeadline(time.Now())
	}, raw)
	n, err := rf.ReadFrom(io.LimitReader(raw, b.left))
	done()
	b.left -= n
	if err == nil && b.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// withSplice puts what spliceResponse needs into a forwarded request's
// context.
func withSplice(ctx context.Context, w http.ResponseWriter) context.Context {
	return context.WithValue(context.WithValue(ctx, upstreamKey{}, &upstreamSlot{}), writerKey{}, w)
}

// LocalCongestion is the congestion control of the sockets a proxy accepts
// from its bottles. The bottle and its proxy share a host: the leg between
// them is a veth pair and a bridge, with no queue to build and nothing to
// share fairly. A pacing default (BBR, which hosts often choose for the
// internet) still spaces every burst out by a timer there, and the agent
// wakes for smaller reads: on the Docker plugin's 100 MiB download the
// proxied path cost 200 ms of CPU with it and 146 ms without (direct: 134
// and 121 in the same runs). Reno never paces, and is the one
// congestion control every kernel offers to an unprivileged socket. The
// proxy's own connections out keep the host's choice: they cross the
// internet.
const LocalCongestion = "reno"

// ListenLocal is a net.ListenConfig Control hook for a listener of bottle
// connections: it sets LocalCongestion, which the accepted sockets inherit.
func ListenLocal(_, _ string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, LocalCongestion)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("congestion control %s: %w", LocalCongestion, serr)
	}
	return nil
}
