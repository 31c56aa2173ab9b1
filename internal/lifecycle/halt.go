package lifecycle

import (
	"os"
	"syscall"
	"time"
)

// EnvTestHalt names a point of a start or resume at which the core kills
// itself with SIGKILL: the crash tests' way to stop it exactly there, as a
// user's kill -9 or a power cut would. Never set it outside tests.
const EnvTestHalt = "BOT_BOTTLE_TEST_HALT"

// The named points, in the order a launch passes them.
const (
	HaltMinted   = "minted"   // start: identity minted, metadata written
	HaltPrepared = "prepared" // Prepare answered, preflight printed
	HaltBuilding = "building" // the first progress event of Launch
	HaltLaunched = "launched" // Launch returned; the handle is recorded
	HaltAttached = "attached" // the attached session is under way
)

// halt kills this process when EnvTestHalt names point.
func (e *Env) halt(point string) {
	if e.getenv(EnvTestHalt) != point {
		return
	}
	if point == HaltAttached {
		// Mid-attach, not before it: let the stream start first.
		go func() {
			time.Sleep(500 * time.Millisecond)
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}()
		return
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}
