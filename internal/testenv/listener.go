package testenv

import (
	"net"
	"sync/atomic"
	"testing"
)

// CountingListener listens on addr and counts the connections it accepts
// (closing each at once), for tests that prove nothing connects to it. It
// is closed when the test ends.
func CountingListener(t testing.TB, network, addr string) (port int, accepted *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatalf("listen %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted = &atomic.Int64{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, accepted
}
