package proxycmd

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The shared proxy's one property that no address can forge: a bottle is
// the interface its connection arrives on. Two bottles on links of their
// own to one proxy (network namespaces, no bridge and no netfilter between
// them, reverse-path filtering off): each reaches its own listener, and B,
// aiming at A's listener address through its own link, finds nothing there.
// Without the binding to the interface the proxy would take B's connection
// on A's listener (and A's rules).
func TestSharedProxyTellsBottlesByInterface(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("this test makes network namespaces and needs root")
		}
		t.Skip("needs root (network namespaces)")
	}
	for _, tool := range []string{"ip", "setpriv", "timeout"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("needs %s: %v", tool, err)
		}
	}
	out, err := exec.Command("bash", "testdata/interfaces.sh", binary).CombinedOutput()
	if err != nil {
		t.Fatalf("interfaces.sh: %v\n%s", err, out)
	}
	want := strings.Join([]string{
		"a -> 10.77.1.2: connected", "b -> 10.77.2.2: connected", "b -> 10.77.1.2: refused",
		"a GET 10.77.2.3: HTTP/1.0 403 egress to 10.77.2.3:80 refused: 10.77.2.3:80 is on a bottle's internal network, which no rule can allow",
		"a GET 10.77.1.3: HTTP/1.0 403 egress to 10.77.1.3:80 refused: 10.77.1.3:80 is on a bottle's internal network, which no rule can allow",
		"left: forgot", "left: bottle-b", "a -> 10.77.1.2: refused", "b -> 10.77.2.2: connected",
	}, "\n")
	if got := strings.TrimSpace(string(out)); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}
