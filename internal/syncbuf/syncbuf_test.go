package syncbuf

import (
	"testing"
	"time"
)

func TestWaitForFindsLaterOutput(t *testing.T) {
	var b Buffer
	go func() {
		time.Sleep(30 * time.Millisecond)
		b.Write([]byte("one two "))
		time.Sleep(30 * time.Millisecond)
		b.Write([]byte("two three"))
	}()
	pos := b.WaitFor(t, 0, "two", time.Second)
	if pos != len("one two") {
		t.Fatalf("first two ends at %d", pos)
	}
	if pos = b.WaitFor(t, pos, "two", time.Second); pos != len("one two two") {
		t.Fatalf("second two ends at %d", pos)
	}
}
