package pluginhost

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// buildOldSDKPlugin builds testdata/oldsdk: the example echo backend against
// a copy of the SDK as of b34629f (before the core's side moved to sdk/host
// and before the core made the TLS certificates), kept as a module of its
// own. Its go.mod requires the library versions this tree builds with; the
// SDK's code is the old one.
func buildOldSDKPlugin(tb testing.TB, dir string) string {
	tb.Helper()
	bin := filepath.Join(dir, BinaryPrefix+"old")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = filepath.Join("testdata", "oldsdk")
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("build the old-SDK plugin: %v\n%s", err, out)
	}
	return bin
}

// Issue 20 acceptance 2: a plugin built against the previous SDK starts and
// works with this core, unlocked and locked. It knows nothing of the
// certificates the core makes for it and answers with go-plugin's AutoMTLS.
func TestOldSDKPluginStartsAndWorks(t *testing.T) {
	exeDir := t.TempDir()
	src := buildOldSDKPlugin(t, exeDir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	unlocked := newHost(t, exeDir, nil)
	locked := newHost(t, "", nil)
	in, err := locked.Install(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		h      *Host
		plugin string
	}{"unlocked": {unlocked, "old"}, "locked": {locked, in.Name}} {
		t.Run(name, func(t *testing.T) {
			p, err := tc.h.Start(ctx, tc.plugin)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if name == "locked" && p.Source != SourceHome {
				t.Fatalf("started from %s, want the installed, locked copy", p.Source)
			}
			if p.Info.Name != "echo" || p.Protocol != 1 {
				t.Fatalf("info %+v, protocol %d; want the old echo on protocol 1", p.Info, p.Protocol)
			}
			spec := sdk.Spec{Identity: "echo-abcde", Command: []string{"exit", "5"}}
			plan, err := p.Backend.Prepare(ctx, spec)
			if err != nil {
				t.Fatal(err)
			}
			hd, err := p.Backend.Launch(ctx, spec, plan, func(sdk.Progress) {})
			if err != nil {
				t.Fatal(err)
			}
			var out, errOut strings.Builder
			st, err := p.Backend.Attach(ctx, sdk.AttachRequest{Handle: hd, Stdin: true},
				sdk.AttachStreams{Stdin: strings.NewReader("hello\n"), Stdout: &out, Stderr: &errOut})
			if err != nil || st.Code != 5 || out.String() != "HELLO\n" {
				t.Fatalf("attach: %+v %v, stdout %q stderr %q", st, err, out.String(), errOut.String())
			}
		})
	}
}

// A detach from a plugin built against the previous SDK ends cleanly and at
// once: the core closes its side of the stream, which that SDK also takes
// for a detach, and waits only for the plugin's answer. The plugin answers
// further calls after it.
func TestOldSDKPluginDetaches(t *testing.T) {
	exeDir := t.TempDir()
	buildOldSDKPlugin(t, exeDir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := newHost(t, exeDir, nil).Start(ctx, "old")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	spec := sdk.Spec{Identity: "echo-dtach", Command: []string{"exit", "5"}}
	hd, err := p.Backend.Launch(ctx, spec, sdk.Plan{}, func(sdk.Progress) {})
	if err != nil {
		t.Fatal(err)
	}
	stdin, stdinW := io.Pipe()
	defer stdinW.Close()
	echoed := make(chan struct{})
	out := writerFunc(func(b []byte) {
		if strings.Contains(string(b), "HELLO") {
			close(echoed)
		}
	})
	actx, detach := context.WithCancel(ctx)
	defer detach()
	var detachedAt time.Time
	go func() {
		_, _ = io.WriteString(stdinW, "hello\n")
		select {
		case <-echoed: // the session is in place
		case <-ctx.Done():
		}
		detachedAt = time.Now()
		detach()
	}()
	st, err := p.Backend.Attach(actx, sdk.AttachRequest{Handle: hd, Stdin: true},
		sdk.AttachStreams{Stdin: stdin, Stdout: out, Stderr: io.Discard})
	returned := time.Now()
	if err != nil || !st.Detached {
		t.Fatalf("detach from the old-SDK plugin = %+v, %v; want Detached and no error", st, err)
	}
	if ctx.Err() != nil {
		t.Fatal("the old-SDK plugin never echoed the input, so the detach tested nothing")
	}
	// Well under the bound a silent plugin gets: this one answers.
	if waited := returned.Sub(detachedAt); waited > 2*time.Second {
		t.Fatalf("detach took %v", waited)
	}
	if info, err := p.Backend.Info(ctx); err != nil || info.Name != "echo" {
		t.Fatalf("info after the detach: %+v, %v", info, err)
	}
}

type writerFunc func([]byte)

func (f writerFunc) Write(b []byte) (int, error) { f(b); return len(b), nil }
