package backend

import "testing"

func TestWithLabels(t *testing.T) {
	got := string(withLabels([]byte("FROM scratch"), map[string]string{"b": `say "hi"`, "a": `c:\dir`, "e": ""}))
	want := "FROM scratch\nLABEL \"a\"=\"c:\\\\dir\" \"b\"=\"say \\\"hi\\\"\" \"e\"=\"\"\n"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if got := string(withLabels([]byte("FROM x\n"), nil)); got != "FROM x\n" {
		t.Errorf("no labels: %q", got)
	}
}

func TestRepoComponent(t *testing.T) {
	for in, want := range map[string]string{"shell": "shell", "My Agent!": "my-agent", "--": "agent", "a__b": "a-b"} {
		if got := repoComponent(in); got != want {
			t.Errorf("repoComponent(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestOneLine(t *testing.T) {
	if got := oneLine("step failed:\n  exit 1\r\n\nmore"); got != "step failed:; exit 1; more" {
		t.Errorf("oneLine = %q", got)
	}
}
