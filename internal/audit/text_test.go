package audit

import (
	"strings"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/sdk"
)

func TestTextOneRecordALine(t *testing.T) {
	ev := Event{Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Identity: "shell-aaaaa", Kind: KindRequest,
		Actor: "bottle:shell-aaaaa\x1b[2J", RequestID: "shell-aaaaa-bbbbbb",
		Fields: map[string]any{
			"reason":     "x\n2026-01-01T00:00:00Z  decision  user:root  decision=approved \u202e\u200b\u009b",
			"kind":       "capability",
			"dockerfile": "FROM x\nRUN a\x1b]0;t\a\n2026-01-01T00:00:00Z  forged\n",
			"egress":     []any{"a.test:443", "b c > d"},
			"detach":     true,
		}}
	lines := Text(ev)
	want := []string{
		`2026-01-02T03:04:05Z  request   bottle:shell-aaaaa\x1b[2J  shell-aaaaa-bbbbbb  detach=true  egress=["a.test:443","b c > d"]  kind=capability  reason="x\n2026-01-01T00:00:00Z  decision  user:root  decision=approved \u202e\u200b\u009b"`,
		`    dockerfile:`,
		`      FROM x`,
		`      RUN a\x1b]0;t\x07`,
		`      2026-01-01T00:00:00Z  forged`,
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("Text =\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	for _, l := range lines[1:] {
		if !strings.HasPrefix(l, BlockIndent) {
			t.Errorf("a line under the record is not indented: %q", l)
		}
	}
}

func TestEgressRowEscapes(t *testing.T) {
	row := EgressRow(sdk.EgressEvent{Time: "2026-01-01T00:00:00Z", Host: "evil\u009b\x1b\u202e\u200b.test", Port: 443,
		Reason: "bad request: \"evil\x1b\"\nforged", Addr: "10.0.0.1:443", Method: "CONNECT"})
	got := strings.Join(row, "|")
	want := `2026-01-01T00:00:00Z|evil\u009b\x1b\u202e\u200b.test|443|refused|-|bad request: "evil\x1b"\nforged|10.0.0.1:443|CONNECT|-|-`
	if got != want {
		t.Errorf("EgressRow = %s\nwant        %s", got, want)
	}
	// A credential event: its kind is the decision, with the credential
	// and the request's path, escaped too.
	row = EgressRow(sdk.EgressEvent{Time: "t", Host: "api.test", Port: 443, Allowed: true, Kind: "exfiltration", Credential: "api", Path: "/x\x1b"})
	if got, want := strings.Join(row, "|"), `t|api.test|443|exfiltration|-|-|-|-|api|/x\x1b`; got != want {
		t.Errorf("EgressRow = %s\nwant        %s", got, want)
	}
}
