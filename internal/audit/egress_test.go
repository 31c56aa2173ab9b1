package audit

import (
	"os"
	"testing"
)

// The proxy's count of the refusals it left out of the log has no host;
// it is read back all the same, and so are attempts, while junk is not.
func TestReadEgressKeepsTheDroppedCount(t *testing.T) {
	l := Open(t.TempDir())
	path, err := l.EgressPath("shell-7k2qz")
	if err != nil {
		t.Fatal(err)
	}
	data := `{"time":"2026-01-01T00:00:00Z","identity":"shell-7k2qz","host":"a.test","port":443,"allowed":false,"reason":"not in the allowlist"}
{"time":"2026-01-01T00:00:01Z","identity":"shell-7k2qz","host":"","port":0,"allowed":false,"reason":"refused attempts not recorded (over the audit bound): 2899"}
{"identity":"shell-7k2qz"}
not json
`
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	evs, err := l.ReadEgress("shell-7k2qz")
	if err != nil || len(evs) != 2 || evs[0].Host != "a.test" || evs[1].Reason != "refused attempts not recorded (over the audit bound): 2899" {
		t.Fatalf("ReadEgress = %+v, %v", evs, err)
	}
}
