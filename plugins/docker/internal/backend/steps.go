package backend

import (
	"log/slog"
	"time"
)

// steps times the parts of one call for a debug log line, so that a slow
// start can be taken apart (BenchmarkEgressStartSteps reads it) without a
// profiler on the engine's side.
type steps struct {
	last  time.Time
	attrs []any
}

func newSteps() *steps { return &steps{last: time.Now()} }

// mark ends the step name; a nil steps times nothing.
func (s *steps) mark(name string) {
	if s == nil {
		return
	}
	now := time.Now()
	s.attrs = append(s.attrs, slog.String(name, now.Sub(s.last).String()))
	s.last = now
}

// took records a step that ran beside others, which mark cannot time.
func (s *steps) took(name string, d time.Duration) {
	if s == nil {
		return
	}
	s.attrs = append(s.attrs, slog.String(name, d.String()))
}

func (s *steps) log(l *slog.Logger, msg string, attrs ...any) {
	if s == nil {
		return
	}
	l.Debug(msg, append(attrs, s.attrs...)...)
}
