package egressrule

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A refusal's suggested line must run as it is: sh must hand the helper
// exactly the rule, unsplit and unexpanded.
func TestAskCommandRunsAsItIs(t *testing.T) {
	dir := t.TempDir()
	// Files a wildcard or a bracket would expand to, were they unquoted.
	for _, f := range []string{"a.example.com", "x", "1"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, rule := range []string{
		"example.com:443",
		"*.example.com",
		"GET,HEAD api.example.com:443/repos/",
		"!api.example.com/admin",
		"[2001:db8::1]:443",
		"GET example.com/it's",
		"example.com/a?b",
	} {
		cmd := AskCommand(rule)
		out, err := exec.Command("sh", "-c", "cd "+dir+" && set -- "+cmd+" && printf '%s\\n' \"$@\"").Output()
		if err != nil {
			t.Fatalf("sh %q: %v", cmd, err)
		}
		got := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
		want := []string{"bottle", "request", "egress", rule}
		if strings.Join(got, "\x00") != strings.Join(want, "\x00") {
			t.Errorf("AskCommand(%q) = %s: sh reads it as %q, want %q", rule, cmd, got, want)
		}
	}
	if got := AskCommand("example.com:443"); got != "bottle request egress example.com:443" {
		t.Errorf("a plain host is quoted: %s", got)
	}
}
