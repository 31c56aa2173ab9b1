package lifecycle

import (
	"strings"
	"testing"
)

func TestAppendRunSwitchesToRootAndBack(t *testing.T) {
	got := appendRun("FROM x\nUSER agent\nCMD [\"bash\"]\n", "r1", "touch /opt/x", "agent")
	want := "FROM x\nUSER agent\nCMD [\"bash\"]\n\n# approved request r1\nUSER root\nRUN touch /opt/x\nUSER agent\n"
	if got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	got = appendRun("FROM x\n", "r2", "true", "")
	if want := "FROM x\n\n# approved request r2\nRUN true\n"; got != want {
		t.Fatalf("no USER: got %q", got)
	}
	got = appendRun("FROM x\nUSER agent\nUSER root\n", "r3", "true", "root")
	if want := "FROM x\nUSER agent\nUSER root\n\n# approved request r3\nRUN true\n"; got != want {
		t.Fatalf("root already: got %q", got)
	}
	for _, u := range []string{"0", "0:0", "root:staff"} {
		if got := appendRun("FROM x\n", "r4", "true", u); strings.Contains(got, "USER") {
			t.Errorf("uid 0 as %q switched users:\n%s", u, got)
		}
	}
}

// An apt install gets the package lists fetched first, on a line of its own
// (the requested line stays verbatim); one that fetches them, or that is
// not an install, is left alone.
func TestAppendRunFetchesAptListsFirst(t *testing.T) {
	got := appendRun("FROM x\nUSER agent\n", "r1", "apt-get install -y ripgrep", "agent")
	want := "FROM x\nUSER agent\n\n# approved request r1\nUSER root\nRUN apt-get update\nRUN apt-get install -y ripgrep\nUSER agent\n"
	if got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	for run, want := range map[string]bool{
		"apt-get install -y ripgrep":                      true,
		"apt install -y ripgrep":                          true,
		"apt-get -y --no-install-recommends install jq":   true,
		"sudo apt-get install -y jq":                      true,
		"apt-get update && apt-get install -y ripgrep":    false,
		"apt-get -q update && apt-get install -y ripgrep": false,
		"apt-get remove -y nano":                          false,
		"pip install ripgrep":                             false,
		"echo apt-get install -y x":                       false,
	} {
		if got := needsAptUpdate(run); got != want {
			t.Errorf("needsAptUpdate(%q) = %v, want %v", run, got, want)
		}
	}
	if got := appendRun("FROM x\n", "r2", "apt-get update && apt-get install -y jq", ""); strings.Count(got, "apt-get update") != 1 {
		t.Errorf("a line that fetches the lists got another update:\n%s", got)
	}
}
