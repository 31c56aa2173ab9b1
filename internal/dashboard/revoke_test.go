package dashboard_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/charmbracelet/x/exp/teatest"

	"github.com/bot-bottle/bot-bottle/internal/dashboard"
	"github.com/bot-bottle/bot-bottle/internal/operatortest"
)

// revokeSource is the lifecycle source with its revoke recorded, or passed
// through to the lifecycle's own once through is set.
type revokeSource struct {
	*dashboard.LifecycleSource
	mu      sync.Mutex
	calls   []string
	through bool
}

func (s *revokeSource) RevokeCredential(ctx context.Context, id, name string) error {
	s.mu.Lock()
	s.calls = append(s.calls, id+"/"+name)
	through := s.through
	s.mu.Unlock()
	if through {
		return s.LifecycleSource.RevokeCredential(ctx, id, name)
	}
	return nil
}

func (s *revokeSource) called() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.calls...)
}

// r on a running bottle asks which credential, then y/n; only "y" revokes,
// through the source's revoke (lifecycle's, as `bot-bottle revoke`), and
// the status says what happened, a refusal in the lifecycle's words.
func TestRevokeCredentialKey(t *testing.T) {
	w := operatortest.New(t, binDir)
	id := w.StartDetached(t, "shell", "sleep", "600")
	src := &revokeSource{LifecycleSource: &dashboard.LifecycleSource{Env: w.Env, DecidedBy: "user:tester"}}
	tm := teatest.NewTestModel(t, dashboard.New(t.Context(), src, dashboard.Options{Refresh: 100 * time.Millisecond}),
		teatest.WithInitialTermSize(width, height))
	t.Cleanup(func() { _ = tm.Quit(); tm.WaitFinished(t, teatest.WithFinalTimeout(10*time.Second)) })
	scr := newScreen(tm.Output(), width, height)
	scr.waitFor(t, 10*time.Second, "1 bottle (1 running)", "r revoke credential")

	keys(tm, "r")
	scr.waitFor(t, 5*time.Second, "revoke which credential of "+id+"?")
	keys(tm, "esc")
	scr.waitFor(t, 5*time.Second, "revoke cancelled")

	keys(tm, "r", "no such name!", "enter")
	scr.waitFor(t, 5*time.Second, "not a credential name")
	keys(tm, "esc")

	keys(tm, "r", "api", "enter")
	scr.waitFor(t, 5*time.Second, "revoke credential api of "+id+"? its proxy stops putting it on the wire", "(y/n)")
	keys(tm, "n")
	scr.waitFor(t, 5*time.Second, "cancelled")
	if c := src.called(); len(c) != 0 {
		t.Fatalf("declined revokes were made: %v", c)
	}

	keys(tm, "r", "api", "enter")
	scr.waitFor(t, 5*time.Second, "revoke credential api of "+id+"?")
	keys(tm, "y")
	scr.waitFor(t, 10*time.Second, "revoked credential api of "+id+"; its next request goes out without it")
	if c := src.called(); len(c) != 1 || c[0] != id+"/api" {
		t.Fatalf("revokes made: %v, want %s/api", c, id)
	}

	// The lifecycle's own revoke: the test backend injects nothing, and the
	// status line says so in its words.
	src.mu.Lock()
	src.through = true
	src.mu.Unlock()
	keys(tm, "r", "api", "enter", "y")
	txt := scr.waitFor(t, 10*time.Second, "revoke api of "+id+" failed", "does not inject credentials")
	if strings.Count(txt, "revoked credential") != 0 {
		t.Errorf("a failed revoke is shown as done:\n%s", txt)
	}
}
