// Command pause is the test cluster's pod sandbox process: it holds the
// pod's namespaces and waits for SIGTERM or SIGINT (pods here share no PID
// namespace, so it has no orphans to reap). It is
// built static and is the only file of the pause image, which
// scripts/test-cluster.sh imports into its containerd (no registry here).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
