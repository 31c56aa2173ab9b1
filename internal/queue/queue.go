// Package queue is the host side of the request channel between a bottle and
// its operator: capability and egress requests come in through a per-bottle
// inbox as untrusted files, are stored host-side as the authoritative record,
// and are decided exactly once; decisions go back to the bottle through a
// read-only outbox.
//
// Layout under the bot-bottle home:
//
//	queue/                      0700: other host users cannot reach any inbox
//	queue/<identity>/           0755, mounted read-only at /run/bot-bottle/queue
//	queue/<identity>/inbox/     1777, mounted read-write on top: the bottle's only writable place
//	queue/<identity>/outbox/    0755, receipts and decisions by client token, host-written
//	requests/<identity>/        0700, host-only: <request-id>.json records, the .lock and the .apply.lock
//
// Nothing under queue/<identity>/ is ever trusted: the host reads only the
// inbox, and only as input to ParseRequest.
package queue

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/gofrs/flock"
	"github.com/google/renameio/v2"
)

// Kind is what a request asks for.
type Kind string

const (
	KindCapability Kind = "capability"
	KindEgress     Kind = "egress"
)

// Status is where a request stands.
type Status string

const (
	StatusPending  Status = "pending"
	StatusApproved Status = "approved"
	StatusDenied   Status = "denied"
	// StatusRefused appears only in outbox receipts: the host refused the
	// file as invalid and never stored a request.
	StatusRefused Status = "refused"
)

// Request is the host's authoritative record of one request.
type Request struct {
	ID             string     `json:"id"`
	Identity       string     `json:"identity"`
	Kind           Kind       `json:"kind"`
	Reason         string     `json:"reason"`
	Dockerfile     string     `json:"dockerfile,omitempty"`
	Run            string     `json:"run,omitempty"`
	Host           string     `json:"host,omitempty"`
	Status         Status     `json:"status"`
	CreatedAt      time.Time  `json:"created_at"`
	DecidedAt      *time.Time `json:"decided_at,omitempty"`
	DecidedBy      string     `json:"decided_by,omitempty"`
	DecisionReason string     `json:"decision_reason,omitempty"`
	// ClientToken is the random name the helper gave its inbox file; the
	// receipt in the outbox carries the same name so the helper finds it.
	ClientToken string `json:"client_token,omitempty"`
	// Held marks an approval that is decided (no one else may decide it)
	// but not yet carried out: until Release, the bottle's receipt says
	// pending, so that the agent never hears "approved" of what is not yet
	// in force. See DecideHeld.
	Held bool `json:"held,omitempty"`
	// Stopping marks an approval released with its bottle yet to be stopped
	// (a capability approval, for the rebuild): the agent has heard
	// "approved", and the bottle's stop clears it (Stopped). A decider
	// killed before that leaves it for the next reader, as with Held.
	Stopping bool `json:"stopping,omitempty"`
}

var (
	// ErrAlreadyDecided is returned by Decide for a request that is no
	// longer pending.
	ErrAlreadyDecided = errors.New("request already decided")
	// ErrNoRequest is returned for a request id that does not exist.
	ErrNoRequest = errors.New("no such request")
)

// Directory modes. The inbox is world-writable with the sticky bit because the
// bottle's user has a uid the host cannot know in advance (1000 by convention,
// root in images without a user, shifted under user namespaces); the sticky
// bit keeps in-bottle users from deleting or renaming each other's files.
// Other host users are kept out by queue/ being 0700: a bind mount does not
// need its host parents to be traversable from inside.
const (
	modeQueueRoot = 0o700
	modeQueueDir  = 0o755
	modeInbox     = 0o777 | fs.ModeSticky
	modeOutbox    = 0o755
	modeHostOnly  = 0o700
	modeReceipt   = 0o644
	modeRecord    = 0o600
)

// Queue is the request store under one bot-bottle home.
type Queue struct {
	home string
	now  func() time.Time
}

// Open returns the queue under home. It touches nothing on disk.
func Open(home string) *Queue {
	return &Queue{home: home, now: func() time.Time { return time.Now().UTC() }}
}

func (q *Queue) queueDir(identity string) string {
	return filepath.Join(q.home, "queue", identity)
}

func (q *Queue) recordDir(identity string) string {
	return filepath.Join(q.home, "requests", identity)
}

func (q *Queue) recordPath(identity, id string) string {
	return filepath.Join(q.recordDir(identity), id+".json")
}

func (q *Queue) lock(identity string) (*flock.Flock, error) {
	l := flock.New(filepath.Join(q.recordDir(identity), ".lock"), flock.SetPermissions(modeRecord))
	if err := l.Lock(); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("lock requests of %s: %w", identity, ErrNoRequest)
		}
		return nil, fmt.Errorf("lock requests of %s: %w", identity, err)
	}
	return l, nil
}

// Dir creates (or repairs the modes of) the bottle's queue dir and its
// host-only record dir, and returns the queue dir to mount at
// sdk.GuestQueueDir. Backends mount it read-only and its inbox/ read-write.
func (q *Queue) Dir(identity string) (string, error) {
	if !ValidIdentity(identity) {
		return "", fmt.Errorf("queue dir: invalid identity %q", identity)
	}
	dirs := []struct {
		path string
		mode fs.FileMode
	}{
		{filepath.Join(q.home, "queue"), modeQueueRoot},
		{q.queueDir(identity), modeQueueDir},
		{filepath.Join(q.queueDir(identity), "inbox"), modeInbox},
		{filepath.Join(q.queueDir(identity), "outbox"), modeOutbox},
		{filepath.Join(q.home, "requests"), modeHostOnly},
		{q.recordDir(identity), modeHostOnly},
	}
	for _, d := range dirs {
		if err := ensureDir(d.path, d.mode); err != nil {
			return "", fmt.Errorf("queue dir of %s: %w", identity, err)
		}
	}
	return q.queueDir(identity), nil
}

// ensureDir makes path a real directory (never a symlink) with exactly mode;
// chmod because mkdir is subject to the umask.
func ensureDir(path string, mode fs.FileMode) error {
	if err := os.Mkdir(path, mode.Perm()); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create %s: %w", path, err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("check %s: %w", path, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory (%s)", path, fi.Mode().Type())
	}
	if fi.Mode()&(fs.ModePerm|fs.ModeSticky) != mode {
		if err := os.Chmod(path, mode); err != nil {
			return fmt.Errorf("chmod %s: %w", path, err)
		}
	}
	return nil
}

// Remove deletes the bottle's queue dir and its request records, at the
// cleanup of a bottle that is not preserved. A missing bottle is not an error.
func (q *Queue) Remove(identity string) error {
	if !ValidIdentity(identity) {
		return fmt.Errorf("remove queue: invalid identity %q", identity)
	}
	if l, err := q.lock(identity); err == nil {
		defer l.Unlock()
	}
	// RemoveAll never follows symlinks, so links a bottle left in its inbox
	// cannot make this delete anything outside.
	if err := os.RemoveAll(q.queueDir(identity)); err != nil {
		return fmt.Errorf("remove queue of %s: %w", identity, err)
	}
	if err := os.RemoveAll(q.recordDir(identity)); err != nil {
		return fmt.Errorf("remove requests of %s: %w", identity, err)
	}
	return nil
}

// Get returns the authoritative record of one request.
func (q *Queue) Get(id string) (Request, error) {
	identity, err := identityOf(id)
	if err != nil {
		return Request{}, err
	}
	return q.read(identity, id)
}

func (q *Queue) read(identity, id string) (Request, error) {
	data, err := os.ReadFile(q.recordPath(identity, id))
	if errors.Is(err, fs.ErrNotExist) {
		return Request{}, fmt.Errorf("request %s: %w", id, ErrNoRequest)
	}
	if err != nil {
		return Request{}, fmt.Errorf("read request %s: %w", id, err)
	}
	var r Request
	if err := json.Unmarshal(data, &r); err != nil {
		return Request{}, fmt.Errorf("read request %s: corrupt record: %w", id, err)
	}
	if r.ID != id || r.Identity != identity {
		return Request{}, fmt.Errorf("read request %s: record names %q of %q", id, r.ID, r.Identity)
	}
	return r, nil
}

// List returns every stored request of every bottle, pending and decided,
// oldest first. Records that cannot be read are left out and reported in the
// error, so that one bad file does not hide the rest: callers should show the
// list and the error.
func (q *Queue) List() ([]Request, error) {
	ents, err := os.ReadDir(filepath.Join(q.home, "requests"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list requests: %w", err)
	}
	var out []Request
	var errs []error
	for _, e := range ents {
		if !e.IsDir() || !ValidIdentity(e.Name()) {
			continue
		}
		rs, err := q.listIdentity(e.Name())
		out = append(out, rs...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	sortRequests(out)
	return out, errors.Join(errs...)
}

func (q *Queue) listIdentity(identity string) ([]Request, error) {
	ents, err := os.ReadDir(q.recordDir(identity))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list requests of %s: %w", identity, err)
	}
	var out []Request
	var errs []error
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !e.Type().IsRegular() {
			continue
		}
		if got, err := identityOf(id); err != nil || got != identity {
			continue
		}
		r, err := q.read(identity, id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, r)
	}
	return out, errors.Join(errs...)
}

func sortRequests(rs []Request) {
	sort.SliceStable(rs, func(i, j int) bool {
		if !rs[i].CreatedAt.Equal(rs[j].CreatedAt) {
			return rs[i].CreatedAt.Before(rs[j].CreatedAt)
		}
		return rs[i].ID < rs[j].ID
	})
}

// Decide records the decision on a pending request, exactly once across
// processes: the per-bottle lock serialises deciders and the loser finds the
// request decided and gets ErrAlreadyDecided. The authoritative record is
// written first, then the bottle's receipt; if only the receipt fails, the
// decision stands (the error says so) and the next Ingest republishes it.
func (q *Queue) Decide(id string, approve bool, reason, decidedBy string) (Request, error) {
	return q.decide(id, approve, false, reason, decidedBy)
}

// DecideHeld records an approval that its decider has yet to carry out (an
// egress approval widens the allowlist first): it is decided exactly once as
// with Decide, but Held, and the bottle goes on seeing it pending until
// Release. The decider holds LockApply of the bottle from before DecideHeld
// until after Release, so a held request whose lock is free was left by a
// decider that died or gave up: whoever takes the lock then carries it out
// again (it must be idempotent) and releases it. That way a crash between the
// steps delays the answer to the next reader and never loses it.
func (q *Queue) DecideHeld(id, decidedBy string) (Request, error) {
	return q.decide(id, true, true, "", decidedBy)
}

func (q *Queue) decide(id string, approve, held bool, reason, decidedBy string) (Request, error) {
	identity, err := identityOf(id)
	if err != nil {
		return Request{}, err
	}
	if strings.TrimSpace(decidedBy) == "" {
		return Request{}, fmt.Errorf("decide %s: missing decided-by", id)
	}
	l, err := q.lock(identity)
	if err != nil {
		return Request{}, fmt.Errorf("decide %s: %w", id, err)
	}
	defer l.Unlock()
	r, err := q.read(identity, id)
	if err != nil {
		return Request{}, fmt.Errorf("decide: %w", err)
	}
	if r.Status != StatusPending {
		return r, fmt.Errorf("decide %s: %w (%s by %s)", id, ErrAlreadyDecided, r.Status, r.DecidedBy)
	}
	now := q.now()
	r.Status = StatusDenied
	if approve {
		r.Status = StatusApproved
	}
	r.DecidedAt = &now
	r.DecidedBy = decidedBy
	r.DecisionReason = reason
	r.Held = held
	if err := q.writeRecord(r); err != nil {
		return Request{}, fmt.Errorf("decide %s: %w", id, err)
	}
	if err := q.publish(r); err != nil {
		return r, fmt.Errorf("decide %s: decision recorded, but %w", id, err)
	}
	return r, nil
}

// Release marks a held approval carried out and publishes it to the bottle;
// with stopping, its bottle is yet to be stopped (see Request.Stopping), in
// the same write. A request that is not held is left as it is (a second
// releaser, or one that finds a crashed decider's work already finished,
// does nothing); either way the record comes back.
func (q *Queue) Release(id string, stopping bool) (Request, error) {
	identity, err := identityOf(id)
	if err != nil {
		return Request{}, err
	}
	l, err := q.lock(identity)
	if err != nil {
		return Request{}, fmt.Errorf("release %s: %w", id, err)
	}
	defer l.Unlock()
	r, err := q.read(identity, id)
	if err != nil {
		return Request{}, fmt.Errorf("release: %w", err)
	}
	if !r.Held {
		return r, nil
	}
	r.Held, r.Stopping = false, stopping
	if err := q.writeRecord(r); err != nil {
		return Request{}, fmt.Errorf("release %s: %w", id, err)
	}
	if err := q.publish(r); err != nil {
		return r, fmt.Errorf("release %s: released, but %w", id, err)
	}
	return r, nil
}

// Stopped clears Stopping on every approval of the bottle: it has been
// stopped, so none waits for its stop any more. Receipts do not change. A
// bottle without records is not an error.
func (q *Queue) Stopped(identity string) error {
	if !ValidIdentity(identity) {
		return fmt.Errorf("record the stop: invalid identity %q", identity)
	}
	l, err := q.lock(identity)
	if errors.Is(err, ErrNoRequest) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("record the stop of %s: %w", identity, err)
	}
	defer l.Unlock()
	rs, err := q.listIdentity(identity)
	for _, r := range rs {
		if !r.Stopping {
			continue
		}
		r.Stopping = false
		if werr := q.writeRecord(r); werr != nil {
			err = errors.Join(err, werr)
		}
	}
	if err != nil {
		return fmt.Errorf("record the stop of %s: %w", identity, err)
	}
	return nil
}

// LockApply takes the lock under which a decider carries out the bottle's
// held approvals (DecideHeld), waiting for it until ctx ends. It is the
// bottle's and not the request's so that two approvals of one bottle are
// carried out one after the other: each pushes the whole allowlist, and the
// later push must not be the shorter list. A crash releases it (flock).
// unlock may be called more than once.
func (q *Queue) LockApply(ctx context.Context, identity string) (unlock func(), err error) {
	fl, err := q.applyLock(identity)
	if err != nil {
		return nil, err
	}
	// Not ok comes with the error: ctx's, or the flock's.
	if ok, err := fl.TryLockContext(ctx, 10*time.Millisecond); !ok {
		return nil, fmt.Errorf("lock the approvals of %s: %w", identity, err)
	}
	return func() { _ = fl.Unlock() }, nil
}

// TryLockApply is LockApply without waiting: ok is false while another
// decider, alive, is carrying out an approval of the bottle.
func (q *Queue) TryLockApply(identity string) (unlock func(), ok bool, err error) {
	fl, err := q.applyLock(identity)
	if err != nil {
		return nil, false, err
	}
	ok, err = fl.TryLock()
	if err != nil {
		return nil, false, fmt.Errorf("lock the approvals of %s: %w", identity, err)
	}
	if !ok {
		return nil, false, nil
	}
	return func() { _ = fl.Unlock() }, true, nil
}

// applyLock lives beside the queue lock in the host-only record dir, and
// goes with the bottle's records. A separate file, because the queue lock is
// held only for moments and never across a call into a backend.
func (q *Queue) applyLock(identity string) (*flock.Flock, error) {
	if !ValidIdentity(identity) {
		return nil, fmt.Errorf("lock approvals: invalid identity %q", identity)
	}
	dir := q.recordDir(identity)
	if _, err := os.Lstat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("lock the approvals of %s: %w", identity, ErrNoRequest)
		}
		return nil, fmt.Errorf("lock the approvals of %s: %w", identity, err)
	}
	return flock.New(filepath.Join(dir, ".apply.lock"), flock.SetPermissions(modeRecord),
		flock.SetFlag(os.O_CREATE|os.O_RDONLY|syscall.O_NOFOLLOW)), nil
}

// Unfinished reports whether r is an approval left to finish: held (not yet
// carried out) or released with its bottle's stop to come (Stopping).
func (r Request) Unfinished() bool { return r.Held || r.Stopping }

// Held returns the bottle's approvals that are decided but not yet carried
// out, and those released whose bottle is yet to be stopped (Stopping):
// those Unfinished.
// Records that cannot be read are left out and reported in the error.
func (q *Queue) Held(identity string) ([]Request, error) {
	if !ValidIdentity(identity) {
		return nil, fmt.Errorf("held approvals: invalid identity %q", identity)
	}
	rs, err := q.listIdentity(identity)
	var held []Request
	for _, r := range rs {
		if r.Unfinished() {
			held = append(held, r)
		}
	}
	sortRequests(held)
	return held, err
}

func (q *Queue) writeRecord(r Request) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode request %s: %w", r.ID, err)
	}
	path := q.recordPath(r.Identity, r.ID)
	err = renameio.WriteFile(path, append(data, '\n'), modeRecord,
		renameio.WithTempDir(filepath.Dir(path)), renameio.IgnoreUmask())
	if err != nil {
		return fmt.Errorf("write request %s: %w", r.ID, err)
	}
	return nil
}

const base36 = "0123456789abcdefghijklmnopqrstuvwxyz"

// newSuffix returns n random base36 characters.
func newSuffix(n int) string {
	b := make([]byte, n)
	for i := range b {
		// Bytes from 252 up are redrawn: 252 = 7*36 keeps the result uniform.
		for {
			var c [1]byte
			_, _ = rand.Read(c[:]) // crypto/rand.Read never fails on Linux
			if c[0] < 252 {
				b[i] = base36[c[0]%36]
				break
			}
		}
	}
	return string(b)
}
