package lifecycle

import "testing"

func TestAppendRunSwitchesToRootAndBack(t *testing.T) {
	got := appendRun("FROM x\nUSER agent\nCMD [\"bash\"]\n", "r1", "apt-get install -y ripgrep", "agent")
	want := "FROM x\nUSER agent\nCMD [\"bash\"]\n\n# approved request r1\nUSER root\nRUN apt-get install -y ripgrep\nUSER agent\n"
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
}
