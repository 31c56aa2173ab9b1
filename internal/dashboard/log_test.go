package dashboard

import (
	"fmt"
	"reflect"
	"testing"
	"time"
)

var parseDur = time.ParseDuration

func TestLogKeepsWholeLines(t *testing.T) {
	var l Log
	fmt.Fprint(&l, "bot-bottle: first\nbot-bottle: sec")
	if got := l.Drain(); !reflect.DeepEqual(got, []string{"first"}) {
		t.Fatalf("Drain = %q; a partial line must wait", got)
	}
	fmt.Fprint(&l, "ond\n\n  \nthird\n")
	if got := l.Drain(); !reflect.DeepEqual(got, []string{"second", "third"}) {
		t.Fatalf("Drain = %q", got)
	}
	if got := l.Drain(); got != nil {
		t.Fatalf("second Drain = %q, want nothing", got)
	}
	for i := range maxLogLines + 5 {
		fmt.Fprintf(&l, "line %d\n", i)
	}
	got := l.Drain()
	if len(got) != maxLogLines || got[len(got)-1] != fmt.Sprintf("line %d", maxLogLines+4) {
		t.Fatalf("kept %d lines ending %q; want the last %d", len(got), got[len(got)-1], maxLogLines)
	}
}

func TestShort(t *testing.T) {
	for d, want := range map[string]string{"0s": "0s", "42s": "42s", "5m7s": "5m07s", "3h12m40s": "3h12m", "50h": "2d2h", "-3s": "0s"} {
		dur, err := parseDur(d)
		if err != nil {
			t.Fatal(err)
		}
		if got := short(dur); got != want {
			t.Errorf("short(%s) = %q, want %q", d, got, want)
		}
	}
}
