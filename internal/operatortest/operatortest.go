// Package operatortest builds the real world the operator's tools (the
// dashboard, supervise) are tested against: a fresh bot-bottle home, the
// real test backend plugin and `bottle` helper built from source, bottles
// started through lifecycle, and requests filed by the helper exactly as an
// agent files them. Nothing in it stands in for the code under test.
package operatortest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/bot-bottle/bot-bottle/internal/config"
	"github.com/bot-bottle/bot-bottle/internal/lifecycle"
	"github.com/bot-bottle/bot-bottle/internal/pluginhost"
	"github.com/bot-bottle/bot-bottle/internal/queue"
	"github.com/bot-bottle/bot-bottle/internal/state"
)

// Module is the import path prefix of this repository's packages.
const Module = "github.com/bot-bottle/bot-bottle"

// Build compiles the named main packages of this module into dir, the
// way a user builds them. Names are paths under the module, e.g.
// "internal/testplugin"; each binary is named by out[i].
func Build(dir string, pkgs map[string]string) error {
	for out, pkg := range pkgs {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, out), Module+"/"+pkg)
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
		}
	}
	return nil
}

// StandardBinaries are what most tests need: the test backend, the in-bottle
// helper, and bot-bottle itself.
var StandardBinaries = map[string]string{
	"bot-bottle-plugin-test": "internal/testplugin",
	"bottle":                 "cmd/bottle",
	"bot-bottle":             "cmd/bot-bottle",
}

// World is one bot-bottle home with the test backend.
type World struct {
	Bin  string // the built binaries
	Home string // BOT_BOTTLE_HOME
	Root string // BB_TESTPLUGIN_ROOT
	Env  *lifecycle.Env
	// Errs is what lifecycle printed.
	Errs *SyncBuffer
}

// New makes a World in fresh temp dirs. It sets BB_TESTPLUGIN_ROOT in the
// process environment (plugins inherit it), so tests using it must not run
// in parallel. Every bottle still there at the end is removed.
func New(t testing.TB, bin string) *World {
	t.Helper()
	base := t.TempDir()
	w := &World{Bin: bin, Home: filepath.Join(base, "home"), Root: filepath.Join(base, "tproot"), Errs: &SyncBuffer{}}
	t.Setenv("BB_TESTPLUGIN_ROOT", w.Root)
	if err := os.MkdirAll(w.Home, 0o700); err != nil {
		t.Fatal(err)
	}
	w.Env = w.NewEnv(t)
	t.Cleanup(func() { w.removeAll(t) })
	return w
}

// NewEnv returns another lifecycle environment over the same home, as a
// second bot-bottle process would have.
func (w *World) NewEnv(t testing.TB) *lifecycle.Env {
	t.Helper()
	store, err := state.Open(w.Home)
	if err != nil {
		t.Fatal(err)
	}
	plugins, err := config.LoadPlugins(w.Home)
	if err != nil {
		t.Fatal(err)
	}
	// Only our binaries: a plugin on the developer's PATH must not join in.
	getenv := func(k string) string {
		if k == "PATH" {
			return w.Bin
		}
		return os.Getenv(k)
	}
	return &lifecycle.Env{
		Home:    w.Home,
		Store:   store,
		Plugins: plugins,
		Host:    &pluginhost.Host{Home: w.Home, Config: plugins, ExeDir: w.Bin, Logger: hclog.NewNullLogger(), Getenv: getenv},
		In:      nil,
		Out:     w.Errs,
		Err:     w.Errs,
		Getenv:  getenv,
	}
}

var startedRE = regexp.MustCompile(`bot-bottle: (?:starting|resuming) ([a-z0-9-]+-[a-z0-9]{5})`)

// StartDetached starts a bottle of agent on the test backend running
// command in the background, and returns its identity.
func (w *World) StartDetached(t testing.TB, agent string, command ...string) string {
	t.Helper()
	before := w.Errs.Len()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := w.Env.Start(ctx, lifecycle.StartOptions{Agent: agent, Backend: "test", Detach: true, Command: command}); err != nil {
		t.Fatalf("start %s: %v\n%s", agent, err, w.Errs.String())
	}
	m := startedRE.FindStringSubmatch(w.Errs.String()[before:])
	if m == nil {
		t.Fatalf("no identity in start output:\n%s", w.Errs.String()[before:])
	}
	return m[1]
}

// File runs the real `bottle` helper for bottle id with args (e.g.
// "request", "egress", "docs.example.test", "--reason", "docs"), without
// waiting for the decision, as an agent inside the bottle would.
func (w *World) File(t testing.TB, id string, args ...string) {
	t.Helper()
	dir := w.BottleQueue(t, id)
	cmd := exec.Command(filepath.Join(w.Bin, "bottle"), append(args, "--no-wait")...)
	cmd.Env = append(os.Environ(), "BOT_BOTTLE_QUEUE="+dir, "BOT_BOTTLE_IDENTITY="+id)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bottle %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// BottleQueue is the queue dir bottle id's agent sees: the host's, or with
// BB_TESTPLUGIN_QUEUE_SYNC=1 the bottle's own, which only the backend's
// SyncQueue connects to the host's.
func (w *World) BottleQueue(t testing.TB, id string) string {
	t.Helper()
	if own := filepath.Join(w.Root, "remote", id); dirExists(own) {
		return own
	}
	dir, err := queue.Open(w.Home).Dir(id)
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// Pending ingests and returns the pending requests, oldest first.
func (w *World) Pending(t testing.TB) []queue.Request {
	t.Helper()
	all, err := w.Env.Requests(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []queue.Request
	for _, r := range all {
		if r.Status == queue.StatusPending {
			out = append(out, r)
		}
	}
	return out
}

func (w *World) removeAll(t testing.TB) {
	ids, _ := w.Env.Store.Identities()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, id := range ids {
		if err := w.Env.Remove(ctx, id); err != nil {
			t.Logf("cleanup: remove %s: %v", id, err)
		}
	}
}

// SyncBuffer is a bytes.Buffer safe for the concurrent writers lifecycle
// and the plugin host have.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Len is the number of bytes written.
func (b *SyncBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}
