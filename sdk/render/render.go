// Package render owns text that came from inside a bottle (or from any other
// source the operator does not control: engine errors, plugin output) on its
// way to a terminal. Everything a bottle writes — a request's reason, a host
// name it sent the proxy, Dockerfile text — is untrusted: a raw ESC or C1
// byte drives the terminal, a newline forges the next line of a listing, a
// bidi override or an invisible character makes the text read differently
// from what it is. Text renders every such character as a visible escape
// (\x1b, \u202e), on one line, bounded in length with a marker, so that what
// the operator reads is exactly what was sent. JSON output does not go
// through here: its encoder escapes, and it must stay exact.
package render

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// DefaultMax is the length bound, in runes of input, of Text and Quoted.
const DefaultMax = 512

// MessageMax bounds OneLine: an error names paths and what to do, and the
// operator needs all of it.
const MessageMax = 4096

// Marker ends a value that was cut; it says how much was left off so a cut
// value cannot pass for a whole one.
const markerFormat = "…[+%d bytes]"

// Text renders s for a terminal: one line, every control, format, invisible
// or line-breaking character escaped visibly, at most DefaultMax runes of
// the input kept.
func Text(s string) string { return Bounded(s, DefaultMax) }

// Bounded is Text with a bound of max input runes (max <= 0: no bound).
func Bounded(s string, max int) string {
	var b strings.Builder
	b.Grow(min(len(s), 4*DefaultMax))
	n := 0
	for i, r := range s {
		if max > 0 && n == max {
			fmt.Fprintf(&b, markerFormat, len(s)-i)
			return b.String()
		}
		n++
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				fmt.Fprintf(&b, `\x%02x`, s[i])
				continue
			}
		}
		writeRune(&b, r)
	}
	return b.String()
}

// Block renders multi-line untrusted text (a Dockerfile, a diff) for a
// terminal: each line as Text renders it, unbounded, with the line breaks
// kept. A carriage return or any other line separator is escaped, so the
// lines the operator sees are exactly the input's \n-separated lines.
func Block(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = Bounded(l, 0)
	}
	return strings.Join(lines, "\n")
}

// Lines is Block split into its lines, without a phantom empty last line
// for text that ends in a newline.
func Lines(s string) []string {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(Block(s), "\n")
}

// Quoted renders s as Text inside double quotes, with a quote or backslash
// in s escaped, so that the end of the value is unmistakable: a reason a
// bottle wrote cannot continue past its closing quote into something that
// reads like a fact.
func Quoted(s string) string { return QuotedBounded(s, DefaultMax) }

// QuotedBounded is Quoted with a bound of max input runes (max <= 0: none).
func QuotedBounded(s string, max int) string {
	return `"` + strings.ReplaceAll(Bounded(s, max), `"`, `\"`) + `"`
}

// OneLine is how an error, a warning or any other message is shown to the
// operator on one line: surrounding space trimmed, the lines of a
// multi-line message joined with "; " (blank lines dropped), and the rest
// rendered as Text. It is the project's one definition of "one-line error".
func OneLine(s string) string {
	s = strings.TrimSpace(s)
	if strings.ContainsAny(s, "\r\n") {
		parts := strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' })
		kept := parts[:0]
		for _, p := range parts {
			if p = strings.TrimSpace(p); p != "" {
				kept = append(kept, p)
			}
		}
		s = strings.Join(kept, "; ")
	}
	return Bounded(s, MessageMax)
}

// Error is OneLine of err's message; a nil error is "".
func Error(err error) string {
	if err == nil {
		return ""
	}
	return OneLine(err.Error())
}

// writeRune appends r, escaped when a terminal would not simply print it.
func writeRune(b *strings.Builder, r rune) {
	switch {
	case r == '\\':
		// Doubled, so that a bottle's literal "\x1b" cannot pass for an
		// escaped ESC or the other way round.
		b.WriteString(`\\`)
	case r == ' ' || (r > ' ' && r < 0x7f):
		b.WriteRune(r)
	case r == '\t':
		b.WriteString(`\t`)
	case r == '\n':
		b.WriteString(`\n`)
	case r == '\r':
		b.WriteString(`\r`)
	case r < 0x20 || r == 0x7f:
		fmt.Fprintf(b, `\x%02x`, r)
	case Unsafe(r):
		if r <= 0xffff {
			fmt.Fprintf(b, `\u%04x`, r)
		} else {
			fmt.Fprintf(b, `\U%08x`, r)
		}
	default:
		b.WriteRune(r)
	}
}

// Unsafe reports whether a terminal would not print r as a visible glyph
// that reads as itself: C0 and C1 controls, DEL, bidi embeddings,
// overrides, isolates and marks, zero-width and other format characters
// (Unicode category Cf), tag characters, line and paragraph separators,
// non-characters, private use, surrogates, unassigned code points, and the
// space-like characters other than the plain space (which can hide
// alignment tricks).
func Unsafe(r rune) bool {
	switch {
	case r < 0x20, r >= 0x7f && r <= 0x9f:
		return true
	case r == 0x2028, r == 0x2029: // line and paragraph separators (Zl, Zp)
		return true
	case r == 0xfeff, r >= 0xfff0 && r <= 0xfffc: // BOM, specials before U+FFFD
		return true
	case r >= 0xfe00 && r <= 0xfe0f, r >= 0xe0100 && r <= 0xe01ef: // variation selectors
		return true
	case r == 0x115f, r == 0x1160, r == 0x3164, r == 0xffa0: // Hangul fillers: blank glyphs
		return true
	case r == 0x034f, r == 0x17b4, r == 0x17b5, r == 0x180e: // invisible, not Cf in every version
		return true
	case r&0xfffe == 0xfffe, r >= 0xfdd0 && r <= 0xfdef: // non-characters
		return true
	case !utf8.ValidRune(r):
		return true
	}
	return unicode.In(r, unicode.Cc, unicode.Cf, unicode.Co, unicode.Cs, unicode.Zl, unicode.Zp) ||
		(unicode.Is(unicode.Zs, r) && r != ' ') ||
		// Unassigned (Cn): in no category but C.
		!unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z)
}
