package egress

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/bot-bottle/bot-bottle/sdk/egresslog"
)

// Event is one connection attempt, in the shape the core reads from
// Spec.EgressLog (sdk.EgressEvent). It comes from sdk/egresslog, not package
// sdk, so that a proxy in a small helper (the kubernetes backend's in-pod
// kube-init) does not link the SDK's gRPC machinery.
type Event = egresslog.Event

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
