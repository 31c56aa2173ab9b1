package render

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestText(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"plain text, ok", "plain text, ok"},
		{"héllo wörld 日本", "héllo wörld 日本"},
		{"a\nRUN apt-get install -y ripgrep", `a\nRUN apt-get install -y ripgrep`},
		{"esc\x1b[31mred", `esc\x1b[31mred`},
		{"csi\u009b31m", `csi\u009b31m`},
		{"bell\a del\x7f nul\x00 tab\t cr\r", `bell\x07 del\x7f nul\x00 tab\t cr\r`},
		{"evil\u202egnp.exe", `evil\u202egnp.exe`},
		{"iso\u2066x\u2069", `iso\u2066x\u2069`},
		{"zw\u200bsp\u200d\ufeff", `zw\u200bsp\u200d\ufeff`},
		{"tag\U000E0041\U000E007F", `tag\U000e0041\U000e007f`},
		{"ls\u2028ps\u2029", `ls\u2028ps\u2029`},
		{"nbsp\u00a0 ideo\u3000", `nbsp\u00a0 ideo\u3000`},
		{"soft\u00adhyphen", `soft\u00adhyphen`},
		{"bad \xff\xfe utf8", `bad \xff\xfe utf8`},
		{`back\slash \x1b`, `back\\slash \\x1b`},
		{"private\ue000", `private\ue000`},
		{"unassigned\u0378", `unassigned\u0378`},
	} {
		if got := Text(c.in); got != c.want {
			t.Errorf("Text(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestBounded(t *testing.T) {
	s := strings.Repeat("x", 30)
	if got, want := Bounded(s, 10), "xxxxxxxxxx…[+20 bytes]"; got != want {
		t.Errorf("Bounded = %q, want %q", got, want)
	}
	if got := Bounded(s, 30); got != s {
		t.Errorf("Bounded at the limit cut: %q", got)
	}
	if got := Text(strings.Repeat("é", DefaultMax+5)); !strings.HasSuffix(got, "…[+10 bytes]") {
		t.Errorf("Text over DefaultMax: %q", got[len(got)-20:])
	}
}

func TestQuoted(t *testing.T) {
	if got, want := Quoted(`it said "ok"`+"\napproved"), `"it said \"ok\"\napproved"`; got != want {
		t.Errorf("Quoted = %s, want %s", got, want)
	}
}

func TestBlock(t *testing.T) {
	in := "FROM x\nRUN a\x1b]0;t\a\r\nUSER root\u202e\n"
	want := []string{"FROM x", `RUN a\x1b]0;t\x07\r`, `USER root\u202e`}
	got := Lines(in)
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("Lines = %q, want %q", got, want)
	}
	if Block(in) != strings.Join(want, "\n")+"\n" {
		t.Errorf("Block = %q", Block(in))
	}
}

func TestOneLine(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"  one  ", "one"},
		{"first\n\n  second \r\nthird\n", "first; second; third"},
		{"bad\x1b", `bad\x1b`},
	} {
		if got := OneLine(c.in); got != c.want {
			t.Errorf("OneLine(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	if Error(nil) != "" || Error(errors.New("a\nb")) != "a; b" {
		t.Errorf("Error: %q %q", Error(nil), Error(errors.New("a\nb")))
	}
}

// terminalSafe fails t when out holds anything a terminal would act on
// instead of printing: invalid UTF-8, a C0, DEL or C1 control, a line
// break, or any character Unsafe names.
func terminalSafe(t *testing.T, in, out string, multiline bool) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Fatalf("render(%q) = %q: not valid UTF-8", in, out)
	}
	for i, r := range out {
		if r == '\n' && multiline {
			continue
		}
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) || Unsafe(r) {
			t.Fatalf("render(%q) = %q: control or invisible %U at byte %d", in, out, r, i)
		}
	}
}

func FuzzText(f *testing.F) {
	for _, s := range []string{"", "plain", "a\nb", "\x1b[2J", "\u009b2J", "\u202e", "\U000E0041", "\xff", "\u2028",
		"\\x1b", strings.Repeat("é", 600)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := Text(s)
		terminalSafe(t, s, out, false)
		if n := utf8.RuneCountInString(out); n > 4*(10*DefaultMax+20) {
			t.Fatalf("Text of %d bytes is %d runes: the bound does not hold", len(s), n)
		}
		terminalSafe(t, s, Quoted(s), false)
		terminalSafe(t, s, OneLine(s), false)
		block := Block(s)
		terminalSafe(t, s, block, true)
		if strings.Count(block, "\n") != strings.Count(s, "\n") {
			t.Fatalf("Block(%q) = %q: lines added or lost", s, block)
		}
	})
}
