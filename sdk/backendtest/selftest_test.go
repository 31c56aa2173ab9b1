package backendtest_test

import (
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

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
	backendtest.RunConformance(t, backendtest.Harness{
		New: func(t testing.TB) sdk.Backend {
			return backendtest.InProcess(t, &hostBackend{root: root, break_: brk})
		},
		Agent: sdk.Agent{Name: "conf", Image: "host"},
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
		{"exit-code", backendtest.ItemExitCode, "exit code: the agent exited 7, Attach reported 0",
			[]string{backendtest.ItemFreshProcess}},
		{"stop-leaves-resource", backendtest.ItemStop, "stop is not complete: after Stop, List still reports",
			[]string{backendtest.ItemStopByIdentity, backendtest.ItemFreshProcess, backendtest.ItemStatusCodes}},
		{"ignore-resize", backendtest.ItemResize, "terminal resize: the agent never saw a resize to 43x131", nil},
	}
	failLine := regexp.MustCompile(`--- FAIL: TestHostBackendConformance/(\w+)`)
	for _, c := range cases {
		t.Run(c.brk, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run", "^TestHostBackendConformance$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), envBreak+"="+c.brk)
			out, err := cmd.CombinedOutput()
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
					t.Errorf("break %q failed %s, which does not rely on what it broke", c.brk, m[1])
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
