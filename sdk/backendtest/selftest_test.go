package backendtest_test

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/backendtest"
)

// envBreak selects a break in the host backend; only TestBrokenBackends sets
// it, for the copy of this test binary it runs.
const envBreak = "BACKENDTEST_HOST_BREAK"

// TestHostBackendConformance runs the suite against the host backend over
// in-process gRPC. Run plainly, the backend is correct and must pass.
func TestHostBackendConformance(t *testing.T) {
	root := t.TempDir()
	brk := os.Getenv(envBreak)
	inHome := func(t testing.TB, home string) sdk.Backend {
		dir := root
		if brk == breakStatePerProcess {
			// Each "process" keeps its own bottles: none survives it.
			dir = t.TempDir()
		}
		return backendtest.InProcess(t, &hostBackend{root: dir, snaps: root, home: home, break_: brk})
	}
	egress := backendtest.EgressUndeclared
	if os.Geteuid() == 0 {
		egress = backendtest.EgressNoNetwork // a network namespace needs root
	}
	backendtest.RunConformance(t, backendtest.Harness{
		New:       func(t testing.TB) sdk.Backend { return inHome(t, "confhomemain") },
		NewInHome: inHome,
		Agent:     sdk.Agent{Name: "conf", Image: "host"},
		Timeout:   30 * time.Second,
		SnapshotContains: func(_ context.Context, ref, needle string) (bool, error) {
			return snapshotContains(root, ref, needle)
		},
		RemoveSnapshot: func(_ context.Context, ref string) error { return removeSnapshot(root, ref) },
		Project:        true,
		Egress:         egress,
		Queue:          true,
	})
}

// TestBrokenBackends proves the suite catches what it claims to: each break
// of the host backend fails the contract item it breaks, by name, and no
// item that does not depend on what it broke.
func TestBrokenBackends(t *testing.T) {
	cases := []struct {
		brk, item, message string
		// also may fail too, because they rely on the same promise.
		also []string
	}{
		{breakExitCode, backendtest.ItemExitCode, "exit code: the agent exited 7, Attach reported 0",
			[]string{backendtest.ItemFreshProcess, backendtest.ItemDetach, backendtest.ItemAttachDetached}},
		{breakStopLeaves, backendtest.ItemStop, "stop is not complete: after Stop, List still reports",
			[]string{backendtest.ItemStopByIdentity, backendtest.ItemFreshProcess, backendtest.ItemStatusCodes, backendtest.ItemSnapshots}},
		{breakIgnoreResize, backendtest.ItemResize, "terminal resize: the agent never saw a resize to 43x131", nil},
		{breakMergedStreams, backendtest.ItemStreams, "stdout/stderr: stdout is", nil},
		{breakStdinNeverEnds, backendtest.ItemStdinClose, "stdin close: the agent never saw its stdin end", nil},
		{breakUnknownNotFound, backendtest.ItemStatusCodes, "errors as status codes: Attach to a bottle that was stopped: gRPC Unknown", nil},
		{breakKillOnDetach, backendtest.ItemDetach, "a signal's, where the agent exits 6 on its own: the detach killed it", nil},
		{breakExecUndeclared, backendtest.ItemCapabilities, "capability gating: exec is not declared", nil},
		{breakDeclaresExec, backendtest.ItemExec, "exec: Exec = ", []string{backendtest.ItemStatusCodes}},
		{breakStatePerProcess, backendtest.ItemFreshProcess, "handle from a fresh process:",
			[]string{backendtest.ItemDetach, backendtest.ItemAttachDetached}},
		{breakSecretInCommit, backendtest.ItemSecret, "secret: the snapshot", nil},
		{breakNetwork, backendtest.ItemNoNetwork, "no network with an empty allowlist: the bottle has network interfaces", nil},
		{breakWritableOutbox, backendtest.ItemQueue, "queue: the agent wrote outbox/bb-conf-decision in the queue outside its inbox", nil},
		{breakListAllHomes, backendtest.ItemHomes, "list only its own home: List reports", nil},
		{breakProjectUnmount, backendtest.ItemProject, "project at the workdir: the agent could not read and write the project", nil},
		{breakSnapshotKept, backendtest.ItemSnapshots, "stop keeps snapshots: Stop with RemoveSnapshots left the snapshot", nil},
	}
	failLine := regexp.MustCompile(`--- FAIL: TestHostBackendConformance/(\w+)`)
	messages := regexp.MustCompile(`(?m)^\s+\w+\.go:\d+: .*$`)
	// The children mostly wait on agents' sleeps: run them all at once.
	outs := make([][]byte, len(cases))
	errs := make([]error, len(cases))
	var wg sync.WaitGroup
	for i, c := range cases {
		if c.brk == breakNetwork && os.Geteuid() != 0 {
			continue // the correct host backend isolates its network only as root
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], "-test.run", "^TestHostBackendConformance$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), envBreak+"="+c.brk)
			outs[i], errs[i] = cmd.CombinedOutput()
		}()
	}
	wg.Wait()
	for i, c := range cases {
		t.Run(c.brk, func(t *testing.T) {
			if outs[i] == nil {
				t.Skip("needs root")
			}
			out, err := outs[i], errs[i]
			if err == nil {
				t.Fatalf("the suite passed a backend with break %q:\n%s", c.brk, out)
			}
			allowed := map[string]bool{c.item: true}
			for _, a := range c.also {
				allowed[a] = true
			}
			var failed []string
			for _, m := range failLine.FindAllStringSubmatch(string(out), -1) {
				failed = append(failed, m[1])
				if !allowed[m[1]] {
					t.Errorf("break %q failed %s, which does not rely on what it broke:\n%s", c.brk, m[1], strings.Join(messages.FindAllString(string(out), -1), "\n"))
				}
			}
			if !slices.Contains(failed, c.item) {
				t.Errorf("break %q failed items %v, not %s", c.brk, failed, c.item)
			}
			if !strings.Contains(string(out), c.message) {
				t.Errorf("break %q: no message %q in:\n%s", c.brk, c.message, out)
			}
		})
	}
}
