package lifecycle

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// machineTable is the bottle's state machine written out whole: every
// (phase, kept, event) and what it leads to — "PHASE KEPT[ teardown]" or
// "refused". ARCHITECTURE.md draws the same machine.
var machineTable = []struct {
	phase Phase
	kept  string
	want  string
	ev    Event
}{
	{"new", "-", "running -", "launched"},
	{"new", "kept", "running kept", "launched"},
	{"resuming", "-", "running -", "launched"},
	{"resuming", "kept", "running kept", "launched"},
	{"running", "-", "refused", "launched"},
	{"running", "kept", "refused", "launched"},
	{"stopped", "-", "refused", "launched"},
	{"stopped", "kept", "refused", "launched"},
	{"removed", "-", "refused", "launched"},
	{"removed", "kept", "refused", "launched"},
	{"new", "-", "removed - teardown", "launch-failed"},
	{"new", "kept", "stopped kept teardown", "launch-failed"},
	{"resuming", "-", "stopped - teardown", "launch-failed"},
	{"resuming", "kept", "stopped kept teardown", "launch-failed"},
	{"running", "-", "refused", "launch-failed"},
	{"running", "kept", "refused", "launch-failed"},
	{"stopped", "-", "refused", "launch-failed"},
	{"stopped", "kept", "refused", "launch-failed"},
	{"removed", "-", "refused", "launch-failed"},
	{"removed", "kept", "refused", "launch-failed"},
	{"new", "-", "stopped - teardown", "plugin-gone"},
	{"new", "kept", "stopped kept teardown", "plugin-gone"},
	{"resuming", "-", "stopped - teardown", "plugin-gone"},
	{"resuming", "kept", "stopped kept teardown", "plugin-gone"},
	{"running", "-", "stopped - teardown", "plugin-gone"},
	{"running", "kept", "stopped kept teardown", "plugin-gone"},
	{"stopped", "-", "refused", "plugin-gone"},
	{"stopped", "kept", "refused", "plugin-gone"},
	{"removed", "-", "refused", "plugin-gone"},
	{"removed", "kept", "refused", "plugin-gone"},
	{"new", "-", "refused", "detached"},
	{"new", "kept", "refused", "detached"},
	{"resuming", "-", "refused", "detached"},
	{"resuming", "kept", "refused", "detached"},
	{"running", "-", "running -", "detached"},
	{"running", "kept", "running kept", "detached"},
	{"stopped", "-", "refused", "detached"},
	{"stopped", "kept", "refused", "detached"},
	{"removed", "-", "refused", "detached"},
	{"removed", "kept", "refused", "detached"},
	{"new", "-", "refused", "exited"},
	{"new", "kept", "refused", "exited"},
	{"resuming", "-", "refused", "exited"},
	{"resuming", "kept", "refused", "exited"},
	{"running", "-", "removed - teardown", "exited"},
	{"running", "kept", "stopped kept teardown", "exited"},
	{"stopped", "-", "refused", "exited"},
	{"stopped", "kept", "refused", "exited"},
	{"removed", "-", "refused", "exited"},
	{"removed", "kept", "refused", "exited"},
	{"new", "-", "refused", "stop"},
	{"new", "kept", "refused", "stop"},
	{"resuming", "-", "refused", "stop"},
	{"resuming", "kept", "refused", "stop"},
	{"running", "-", "removed - teardown", "stop"},
	{"running", "kept", "stopped kept teardown", "stop"},
	{"stopped", "-", "removed - teardown", "stop"},
	{"stopped", "kept", "stopped kept teardown", "stop"},
	{"removed", "-", "refused", "stop"},
	{"removed", "kept", "refused", "stop"},
	{"new", "-", "refused", "stop-preserve"},
	{"new", "kept", "refused", "stop-preserve"},
	{"resuming", "-", "refused", "stop-preserve"},
	{"resuming", "kept", "refused", "stop-preserve"},
	{"running", "-", "stopped kept teardown", "stop-preserve"},
	{"running", "kept", "stopped kept teardown", "stop-preserve"},
	{"stopped", "-", "stopped kept", "stop-preserve"},
	{"stopped", "kept", "stopped kept", "stop-preserve"},
	{"removed", "-", "refused", "stop-preserve"},
	{"removed", "kept", "refused", "stop-preserve"},
	{"new", "-", "refused", "commit"},
	{"new", "kept", "refused", "commit"},
	{"resuming", "-", "refused", "commit"},
	{"resuming", "kept", "refused", "commit"},
	{"running", "-", "running kept", "commit"},
	{"running", "kept", "running kept", "commit"},
	{"stopped", "-", "refused", "commit"},
	{"stopped", "kept", "refused", "commit"},
	{"removed", "-", "refused", "commit"},
	{"removed", "kept", "refused", "commit"},
	{"new", "-", "new kept", "capability"},
	{"new", "kept", "new kept", "capability"},
	{"resuming", "-", "resuming kept", "capability"},
	{"resuming", "kept", "resuming kept", "capability"},
	{"running", "-", "stopped kept teardown", "capability"},
	{"running", "kept", "stopped kept teardown", "capability"},
	{"stopped", "-", "stopped kept", "capability"},
	{"stopped", "kept", "stopped kept", "capability"},
	{"removed", "-", "refused", "capability"},
	{"removed", "kept", "refused", "capability"},
	{"new", "-", "refused", "resume"},
	{"new", "kept", "refused", "resume"},
	{"resuming", "-", "refused", "resume"},
	{"resuming", "kept", "refused", "resume"},
	{"running", "-", "refused", "resume"},
	{"running", "kept", "refused", "resume"},
	{"stopped", "-", "resuming -", "resume"},
	{"stopped", "kept", "resuming kept", "resume"},
	{"removed", "-", "refused", "resume"},
	{"removed", "kept", "refused", "resume"},
	{"new", "-", "refused", "revert"},
	{"new", "kept", "refused", "revert"},
	{"resuming", "-", "refused", "revert"},
	{"resuming", "kept", "refused", "revert"},
	{"running", "-", "refused", "revert"},
	{"running", "kept", "refused", "revert"},
	{"stopped", "-", "stopped -", "revert"},
	{"stopped", "kept", "stopped kept", "revert"},
	{"removed", "-", "refused", "revert"},
	{"removed", "kept", "refused", "revert"},
	{"new", "-", "stopped - teardown", "orphaned"},
	{"new", "kept", "stopped kept teardown", "orphaned"},
	{"resuming", "-", "stopped - teardown", "orphaned"},
	{"resuming", "kept", "stopped kept teardown", "orphaned"},
	{"running", "-", "stopped - teardown", "orphaned"},
	{"running", "kept", "stopped kept teardown", "orphaned"},
	{"stopped", "-", "refused", "orphaned"},
	{"stopped", "kept", "refused", "orphaned"},
	{"removed", "-", "refused", "orphaned"},
	{"removed", "kept", "refused", "orphaned"},
	{"new", "-", "removed - teardown", "rm"},
	{"new", "kept", "removed - teardown", "rm"},
	{"resuming", "-", "removed - teardown", "rm"},
	{"resuming", "kept", "removed - teardown", "rm"},
	{"running", "-", "removed - teardown", "rm"},
	{"running", "kept", "removed - teardown", "rm"},
	{"stopped", "-", "removed - teardown", "rm"},
	{"stopped", "kept", "removed - teardown", "rm"},
	{"removed", "-", "refused", "rm"},
	{"removed", "kept", "refused", "rm"},
	{"new", "-", "removed - teardown", "interrupted"},
	{"new", "kept", "stopped kept teardown", "interrupted"},
	{"resuming", "-", "stopped - teardown", "interrupted"},
	{"resuming", "kept", "stopped kept teardown", "interrupted"},
	{"running", "-", "removed - teardown", "interrupted"},
	{"running", "kept", "stopped kept teardown", "interrupted"},
	{"stopped", "-", "refused", "interrupted"},
	{"stopped", "kept", "refused", "interrupted"},
	{"removed", "-", "refused", "interrupted"},
	{"removed", "kept", "refused", "interrupted"},
}

func TestTransitionTable(t *testing.T) {
	seen := map[string]bool{}
	for _, row := range machineTable {
		kept := row.kept == "kept"
		key := fmt.Sprintf("%s/%v/%s", row.phase, kept, row.ev)
		if seen[key] {
			t.Fatalf("%s is in the table twice", key)
		}
		seen[key] = true
		o, err := Transition(row.phase, kept, row.ev)
		if row.want == "refused" {
			var te *TransitionError
			if !errors.As(err, &te) {
				t.Errorf("%s: want refused, got %+v, %v", key, o, err)
				continue
			}
			if msg := err.Error(); msg == "" || strings.Contains(msg, "\n") {
				t.Errorf("%s: the refusal must be one clear line, got %q", key, msg)
			}
			if o.Phase != row.phase || o.Kept != kept || o.Teardown {
				t.Errorf("%s: a refused event must change nothing, got %+v", key, o)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: want %q, refused: %v", key, row.want, err)
			continue
		}
		got := fmt.Sprintf("%s %s", o.Phase, map[bool]string{true: "kept", false: "-"}[o.Kept])
		if o.Teardown {
			got += " teardown"
		}
		if got != row.want {
			t.Errorf("%s: got %q, want %q", key, got, row.want)
		}
	}
	for _, ph := range Phases {
		for _, kept := range []bool{false, true} {
			for _, ev := range Events {
				if key := fmt.Sprintf("%s/%v/%s", ph, kept, ev); !seen[key] {
					t.Errorf("%s is missing from the table", key)
				}
			}
		}
	}
}

// TestKeptIsKeptUntilRm: whatever happens to a kept bottle, only rm
// removes it, and nothing but rm ever drops the kept mark.
func TestKeptIsKeptUntilRm(t *testing.T) {
	for _, ph := range Phases {
		for _, ev := range Events {
			o, err := Transition(ph, true, ev)
			if err != nil {
				continue
			}
			if ev == EvRemove {
				if !o.Removes() {
					t.Errorf("rm of a kept %s bottle did not remove it", ph)
				}
				continue
			}
			if o.Removes() || !o.Kept {
				t.Errorf("%s on a kept %s bottle gives %+v: only rm may remove or un-keep it", ev, ph, o)
			}
		}
	}
}

// TestKeepingEvents: commit, an approved capability and stop --preserve
// make any bottle kept.
func TestKeepingEvents(t *testing.T) {
	for _, c := range []struct {
		ph Phase
		ev Event
	}{{PhaseRunning, EvCommit}, {PhaseRunning, EvCapApproved}, {PhaseStopped, EvCapApproved}, {PhaseRunning, EvStopPreserve}, {PhaseStopped, EvStopPreserve}} {
		o, err := Transition(c.ph, false, c.ev)
		if err != nil || !o.Kept {
			t.Errorf("%s on a %s bottle: got %+v, %v; want kept", c.ev, c.ph, o, err)
		}
	}
}
