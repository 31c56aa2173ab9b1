package egress

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"
)

// Event is one connection attempt. It has the fields and JSON names of
// sdk.EgressEvent (a test converts one into the other, so they cannot
// drift); it is declared here so that the proxy binary does not link the
// SDK's gRPC stack.
type Event struct {
	Time     string `json:"time"` // RFC 3339
	Identity string `json:"identity"`
	Host     string `json:"host"`
	Port     int    `json:"port"`
	Allowed  bool   `json:"allowed"`
	// Rule is the allowlist rule that allowed it, or why it was refused.
	Rule   string `json:"rule,omitempty"`
	Reason string `json:"reason,omitempty"`
	Method string `json:"method,omitempty"` // CONNECT, GET, …
	// Addr is the address dialed (ip:port), once a connection is made.
	Addr string `json:"addr,omitempty"`
}

// EventLog writes events as JSON lines. Each event is one Write call, so
// several writers appending to one O_APPEND file never interleave lines.
type EventLog struct {
	mu  sync.Mutex
	w   io.Writer
	now func() time.Time
}

// NewEventLog writes events to w.
func NewEventLog(w io.Writer) *EventLog {
	return &EventLog{w: w, now: time.Now}
}

// Write stamps ev with the current time unless it has one, and appends it.
func (l *EventLog) Write(ev Event) error {
	if ev.Time == "" {
		ev.Time = l.now().UTC().Format(time.RFC3339Nano)
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode egress event: %w", err)
	}
	b = append(b, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.w.Write(b); err != nil {
		return fmt.Errorf("write egress event: %w", err)
	}
	return nil
}
