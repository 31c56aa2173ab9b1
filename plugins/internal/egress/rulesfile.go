package egress

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/bot-bottle/bot-bottle/sdk/egressrule"
)

// MaxRulesFileSize bounds a rules file; a real allowlist is a few hundred
// bytes.
const MaxRulesFileSize = 1 << 20

// RulesFile is the JSON a proxy reads its rules from. Identity must be the
// proxy's own, so that a file meant for another bottle is never applied.
type RulesFile struct {
	Identity string   `json:"identity"`
	Rules    []string `json:"rules"`
}

// NewRulesFile validates rules and returns them as the rules file for
// identity, for a backend that hands it on inside a message of its own.
func NewRulesFile(identity string, rules []string) (RulesFile, error) {
	if identity == "" {
		return RulesFile{}, errors.New("encode rules file: empty identity")
	}
	if _, err := egressrule.ParseRules(rules); err != nil {
		return RulesFile{}, fmt.Errorf("encode rules file: %w", err)
	}
	if rules == nil {
		rules = []string{}
	}
	return RulesFile{Identity: identity, Rules: rules}, nil
}

// EncodeRulesFile validates rules and returns the file a proxy for identity
// accepts, for backends that deliver rules to a running proxy.
func EncodeRulesFile(identity string, rules []string) ([]byte, error) {
	f, err := NewRulesFile(identity, rules)
	if err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode rules file: %w", err)
	}
	return append(b, '\n'), nil
}

// ParseRulesFile parses the contents of a rules file for identity. Unknown
// fields are ignored; a missing "rules" means allow nothing.
func ParseRulesFile(data []byte, identity string) (*egressrule.Rules, error) {
	if len(data) > MaxRulesFileSize {
		return nil, fmt.Errorf("%d bytes, more than %d", len(data), MaxRulesFileSize)
	}
	var f RulesFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("not a rules file (JSON {\"identity\": …, \"rules\": […]}): %w", err)
	}
	if f.Identity != identity {
		return nil, fmt.Errorf("rules are for bottle %q, not %q", f.Identity, identity)
	}
	return egressrule.ParseRules(f.Rules)
}

// ReadRulesFile reads and parses the rules file at path for identity.
func ReadRulesFile(path, identity string) (*egressrule.Rules, error) {
	data, _, err := readLimited(path)
	if err != nil {
		return nil, err
	}
	rs, err := ParseRulesFile(data, identity)
	if err != nil {
		return nil, fmt.Errorf("rules file %s: %w", path, err)
	}
	return rs, nil
}

func readLimited(path string) ([]byte, os.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("rules file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("rules file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("rules file %s: not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxRulesFileSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("rules file: %w", err)
	}
	if len(data) > MaxRulesFileSize {
		return nil, nil, fmt.Errorf("rules file %s: more than %d bytes", path, MaxRulesFileSize)
	}
	return data, fi, nil
}

// DefaultPollInterval is how often a Watcher looks at its file.
const DefaultPollInterval = 200 * time.Millisecond

const (
	// racyWindow: a file modified this recently may be rewritten within the
	// file system's timestamp granularity with the same size, so an
	// unchanged stat does not prove unchanged contents yet.
	racyWindow = 2 * time.Second
	// rereadEvery: the contents are compared at least this often even when
	// the stat looks unchanged, because a replaced file can reuse the old
	// inode number and carry an old modification time (tar preserves it).
	rereadEvery = 2 * time.Second
)

// Watcher re-reads a rules file when it changes. It polls the file's
// identity, size and modification time rather than using inotify, so it
// sees every way a file gets replaced (rename over it, truncate and write,
// `docker cp` extracting a new file) and needs no kernel support inside a
// container. A bad new file keeps the rules in force, and is reported once
// it has stayed the same for one poll (so a half-written file is not).
type Watcher struct {
	path, identity string
	interval       time.Duration
	log            *slog.Logger
	now            func() time.Time

	last     os.FileInfo // nil: read on the next poll
	lastRead time.Time
	lastData []byte // the contents last read
	badErr   error  // why lastData is not a valid rules file, or nil
	reported string // the error last logged, so each is logged once
}

// NewWatcher watches path for rules for identity, logging reloads and bad
// files to log.
func NewWatcher(path, identity string, log *slog.Logger) *Watcher {
	return &Watcher{path: path, identity: identity, interval: DefaultPollInterval, log: log, now: time.Now}
}

// SetInterval changes the poll interval (before Run).
func (w *Watcher) SetInterval(d time.Duration) { w.interval = d }

// Load reads the file now and returns its rules; Run then reports changes
// relative to what Load read.
func (w *Watcher) Load() (*egressrule.Rules, error) {
	data, fi, err := readLimited(w.path)
	if err != nil {
		return nil, err
	}
	rs, err := ParseRulesFile(data, w.identity)
	if err != nil {
		return nil, fmt.Errorf("rules file %s: %w", w.path, err)
	}
	w.remember(fi, data)
	return rs, nil
}

// Run polls until ctx is done, calling apply with each new valid rule set.
func (w *Watcher) Run(ctx context.Context, apply func(*egressrule.Rules)) {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if rs := w.poll(); rs != nil {
			apply(rs)
		}
	}
}

// poll returns new rules when the file changed to a valid rule set.
func (w *Watcher) poll() *egressrule.Rules {
	fi, err := os.Stat(w.path)
	if err != nil {
		w.report(fmt.Errorf("rules file: %w", err))
		w.last = nil
		return nil
	}
	if w.last != nil && os.SameFile(w.last, fi) && fi.Size() == w.last.Size() &&
		fi.ModTime().Equal(w.last.ModTime()) && w.now().Sub(w.lastRead) < rereadEvery {
		return nil
	}
	data, fi, err := readLimited(w.path)
	if err != nil {
		w.report(err)
		w.last = nil
		return nil
	}
	if bytes.Equal(data, w.lastData) {
		w.remember(fi, data)
		if w.badErr != nil {
			w.report(w.badErr) // the same bad contents twice: not a write in progress
			w.last = w.keep(fi)
		} else {
			w.reported = ""
		}
		return nil
	}
	rs, err := ParseRulesFile(data, w.identity)
	w.remember(fi, data)
	if err != nil {
		w.badErr = fmt.Errorf("rules file %s: %w", w.path, err)
		w.last = nil // read again next poll before reporting
		return nil
	}
	w.badErr, w.reported = nil, ""
	w.log.Info("egress rules reloaded", "rules", rs.Len(), "file", w.path)
	return rs
}

func (w *Watcher) remember(fi os.FileInfo, data []byte) {
	w.lastData, w.lastRead = data, w.now()
	w.last = w.keep(fi)
}

// keep returns fi unless the file is too fresh for its stat to be trusted.
func (w *Watcher) keep(fi os.FileInfo) os.FileInfo {
	if w.now().Sub(fi.ModTime()) < racyWindow {
		return nil
	}
	return fi
}

// report logs err unless it is the error already logged.
func (w *Watcher) report(err error) {
	if msg := err.Error(); msg != w.reported {
		w.reported = msg
		w.log.Error("keeping the egress rules in force", "error", msg)
	}
}
