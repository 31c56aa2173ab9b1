package lifecycle

import (
	"os"
	"syscall"
	"time"

	"github.com/bot-bottle/bot-bottle/internal/review"
)

// EnvTestHalt names a point of a flow (start, resume, the review commands,
// rm, an egress or a capability approval) at which the core kills itself with SIGKILL: the crash tests' way to
// stop it exactly there, as a user's kill -9 or a power cut would. Never
// set it outside tests.
const EnvTestHalt = "BOT_BOTTLE_TEST_HALT"

// The named points, in the order a launch passes them.
const (
	HaltMinted   = "minted"   // start: identity minted, metadata written
	HaltPrepared = "prepared" // Prepare answered, preflight printed
	HaltBuilding = "building" // the first progress event of Launch
	HaltLaunched = "launched" // Launch returned; the handle is recorded
	HaltAttached = "attached" // the attached session is under way
)

// The review commands' points (diff, apply, merge, and rm of a --review
// bottle), passed through review.Bottle.Halt, and rm's own.
const (
	HaltReviewSnapshotted = review.HaltSnapshotted     // the clone's work is a commit in core.git
	HaltReviewFetched     = review.HaltFetched         // it is the bottle's branch in the operator's repository; apply and merge have touched nothing
	HaltMergeCommitted    = review.HaltMergeCommitted  // merge: the merge commit is made and journalled; nothing checked out
	HaltMergeCheckedOut   = review.HaltMergeCheckedOut // merge: index and worktree are the merge's; the branch not yet moved
	HaltRemoveSaved       = "rm-saved"                 // rm: the work is saved as its branch (or the branch dropped); the state not yet removed
)

// The points of an egress approval.
const (
	HaltEgressDecided    = "egress-decided"     // decided and held; the allowlist not yet widened
	HaltEgressCarriedOut = "egress-carried-out" // the allowlist widened (metadata and live); not yet released to the bottle
)

// The points of a capability approval.
const (
	HaltCapabilityDecided    = "capability-decided"     // decided and held; nothing written
	HaltCapabilityWritten    = "capability-written"     // audited and the bottle's Dockerfile written; not yet kept
	HaltCapabilityCarriedOut = "capability-carried-out" // written, kept; not yet released to the bottle, nor stopped
	HaltCapabilityReleased   = "capability-released"    // released to the bottle; the bottle not yet stopped
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
