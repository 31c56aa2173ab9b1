// Command probe is the test agent's way around its proxy: it dials a TCP
// address directly, optionally on a socket bound to a device
// (SO_BINDTODEVICE needs no privilege, and makes the kernel take a
// destination with no route as on-link), and prints CONNECTED or why not.
//
//	probe ADDR [DEVICE]
package main

import (
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: probe ADDR [DEVICE]")
		os.Exit(2)
	}
	d := net.Dialer{Timeout: 4 * time.Second}
	if len(os.Args) > 2 {
		dev := os.Args[2]
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptString(int(fd), syscall.SOL_SOCKET, syscall.SO_BINDTODEVICE, dev)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	c, err := d.Dial("tcp4", os.Args[1])
	if err != nil {
		fmt.Println("probe:", err)
		os.Exit(1)
	}
	c.Close()
	fmt.Println("CONNECTED")
}
