package egress

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
)

// An upstream's answer can reach an error message: Go's transport quotes a
// malformed status or header line in its error ("malformed HTTP response
// %q"), and an upstream that echoes its request there puts a credential's
// value in it. Such errors go to the bottle (a 502's body) and to the log,
// so every credential's value is masked in both — as it is, and as %q
// writes it — before anything is cut to length.

// scrub masks every credential's value in s with as many '*'.
func (cs *credentials) scrub(s string) string {
	if cs == nil {
		return s
	}
	for _, c := range cs.list {
		for _, v := range valueForms(c.Value) {
			if strings.Contains(s, v) {
				s = strings.ReplaceAll(s, v, strings.Repeat("*", len(v)))
			}
		}
	}
	return s
}

// valueForms are v and the forms quoting gives it.
func valueForms(v string) []string {
	out := []string{v}
	for _, q := range []string{strconv.Quote(v), strconv.QuoteToASCII(v)} {
		if q = q[1 : len(q)-1]; q != v {
			out = append(out, q)
		}
	}
	return out
}

// scrubError is err's one-line text with the values masked.
func (p *Proxy) scrubError(err error) string {
	return oneLine(plainError(p.creds.scrub(err.Error())))
}

type plainError string

func (e plainError) Error() string { return string(e) }

// scrubHandler masks the credentials' values in every log record: the
// message and every attribute, errors included.
type scrubHandler struct {
	h  slog.Handler
	cs *credentials
}

func (s scrubHandler) Enabled(ctx context.Context, l slog.Level) bool { return s.h.Enabled(ctx, l) }

func (s scrubHandler) Handle(ctx context.Context, r slog.Record) error {
	nr := slog.NewRecord(r.Time, r.Level, s.cs.scrub(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		nr.AddAttrs(s.attr(a))
		return true
	})
	return s.h.Handle(ctx, nr)
}

func (s scrubHandler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, s.cs.scrub(v.String()))
	case slog.KindGroup:
		as := v.Group()
		out := make([]any, len(as))
		for i, g := range as {
			out[i] = s.attr(g)
		}
		return slog.Group(a.Key, out...)
	case slog.KindAny:
		str := fmt.Sprint(v.Any())
		if sc := s.cs.scrub(str); sc != str {
			return slog.String(a.Key, sc)
		}
	}
	return a
}

func (s scrubHandler) WithAttrs(as []slog.Attr) slog.Handler {
	out := make([]slog.Attr, len(as))
	for i, a := range as {
		out[i] = s.attr(a)
	}
	return scrubHandler{h: s.h.WithAttrs(out), cs: s.cs}
}

func (s scrubHandler) WithGroup(name string) slog.Handler {
	return scrubHandler{h: s.h.WithGroup(name), cs: s.cs}
}
