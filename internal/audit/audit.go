// Package audit is the per-bottle, append-only record of what happened to a
// bottle and who decided it: $BOT_BOTTLE_HOME/audit/<identity>.jsonl, one JSON
// event a line. It lives outside the state dir so that it outlives cleanup,
// and a Log made WithSecrets never writes a passed-through secret. Text
// renders a record for a terminal (one line, values escaped) and OCSF maps
// the logs to OCSF 1.3.0 for a SIEM (the mapping is documented in ocsf.go).
package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/bot-bottle/bot-bottle/sdk/names"
)

// Event kinds the core records.
const (
	KindStart    = "start"
	KindStop     = "stop"
	KindCommit   = "commit"
	KindResume   = "resume"
	KindRequest  = "request"
	KindDecision = "decision"
	KindEgress   = "egress"
	KindPreserve = "preserve"
	KindCleanup  = "cleanup"
	// KindResumeFailed: a kept bottle did not come back; it is kept as it was.
	KindResumeFailed = "resume_failed"
	// KindRevert: the change that did not build was dropped.
	KindRevert = "revert"
	// KindRemove: rm removed the bottle and its snapshots.
	KindRemove = "rm"
	// KindReview: a --review bottle's work was applied or merged into the
	// operator's repository.
	KindReview = "review"
	// KindRevoke: the operator revoked a credential of a running bottle
	// (the name, never the value).
	KindRevoke = "revoke"
)

// Redacted replaces any value that contains a secret.
const Redacted = "[REDACTED]"

// Event is one audit record. Fields holds kind-specific details, e.g.
// dockerfile_diff, host, port, allowed, rule.
type Event struct {
	Time      time.Time      `json:"time"`
	Identity  string         `json:"identity"`
	Kind      string         `json:"kind"`
	Actor     string         `json:"actor,omitempty"`
	RequestID string         `json:"request_id,omitempty"`
	Fields    map[string]any `json:"fields,omitempty"`
}

var (
	kindRE = regexp.MustCompile(`^[a-z][a-z_]{0,31}$`)
)

// Log writes and reads the audit logs under one bot-bottle home.
type Log struct {
	dir     string
	secrets []string
	now     func() time.Time
}

// Open returns the audit logs under home. It touches nothing on disk.
func Open(home string) *Log {
	return &Log{dir: filepath.Join(home, "audit"), now: func() time.Time { return time.Now().UTC() }}
}

// WithSecrets returns a Log that writes Redacted in place of every value
// (actor, request id, any string or key in Fields) containing one of values.
// Empty values are ignored. The receiver is unchanged.
func (l *Log) WithSecrets(values ...string) *Log {
	c := *l
	c.secrets = append([]string(nil), l.secrets...)
	for _, v := range values {
		if v != "" {
			c.secrets = append(c.secrets, v)
		}
	}
	return &c
}

// Path returns the audit log file of identity.
func (l *Log) Path(identity string) (string, error) {
	if !names.Valid(identity) {
		return "", fmt.Errorf("audit: invalid identity %q", identity)
	}
	return filepath.Join(l.dir, identity+".jsonl"), nil
}

// Append writes ev as one line. Concurrent writers, in any process, are
// serialised by flock(2) on the file; each event is one write(2) on an
// O_APPEND descriptor, and a line torn by a crash is closed off first so the
// new event starts on a line of its own.
func (l *Log) Append(ev Event) error {
	path, err := l.Path(ev.Identity)
	if err != nil {
		return err
	}
	if !kindRE.MatchString(ev.Kind) {
		return fmt.Errorf("audit %s: invalid event kind %q", ev.Identity, ev.Kind)
	}
	if ev.Time.IsZero() {
		ev.Time = l.now()
	}
	line, err := l.encode(ev)
	if err != nil {
		return fmt.Errorf("audit %s: %w", ev.Identity, err)
	}
	if err := ensureDir(l.dir); err != nil {
		return fmt.Errorf("audit %s: %w", ev.Identity, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("audit %s: open log: %w", ev.Identity, err)
	}
	defer f.Close()
	if err := flock(f, syscall.LOCK_EX); err != nil {
		return fmt.Errorf("audit %s: lock log: %w", ev.Identity, err)
	}
	defer flock(f, syscall.LOCK_UN)
	torn, err := endsTorn(path, f)
	if err != nil {
		return fmt.Errorf("audit %s: %w", ev.Identity, err)
	}
	if torn {
		line = append([]byte{'\n'}, line...)
	}
	if _, err := f.Write(line); err != nil {
		return fmt.Errorf("audit %s: write log: %w", ev.Identity, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("audit %s: sync log: %w", ev.Identity, err)
	}
	return nil
}

func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if err != syscall.EINTR {
			return err
		}
	}
}

// endsTorn reports whether the log's last byte is not a newline.
func endsTorn(path string, f *os.File) (bool, error) {
	fi, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("stat log: %w", err)
	}
	if fi.Size() == 0 {
		return false, nil
	}
	// f is write-only; read the last byte through a second descriptor.
	r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return false, fmt.Errorf("check log end: %w", err)
	}
	defer r.Close()
	var b [1]byte
	if _, err := r.ReadAt(b[:], fi.Size()-1); err != nil {
		return false, fmt.Errorf("check log end: %w", err)
	}
	return b[0] != '\n', nil
}

func ensureDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("check %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory (%s)", dir, fi.Mode().Type())
	}
	return nil
}

// encode renders ev as one JSON line with secrets redacted. Fields go through
// a JSON round trip first so that redaction sees every string the file would
// hold, whatever Go types the caller used.
func (l *Log) encode(ev Event) ([]byte, error) {
	ev.Actor = l.redact(ev.Actor)
	ev.RequestID = l.redact(ev.RequestID)
	if ev.Fields != nil {
		raw, err := json.Marshal(ev.Fields)
		if err != nil {
			return nil, fmt.Errorf("encode fields: %w", err)
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var generic map[string]any
		if err := dec.Decode(&generic); err != nil {
			return nil, fmt.Errorf("encode fields: %w", err)
		}
		ev.Fields = l.redactValue(generic).(map[string]any)
	}
	line, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode event: %w", err)
	}
	return append(line, '\n'), nil
}

func (l *Log) redact(s string) string {
	for _, secret := range l.secrets {
		if strings.Contains(s, secret) {
			return Redacted
		}
	}
	return s
}

func (l *Log) redactValue(v any) any {
	switch v := v.(type) {
	case string:
		return l.redact(v)
	case json.Number:
		if r := l.redact(v.String()); r != v.String() {
			return r
		}
		return v
	case []any:
		for i := range v {
			v[i] = l.redactValue(v[i])
		}
		return v
	case map[string]any:
		out := make(map[string]any, len(v))
		n := 0
		for k, x := range v {
			if rk := l.redact(k); rk != k {
				n++
				k = fmt.Sprintf("%s#%d", Redacted, n)
			}
			out[k] = l.redactValue(x)
		}
		return out
	}
	return v
}

// Read returns the events of identity in the order they were written. Lines
// that do not parse (a line torn by a crash) are skipped. A bottle with no
// log gives an error wrapping fs.ErrNotExist.
func (l *Log) Read(identity string) ([]Event, error) {
	path, err := l.Path(identity)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no audit log for %s: %w", identity, err)
	}
	if err != nil {
		return nil, fmt.Errorf("audit %s: %w", identity, err)
	}
	defer f.Close()
	var out []Event
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			var ev Event
			if json.Unmarshal(line, &ev) == nil {
				out = append(out, ev)
			}
		}
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("audit %s: read log: %w", identity, err)
		}
	}
}
