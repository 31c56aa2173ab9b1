// Package syncbuf is a byte buffer that a child process or goroutine writes
// while a test reads it, with a wait for expected output. Tests only.
package syncbuf

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

// Buffer is a bytes.Buffer safe for concurrent writers and readers.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// WaitFor waits until want appears at or after byte offset after, and
// returns the offset just past it; the test fails after timeout.
func (b *Buffer) WaitFor(t testing.TB, after int, want string, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out := b.String()
		if i := strings.Index(out[min(after, len(out)):], want); i >= 0 {
			return min(after, len(out)) + i + len(want)
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %q; have:\n%s", timeout, want, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
