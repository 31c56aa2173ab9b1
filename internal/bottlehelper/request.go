package bottlehelper

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	"unicode"

	"github.com/bot-bottle/bot-bottle/internal/queue"
)

func (e env) capability(ctx context.Context, c capabilityCmd) error {
	s := queue.Submission{Kind: queue.KindCapability, Reason: c.Reason}
	switch {
	case c.Dockerfile == "" && strings.TrimSpace(c.Run) == "":
		return usageErr("give the change: --run CMD or --dockerfile FILE")
	case c.Dockerfile != "":
		data, err := readLimited(c.Dockerfile, queue.MaxDockerfileLen)
		if err != nil {
			return usageErr("--dockerfile: %v", err)
		}
		s.Dockerfile = string(data)
	default:
		// Accept "RUN apt-get …" as well as "apt-get …": the host appends the RUN.
		run := strings.TrimSpace(c.Run)
		if len(run) > 4 && strings.EqualFold(run[:4], "RUN ") {
			run = strings.TrimSpace(run[4:])
		}
		s.Run = run
	}
	return e.submit(ctx, s, c.waitFlags)
}

func (e env) egress(ctx context.Context, c egressCmd) error {
	return e.submit(ctx, queue.Submission{Kind: queue.KindEgress, Reason: c.Reason, Host: c.Host}, c.waitFlags)
}

// readLimited reads a regular file of at most limit bytes.
func readLimited(path string, limit int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(data) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return data, nil
}

// submit validates s as the host will, writes it into the inbox atomically
// and, unless told not to, waits for the decision.
func (e env) submit(ctx context.Context, s queue.Submission, w waitFlags) error {
	s.Version = queue.SubmissionVersion
	check := "bottle"
	if e.identity != "" {
		if !queue.ValidIdentity(e.identity) {
			return usageErr("$%s=%q is not a bottle identity", envIdentity, e.identity)
		}
		s.Identity, check = e.identity, e.identity
	}
	req, err := s.Validate(check)
	if err != nil {
		return usageErr("invalid request: %v", err)
	}
	s.Host = req.Host
	token, err := e.write(s)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "bottle: submitted %s request (%s)\n", s.Kind, clean(req.Summary()))
	if w.NoWait {
		fmt.Fprintf(e.stdout, "submitted %s\n", token)
		fmt.Fprintf(e.stderr, "bottle: not waiting; `bottle requests` shows its status; the operator decides it with: bot-bottle approve %s (or deny %s --reason …)\n", token, token)
		return nil
	}
	return e.wait(ctx, token, w)
}

// write puts the request into inbox/<token>.json: written under a temp name
// the host leaves alone, synced, then renamed, so the host never reads half a
// request.
func (e env) write(s queue.Submission) (string, error) {
	inbox := filepath.Join(e.queueDir, "inbox")
	if fi, err := os.Stat(inbox); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("no request queue at %s (is this running inside a bottle? $%s names the queue dir)", e.queueDir, envQueueDir)
	}
	data, err := json.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("encode request: %w", err)
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("make client token: %w", err)
	}
	token := hex.EncodeToString(b[:])
	tmp := filepath.Join(inbox, queue.TempPrefix+token)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return "", fmt.Errorf("write request: %w", err)
	}
	err = func() error {
		// The host may run as another uid: make the file readable whatever the umask.
		if err := f.Chmod(0o644); err != nil {
			return err
		}
		if _, err := f.Write(data); err != nil {
			return err
		}
		return f.Sync()
	}()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(inbox, token+".json"))
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("write request: %w", err)
	}
	return token, nil
}

// readReceipt returns the host's receipt for token, or ok=false if there is
// none yet.
func (e env) readReceipt(token string) (rc queue.Receipt, ok bool, err error) {
	data, err := readLimited(filepath.Join(e.queueDir, "outbox", token+".json"), 1<<20)
	if errors.Is(err, fs.ErrNotExist) {
		return rc, false, nil
	}
	if err != nil {
		return rc, false, fmt.Errorf("read decision: %w", err)
	}
	if err := json.Unmarshal(data, &rc); err != nil {
		// A receipt is replaced atomically, so this is not a half-written file.
		return rc, false, fmt.Errorf("read decision: %w", err)
	}
	return rc, true, nil
}

func (e env) wait(ctx context.Context, token string, w waitFlags) error {
	if w.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, w.Timeout)
		defer cancel()
	}
	poll := w.Poll
	if poll <= 0 {
		poll = 250 * time.Millisecond
	}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	fmt.Fprintf(e.stderr, "bottle: waiting for the host to receive the request…\n")
	announced := false
	for {
		rc, ok, err := e.readReceipt(token)
		if err != nil {
			return err
		}
		if ok {
			switch rc.Status {
			case queue.StatusApproved:
				fmt.Fprintf(e.stdout, "approved %s%s\n", rc.ID, because(rc.DecisionReason))
				return nil
			case queue.StatusDenied:
				fmt.Fprintf(e.stdout, "denied %s%s\n", rc.ID, because(rc.DecisionReason))
				return &exitCode{exitDenied, fmt.Errorf("request %s denied%s", rc.ID, because(rc.DecisionReason))}
			case queue.StatusRefused:
				fmt.Fprintf(e.stdout, "refused%s\n", because(rc.DecisionReason))
				return &exitCode{exitDenied, fmt.Errorf("request refused by the host%s", because(rc.DecisionReason))}
			case queue.StatusPending:
				if !announced {
					announced = true
					fmt.Fprintf(e.stderr, "bottle: waiting for the operator… (bot-bottle approve %s / bot-bottle deny %s --reason …)\n", rc.ID, rc.ID)
				}
			}
		}
		select {
		case <-ctx.Done():
			what := "request " + token
			if announced {
				what = "request " + rc.ID
			}
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("no decision within %s; %s is still pending (see `bottle requests`)", w.Timeout, what)
			}
			return fmt.Errorf("stopped waiting; %s is still pending (see `bottle requests`)", what)
		case <-tick.C:
		}
	}
}

func because(reason string) string {
	if reason == "" {
		return ""
	}
	return ": " + clean(reason)
}

// clean keeps text from the queue printable on the agent's terminal.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' {
			return ' '
		}
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
}
