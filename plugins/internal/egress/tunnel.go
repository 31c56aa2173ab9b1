package egress

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// tunnel is one CONNECT tunnel in progress.
type tunnel struct {
	client, upstream net.Conn
	last             atomic.Int64 // unix nanoseconds of the last byte moved
	closeOnce        sync.Once
}

func (t *tunnel) close() {
	t.closeOnce.Do(func() {
		t.client.Close()
		t.upstream.Close()
	})
}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}

// tunnel copies bytes both ways until both sides have finished sending, one
// side fails, the tunnel idles for the idle timeout or the proxy shuts down.
func (p *Proxy) tunnel(client, upstream net.Conn) error {
	t := &tunnel{client: client, upstream: upstream}
	t.last.Store(time.Now().UnixNano())
	if !p.track(t) {
		t.close()
		return errors.New("proxy is shutting down")
	}
	defer p.untrack(t)
	defer t.close()

	// Between two TCP connections the copies splice, and the kernel's
	// counters tell whether bytes move; otherwise every read notes it.
	_, kernel := progress(client, upstream)
	// Said, because a wrapper on either connection silently costs the
	// splice (and 40 % of a download).
	how := "buffered"
	if kernel {
		how = "splice"
	}
	p.log.Debug("tunnel open", "upstream", upstream.RemoteAddr().String(), "copy", how)
	if kernel {
		defer idleWatch(p.idleTimeout, func() {
			p.log.Info("closing idle tunnel", "upstream", t.upstream.RemoteAddr().String(), "idle", p.idleTimeout.String())
			t.close()
		}, client, upstream)()
	} else {
		done := make(chan struct{})
		defer close(done)
		go p.watchIdle(t, done)
	}

	errc := make(chan error, 2)
	go func() { errc <- t.pipe(upstream, client, kernel) }()
	go func() { errc <- t.pipe(client, upstream, kernel) }()
	var first error
	for range 2 {
		if err := <-errc; err != nil && first == nil {
			first = err
			t.close() // unblock the other direction
		}
	}
	if first != nil && !errors.Is(first, net.ErrClosed) {
		return first
	}
	return nil
}

// pipe copies src to dst, then half-closes dst so the other side sees EOF
// while the opposite direction may still be running. With splice (both TCP)
// the kernel moves the bytes; otherwise every read records activity.
func (t *tunnel) pipe(dst, src net.Conn, splice bool) error {
	var err error
	if splice {
		_, err = dst.(*net.TCPConn).ReadFrom(src)
	} else {
		bp := copyBuffers.Get().(*[]byte)
		defer copyBuffers.Put(bp)
		// Neither side may short-cut the copy: the reader records
		// activity and the writer would otherwise bring its own buffer.
		_, err = io.CopyBuffer(struct{ io.Writer }{dst}, activityReader{src, &t.last}, *bp)
	}
	if err != nil {
		return fmt.Errorf("tunnel copy: %w", err)
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	return nil
}

// watchIdle closes t once no byte moved either way for the idle timeout.
func (p *Proxy) watchIdle(t *tunnel, done <-chan struct{}) {
	every := min(max(p.idleTimeout/4, 10*time.Millisecond), 30*time.Second)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case now := <-tick.C:
			if now.Sub(time.Unix(0, t.last.Load())) >= p.idleTimeout {
				p.log.Info("closing idle tunnel", "upstream", t.upstream.RemoteAddr().String(), "idle", p.idleTimeout.String())
				t.close()
				return
			}
		}
	}
}

// activityReader notes when bytes arrive. It hides the connection's
// WriterTo on purpose, so every read passes through here.
type activityReader struct {
	r    io.Reader
	last *atomic.Int64
}

func (a activityReader) Read(b []byte) (int, error) {
	n, err := a.r.Read(b)
	if n > 0 {
		a.last.Store(time.Now().UnixNano())
	}
	return n, err
}

func (p *Proxy) track(t *tunnel) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.tunnels[t] = struct{}{}
	return true
}

func (p *Proxy) untrack(t *tunnel) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.tunnels, t)
}

// closeTunnels ends every tunnel and refuses new ones.
func (p *Proxy) closeTunnels() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for t := range p.tunnels {
		t.close()
	}
}
