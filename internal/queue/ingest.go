package queue

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
	"unicode"

	"github.com/google/renameio/v2"
)

const (
	// maxPerIngest bounds the work one Ingest does for a bottle that floods
	// its inbox; the rest wait for the next call.
	maxPerIngest = 256
	// maxRefusedPerIngest bounds the refusals (each a receipt written) one
	// Ingest makes for a bottle, so that one sending junk or sitting at its
	// MaxPending cap slows nobody else's `requests`; the rest wait.
	maxRefusedPerIngest = 32
	// staleTemp is how long a helper's half-written ".tmp-" file may sit in
	// the inbox before it is thrown away.
	staleTemp = 10 * time.Minute
	// TempPrefix starts the name of a file the helper is still writing; the
	// host leaves such files alone until they are stale.
	TempPrefix = ".tmp-"
)

// RefusedError says why one inbox file was refused. Its message is safe to
// print: everything that came from the bottle is escaped and cut short.
type RefusedError struct {
	Identity string
	File     string // the inbox file name as found
	Token    string // the client token, when the name carried a valid one
	Err      error
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("queue %s: refused inbox file %s: %s", e.Identity, sanitize(e.File, 80), sanitize(e.Err.Error(), 300))
}

func (e *RefusedError) Unwrap() error { return e.Err }

// sanitize escapes anything that is not printable and cuts s to max runes, so
// that text from a bottle cannot drive the operator's terminal.
func sanitize(s string, max int) string {
	var b strings.Builder
	n := 0
	for _, c := range s {
		if n == max {
			b.WriteString("…")
			break
		}
		n++
		if c == ' ' || (unicode.IsPrint(c) && !isBidi(c)) {
			b.WriteRune(c)
		} else {
			fmt.Fprintf(&b, `\u%04x`, c)
		}
	}
	return b.String()
}

// Receipt is what the bottle sees of one of its requests, in
// outbox/<client-token>.json. It carries no operator names.
type Receipt struct {
	Token          string     `json:"token"`
	ID             string     `json:"id,omitempty"`
	Kind           Kind       `json:"kind,omitempty"`
	Status         Status     `json:"status"`
	Summary        string     `json:"summary,omitempty"`
	Reason         string     `json:"reason,omitempty"`
	DecisionReason string     `json:"decision_reason,omitempty"`
	CreatedAt      time.Time  `json:"created_at"`
	DecidedAt      *time.Time `json:"decided_at,omitempty"`
}

// Summary is a one-line description of what a request asks for.
func (r Request) Summary() string {
	switch {
	case r.Kind == KindEgress:
		return r.Host
	case r.Run != "":
		return "RUN " + r.Run
	case r.Dockerfile != "":
		return fmt.Sprintf("Dockerfile (%d lines)", strings.Count(strings.TrimRight(r.Dockerfile, "\n"), "\n")+1)
	}
	return ""
}

// receiptOf is what the bottle may know of r: a held approval is still
// pending to it (every receipt, published or reconciled, is made here, so no
// path shows it early).
func receiptOf(r Request) Receipt {
	if r.Held {
		return Receipt{Token: r.ClientToken, ID: r.ID, Kind: r.Kind, Status: StatusPending,
			Summary: r.Summary(), Reason: r.Reason, CreatedAt: r.CreatedAt}
	}
	return Receipt{
		Token: r.ClientToken, ID: r.ID, Kind: r.Kind, Status: r.Status,
		Summary: r.Summary(), Reason: r.Reason, DecisionReason: r.DecisionReason,
		CreatedAt: r.CreatedAt, DecidedAt: r.DecidedAt,
	}
}

func (q *Queue) receiptPath(identity, token string) string {
	return filepath.Join(q.queueDir(identity), "outbox", token+".json")
}

func encodeReceipt(rc Receipt) ([]byte, error) {
	data, err := json.Marshal(rc)
	if err != nil {
		return nil, fmt.Errorf("encode receipt: %w", err)
	}
	return append(data, '\n'), nil
}

// publish writes the bottle-visible receipt of r, if the helper gave it a token.
func (q *Queue) publish(r Request) error {
	if r.ClientToken == "" {
		return nil
	}
	data, err := encodeReceipt(receiptOf(r))
	if err != nil {
		return err
	}
	return q.writeReceipt(r.Identity, r.ClientToken, data)
}

func (q *Queue) writeReceipt(identity, token string, data []byte) error {
	path := q.receiptPath(identity, token)
	err := renameio.WriteFile(path, data, modeReceipt,
		renameio.WithTempDir(filepath.Dir(path)), renameio.IgnoreUmask())
	if err != nil {
		return fmt.Errorf("publish receipt %s: %w", token, err)
	}
	return nil
}

// IngestAll ingests the inbox of every bottle that has a queue dir. One
// bottle's failure does not stop the others; it is joined into err.
func (q *Queue) IngestAll() ([]Request, []error, error) {
	ents, err := os.ReadDir(filepath.Join(q.home, "queue"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("ingest: %w", err)
	}
	var all []Request
	var refused, errs []error
	for _, e := range ents {
		if !e.IsDir() || !ValidIdentity(e.Name()) {
			continue
		}
		rs, ref, err := q.Ingest(e.Name())
		all = append(all, rs...)
		refused = append(refused, ref...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return all, refused, errors.Join(errs...)
}

// Ingest reads new files from the bottle's inbox as untrusted input. Every
// file it looks at is removed from the inbox; valid ones become pending
// requests with host-minted ids, the rest come back as *RefusedError values
// (not fatal). err is for failures of the host side itself.
func (q *Queue) Ingest(identity string) (newReqs []Request, refused []error, err error) {
	if !ValidIdentity(identity) {
		return nil, nil, fmt.Errorf("ingest: invalid identity %q", identity)
	}
	inbox := filepath.Join(q.queueDir(identity), "inbox")
	fi, err := os.Lstat(inbox)
	if err != nil {
		return nil, nil, fmt.Errorf("ingest %s: %w", identity, err)
	}
	if !fi.IsDir() {
		return nil, nil, fmt.Errorf("ingest %s: inbox is not a directory (%s)", identity, fi.Mode().Type())
	}
	for _, d := range []struct {
		path string
		mode fs.FileMode
	}{{filepath.Join(q.home, "requests"), modeHostOnly}, {q.recordDir(identity), modeHostOnly}} {
		if err := ensureDir(d.path, d.mode); err != nil {
			return nil, nil, fmt.Errorf("ingest %s: %w", identity, err)
		}
	}
	l, err := q.lock(identity)
	if err != nil {
		return nil, nil, fmt.Errorf("ingest: %w", err)
	}
	defer l.Unlock()

	// A corrupt record only costs its token's uniqueness check; List reports it.
	existing, _ := q.listIdentity(identity)
	known := make(map[string]bool, len(existing))
	pending := 0
	for _, r := range existing {
		if r.ClientToken != "" {
			known[r.ClientToken] = true
		}
		if r.Status == StatusPending {
			pending++
		}
	}

	root, err := os.OpenRoot(inbox)
	if err != nil {
		return nil, nil, fmt.Errorf("ingest %s: %w", identity, err)
	}
	defer root.Close()
	dir, err := root.Open(".")
	if err != nil {
		return nil, nil, fmt.Errorf("ingest %s: %w", identity, err)
	}
	names, err := dir.Readdirnames(-1)
	dir.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("ingest %s: read inbox: %w", identity, err)
	}
	sort.Strings(names)

	done := 0
	for _, name := range names {
		if done == maxPerIngest || len(refused) >= maxRefusedPerIngest {
			break
		}
		if strings.HasPrefix(name, TempPrefix) {
			if err := q.dropIfStale(root, identity, name); err != nil {
				refused = append(refused, err)
			}
			continue
		}
		done++
		r, rerr := q.ingestOne(root, identity, name, known, pending)
		if rerr != nil {
			refused = append(refused, rerr)
			continue
		}
		pending++
		newReqs = append(newReqs, r)
		existing = append(existing, r)
	}

	// Republish every receipt that is missing or differs, so a receipt lost
	// to a crash between record and receipt, or anything else found under a
	// known token's name, is put right.
	for _, r := range existing {
		if err := q.reconcile(r); err != nil {
			return newReqs, refused, fmt.Errorf("ingest %s: %w", identity, err)
		}
	}
	return newReqs, refused, nil
}

func (q *Queue) dropIfStale(root *os.Root, identity, name string) error {
	fi, err := root.Lstat(name)
	if err != nil || q.now().Sub(fi.ModTime()) < staleTemp {
		return nil
	}
	if err := root.RemoveAll(name); err != nil {
		return &RefusedError{Identity: identity, File: name, Err: fmt.Errorf("stale partial file, cannot remove: %w", err)}
	}
	return &RefusedError{Identity: identity, File: name, Err: errors.New("stale partial file removed")}
}

// ingestOne handles one inbox entry: read it (refusing anything that is not a
// small regular file), remove it, parse it, store it.
func (q *Queue) ingestOne(root *os.Root, identity, name string, known map[string]bool, pending int) (Request, error) {
	refuse := func(token string, err error) error {
		re := &RefusedError{Identity: identity, File: name, Token: token, Err: err}
		if token != "" && !known[token] {
			// Tell a waiting helper, under its own token, that it was refused.
			rc := Receipt{Token: token, Status: StatusRefused, DecisionReason: sanitize(err.Error(), 300), CreatedAt: q.now()}
			if data, e := encodeReceipt(rc); e == nil {
				if e := q.writeReceipt(identity, token, data); e != nil {
					re.Err = fmt.Errorf("%w (and %v)", err, e)
				}
			}
		}
		return re
	}

	token, ok := strings.CutSuffix(name, ".json")
	if !ok || !ValidToken(token) {
		token = ""
	}
	data, readErr := readInboxFile(root, name)
	if err := root.RemoveAll(name); err != nil {
		// Never store what cannot be removed: the next Ingest would take it again.
		return Request{}, refuse("", fmt.Errorf("cannot remove from inbox: %w", err))
	}
	if token == "" {
		return Request{}, refuse("", errors.New("file name is not <client-token>.json (token: 16-64 of [a-z0-9])"))
	}
	if known[token] {
		return Request{}, refuse(token, errors.New("client token already used"))
	}
	if readErr != nil {
		return Request{}, refuse(token, readErr)
	}
	r, err := ParseRequest(data, identity)
	if err != nil {
		return Request{}, refuse(token, err)
	}
	if pending >= MaxPending {
		return Request{}, refuse(token, ErrTooManyPending)
	}
	r.ClientToken = token
	r.CreatedAt = q.now()
	if r.ID, err = q.mintID(identity); err != nil {
		return Request{}, refuse(token, err)
	}
	if err := q.writeRecord(r); err != nil {
		return Request{}, refuse(token, err)
	}
	known[token] = true
	// The receipt is written by the reconcile pass at the end of Ingest.
	return r, nil
}

// readInboxFile reads one entry without ever following a link or blocking on
// a FIFO or device: lstat, open with O_NOFOLLOW|O_NONBLOCK inside the inbox
// root, and check that what was opened is the regular file that was lstat'ed.
func readInboxFile(root *os.Root, name string) ([]byte, error) {
	lfi, err := root.Lstat(name)
	if err != nil {
		return nil, fmt.Errorf("stat: %w", err)
	}
	if !lfi.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file (%s)", typeName(lfi.Mode()))
	}
	if lfi.Size() > MaxRequestSize {
		return nil, fmt.Errorf("request too large: %d bytes, limit %d", lfi.Size(), MaxRequestSize)
	}
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat: %w", err)
	}
	if !os.SameFile(lfi, fi) || !fi.Mode().IsRegular() {
		return nil, errors.New("file was replaced while being read")
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink != 1 {
		// A hard link could name a file the bottle does not own.
		return nil, fmt.Errorf("file has %d hard links", st.Nlink)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxRequestSize+1))
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if len(data) > MaxRequestSize {
		return nil, fmt.Errorf("request too large: over %d bytes", MaxRequestSize)
	}
	return data, nil
}

func typeName(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m.IsDir():
		return "directory"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return m.Type().String()
}

// mintID returns an id not yet used by the bottle. The caller holds the lock.
func (q *Queue) mintID(identity string) (string, error) {
	for range 16 {
		id := identity + "-" + newSuffix(6)
		if _, err := os.Lstat(q.recordPath(identity, id)); errors.Is(err, fs.ErrNotExist) {
			return id, nil
		}
	}
	return "", fmt.Errorf("mint request id for %s: no free id", identity)
}

func (q *Queue) reconcile(r Request) error {
	if r.ClientToken == "" {
		return nil
	}
	want, err := encodeReceipt(receiptOf(r))
	if err != nil {
		return err
	}
	path := q.receiptPath(r.Identity, r.ClientToken)
	if fi, err := os.Lstat(path); err == nil && fi.Mode().IsRegular() && fi.Size() == int64(len(want)) {
		if got, err := os.ReadFile(path); err == nil && bytes.Equal(got, want) {
			return nil
		}
	}
	return q.writeReceipt(r.Identity, r.ClientToken, want)
}
