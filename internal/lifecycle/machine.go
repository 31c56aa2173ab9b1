package lifecycle

import (
	"fmt"
)

// Phase is where a bottle is in its life. See the package doc for the
// machine; Transition is the one place its rules live.
type Phase string

const (
	// PhaseNew: minted and recorded, its first launch under way.
	PhaseNew Phase = "new"
	// PhaseResuming: a stopped bottle whose next launch is under way.
	PhaseResuming Phase = "resuming"
	// PhaseRunning: launched; the backend has it (attached or detached).
	PhaseRunning Phase = "running"
	// PhaseStopped: nothing runs; the state is kept for resume.
	PhaseStopped Phase = "stopped"
	// PhaseRemoved: the state is gone (the audit log stays).
	PhaseRemoved Phase = "removed"
)

// Event is something that happens to a bottle.
type Event string

const (
	EvLaunched     Event = "launched"      // Launch returned a handle
	EvLaunchFailed Event = "launch-failed" // Prepare, the build or Launch failed
	EvPluginGone   Event = "plugin-gone"   // the plugin crashed or hung mid-session
	EvDetached     Event = "detached"      // the attached terminal let go; it runs on
	EvExited       Event = "exited"        // the agent ended; its session closes
	EvStop         Event = "stop"          // `stop`
	EvStopPreserve Event = "stop-preserve" // `stop --preserve`
	EvCommit       Event = "commit"        // a snapshot was recorded
	EvCapApproved  Event = "capability"    // an approved capability change
	EvResume       Event = "resume"        // `resume` begins a launch
	EvRevert       Event = "revert"        // `revert` drops the change that did not build
	EvOrphaned     Event = "orphaned"      // prune removed what no process held
	EvRemove       Event = "rm"            // `rm`
	EvInterrupted  Event = "interrupted"   // Ctrl-C / SIGTERM of the holder mid-session
)

// Outcome is what a transition leads to.
type Outcome struct {
	Phase Phase
	Kept  bool
	// Teardown: the backend's resources of the bottle go (snapshots
	// excepted, unless the bottle is removed).
	Teardown bool
}

// Removes reports whether the outcome deletes the bottle's state.
func (o Outcome) Removes() bool { return o.Phase == PhaseRemoved }

// TransitionError is a refused transition: the event makes no sense in the
// bottle's phase. Its message says why, in one line.
type TransitionError struct {
	Phase Phase
	Event Event
	Why   string
}

func (e *TransitionError) Error() string { return e.Why }

// Transition is the bottle's state machine: from phase (kept or not), event
// leads to the returned outcome, or is refused. Its rules:
//   - kept means kept until rm: no event but EvRemove removes a kept bottle;
//   - a failed first launch removes everything it made; a failed resume
//     keeps the bottle as it was;
//   - a crash of the plugin keeps the state, so the bottle can be resumed;
//   - commit, an approved capability and stop --preserve make a bottle kept.
func Transition(phase Phase, kept bool, ev Event) (Outcome, error) {
	refuse := func(format string, args ...any) (Outcome, error) {
		return Outcome{Phase: phase, Kept: kept}, &TransitionError{Phase: phase, Event: ev, Why: fmt.Sprintf(format, args...)}
	}
	endOfSession := func() Outcome {
		if kept {
			return Outcome{Phase: PhaseStopped, Kept: true, Teardown: true}
		}
		return Outcome{Phase: PhaseRemoved, Teardown: true}
	}
	if phase == PhaseRemoved {
		return refuse("the bottle no longer exists")
	}
	if ev == EvRemove {
		return Outcome{Phase: PhaseRemoved, Teardown: true}, nil
	}
	launching := phase == PhaseNew || phase == PhaseResuming
	switch ev {
	case EvLaunched:
		if !launching {
			return refuse("the bottle is %s, not launching", phase)
		}
		return Outcome{Phase: PhaseRunning, Kept: kept}, nil
	case EvLaunchFailed:
		switch phase {
		case PhaseNew:
			if kept {
				return Outcome{Phase: PhaseStopped, Kept: true, Teardown: true}, nil
			}
			return Outcome{Phase: PhaseRemoved, Teardown: true}, nil
		case PhaseResuming:
			return Outcome{Phase: PhaseStopped, Kept: kept, Teardown: true}, nil
		}
		return refuse("the bottle is %s, not launching", phase)
	case EvPluginGone, EvOrphaned:
		if phase == PhaseStopped {
			return refuse("the bottle is stopped")
		}
		return Outcome{Phase: PhaseStopped, Kept: kept, Teardown: true}, nil
	case EvInterrupted:
		if phase == PhaseStopped {
			return refuse("the bottle is stopped")
		}
		if phase == PhaseResuming {
			return Outcome{Phase: PhaseStopped, Kept: kept, Teardown: true}, nil
		}
		return endOfSession(), nil
	case EvDetached:
		if phase != PhaseRunning {
			return refuse("the bottle is %s, not running", phase)
		}
		return Outcome{Phase: PhaseRunning, Kept: kept}, nil
	case EvExited:
		if phase != PhaseRunning {
			return refuse("the bottle is %s, not running", phase)
		}
		return endOfSession(), nil
	case EvStop:
		if launching {
			return refuse("the bottle is being launched by another bot-bottle process; try again when it runs")
		}
		return endOfSession(), nil
	case EvStopPreserve:
		if launching {
			return refuse("the bottle is being launched by another bot-bottle process; try again when it runs")
		}
		return Outcome{Phase: PhaseStopped, Kept: true, Teardown: phase == PhaseRunning}, nil
	case EvCommit:
		if phase != PhaseRunning {
			return refuse("only a running bottle can be committed (it is %s)", phase)
		}
		return Outcome{Phase: PhaseRunning, Kept: true}, nil
	case EvCapApproved:
		if phase == PhaseRunning {
			return Outcome{Phase: PhaseStopped, Kept: true, Teardown: true}, nil
		}
		// Not running: the change applies at its next launch.
		return Outcome{Phase: phase, Kept: true}, nil
	case EvResume:
		switch phase {
		case PhaseStopped:
			return Outcome{Phase: PhaseResuming, Kept: kept}, nil
		case PhaseRunning:
			return refuse("the bottle is running; attach to it instead")
		}
		return refuse("the bottle is being launched by another bot-bottle process")
	case EvRevert:
		if phase != PhaseStopped {
			return refuse("only a stopped bottle can be reverted (it is %s)", phase)
		}
		return Outcome{Phase: PhaseStopped, Kept: kept}, nil
	}
	return refuse("unknown event %q", ev)
}

// Phases and Events list every value, for the table test and the docs.
var (
	Phases = []Phase{PhaseNew, PhaseResuming, PhaseRunning, PhaseStopped, PhaseRemoved}
	Events = []Event{EvLaunched, EvLaunchFailed, EvPluginGone, EvDetached, EvExited, EvStop, EvStopPreserve,
		EvCommit, EvCapApproved, EvResume, EvRevert, EvOrphaned, EvRemove, EvInterrupted}
)
