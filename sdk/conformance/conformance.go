// Package conformance checks that a backend behaves the way the bot-bottle
// core relies on: exit codes and streams pass through, stdin's end reaches
// the agent, Stop removes everything and may be repeated, a bottle can be
// stopped by identity alone, and the optional capabilities it declares
// work. Run it against your real plugin process, driven over go-plugin (an
// *sdk.Client), from your plugin's tests:
//
//	func TestConformance(t *testing.T) {
//		conformance.Run(t, conformance.Harness{
//			Backend: client,              // from sdk.Dispense
//			Agent:   sdk.Agent{Name: "conf", Image: "…", Workdir: "/tmp"},
//		})
//	}
//
// The agent's image must have a POSIX sh, cat and echo.
package conformance

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// Harness is what the suite needs from a backend's test.
type Harness struct {
	// Backend is the backend under test, normally an *sdk.Client of the
	// real plugin process.
	Backend sdk.Backend
	// Agent is launched for every check; its Command is replaced.
	Agent sdk.Agent
	// Config is the plugin's config block as JSON ({} when nil).
	Config json.RawMessage
	// Spec, when set, adjusts every spec before Prepare (mounts, env…).
	Spec func(*sdk.Spec)
	// Timeout bounds each check (default 2 minutes).
	Timeout time.Duration
}

// Run runs every check as a subtest.
func Run(t *testing.T, h Harness) {
	if h.Timeout == 0 {
		h.Timeout = 2 * time.Minute
	}
	if h.Config == nil {
		h.Config = json.RawMessage("{}")
	}
	var info sdk.Info
	t.Run("Info", func(t *testing.T) {
		ctx := h.ctx(t)
		var err error
		info, err = h.Backend.Info(ctx)
		if err != nil {
			t.Fatalf("Info: %v", err)
		}
		if info.Name == "" || info.Version == "" {
			t.Errorf("Info names no plugin or version: %+v", info)
		}
		ok := false
		for _, v := range info.APIVersions {
			ok = ok || strings.SplitN(strings.TrimPrefix(v, "v"), ".", 2)[0] == strings.SplitN(sdk.APIVersion, ".", 2)[0]
		}
		if !ok {
			t.Errorf("Info.APIVersions %v does not include API %s", info.APIVersions, sdk.APIVersion)
		}
	})
	t.Run("ExitCodeAndStreams", func(t *testing.T) {
		out, errOut, st := h.runOnce(t, nil, "sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 7")
		if st.Code != 7 || !strings.Contains(out, "to-stdout") || !strings.Contains(errOut, "to-stderr") || strings.Contains(out, "to-stderr") {
			t.Fatalf("exit %d, stdout %q, stderr %q; want 7, to-stdout, to-stderr on their own streams", st.Code, out, errOut)
		}
	})
	t.Run("StdinEndReachesAgent", func(t *testing.T) {
		out, _, st := h.runOnce(t, strings.NewReader("first\nsecond\n"), "sh", "-c", "cat; echo done")
		if st.Code != 0 || out != "first\nsecond\ndone\n" {
			t.Fatalf("exit %d, stdout %q; want the input echoed, then done", st.Code, out)
		}
	})
	t.Run("StopIsThoroughAndRepeatable", func(t *testing.T) {
		ctx := h.ctx(t)
		spec, handle := h.launch(t, ctx, true, "sleep", "300")
		for i := 0; i < 2; i++ {
			if _, err := h.Backend.Stop(ctx, sdk.StopRequest{Handle: &handle, Identity: spec.Identity}); err != nil {
				t.Fatalf("Stop #%d: %v", i+1, err)
			}
		}
		h.assertListed(t, ctx, spec.Identity, false)
	})
	t.Run("StopByIdentityAlone", func(t *testing.T) {
		ctx := h.ctx(t)
		spec, _ := h.launch(t, ctx, true, "sleep", "300")
		h.assertListed(t, ctx, spec.Identity, true)
		if _, err := h.Backend.Stop(ctx, sdk.StopRequest{Identity: spec.Identity}); err != nil {
			t.Fatalf("Stop by identity: %v", err)
		}
		h.assertListed(t, ctx, spec.Identity, false)
	})
	t.Run("Exec", func(t *testing.T) {
		e, ok := h.Backend.(sdk.Execer)
		if !info.Has(sdk.CapExec) || !ok {
			t.Skip("backend does not declare exec")
		}
		ctx := h.ctx(t)
		_, handle := h.launch(t, ctx, true, "sleep", "300")
		res, err := e.Exec(ctx, sdk.ExecRequest{Handle: handle, Command: []string{"sh", "-c", "echo exec-out; exit 4"}})
		if err != nil || res.ExitCode != 4 || !strings.Contains(string(res.Stdout), "exec-out") {
			t.Fatalf("Exec = %+v, %v; want exit 4 and exec-out", res, err)
		}
	})
	t.Run("CopyRoundTrip", func(t *testing.T) {
		c, ok := h.Backend.(sdk.Copier)
		if !info.Has(sdk.CapCopy) || !ok {
			t.Skip("backend does not declare copy")
		}
		ctx := h.ctx(t)
		_, handle := h.launch(t, ctx, true, "sleep", "300")
		in := tarOf(t, "conformance.txt", "copied in and out\n")
		if err := c.CopyIn(ctx, handle, "/tmp", in); err != nil {
			t.Fatalf("CopyIn: %v", err)
		}
		out, err := c.CopyOut(ctx, handle, "/tmp/conformance.txt")
		if err != nil {
			t.Fatalf("CopyOut: %v", err)
		}
		if got := fileFromTar(t, out, "conformance.txt"); got != "copied in and out\n" {
			t.Fatalf("CopyOut returned %q", got)
		}
		if _, err := c.CopyOut(ctx, handle, "/tmp/no-such-file-here"); err == nil || !errors.Is(err, sdk.ErrNotFound) {
			t.Fatalf("CopyOut of a missing path: %v, want an error wrapping sdk.ErrNotFound", err)
		}
	})
}

func (h Harness) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), h.Timeout)
	t.Cleanup(cancel)
	return ctx
}

func identity(t *testing.T) string {
	const digits = "0123456789abcdefghijklmnopqrstuvwxyz"
	var b [5]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = digits[int(b[i])%len(digits)]
	}
	return "conf-" + string(b[:])
}

// launch prepares and launches a bottle running cmd, stopped at the end of
// the test whatever happens.
func (h Harness) launch(t *testing.T, ctx context.Context, detach bool, cmd ...string) (sdk.Spec, sdk.Handle) {
	t.Helper()
	spec := sdk.Spec{Identity: identity(t), Agent: h.Agent, Command: cmd, Config: h.Config, Detach: detach, Env: map[string]string{}}
	if h.Spec != nil {
		h.Spec(&spec)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = h.Backend.Stop(ctx, sdk.StopRequest{Identity: spec.Identity})
	})
	plan, err := h.Backend.Prepare(ctx, spec)
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	handle, err := h.Backend.Launch(ctx, spec, plan, func(sdk.Progress) {})
	if err != nil {
		t.Fatalf("Launch: %v", err)
	}
	if handle.Identity != "" && handle.Identity != spec.Identity {
		t.Fatalf("handle names %q, launched %q", handle.Identity, spec.Identity)
	}
	return spec, handle
}

func (h Harness) runOnce(t *testing.T, stdin io.Reader, cmd ...string) (string, string, sdk.ExitStatus) {
	t.Helper()
	ctx := h.ctx(t)
	spec, handle := h.launch(t, ctx, false, cmd...)
	var out, errOut bytes.Buffer
	st, err := h.Backend.Attach(ctx, sdk.AttachRequest{Handle: handle, Stdin: stdin != nil},
		sdk.AttachStreams{Stdin: stdin, Stdout: &out, Stderr: &errOut})
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	if _, err := h.Backend.Stop(ctx, sdk.StopRequest{Handle: &handle, Identity: spec.Identity}); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	return out.String(), errOut.String(), st
}

func (h Harness) assertListed(t *testing.T, ctx context.Context, id string, want bool) {
	t.Helper()
	bs, err := h.Backend.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	got := false
	for _, b := range bs {
		got = got || b.Identity == id
	}
	if got != want {
		t.Fatalf("List has %s: %v, want %v (%+v)", id, got, want, bs)
	}
}

func tarOf(t *testing.T, name, content string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), ModTime: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte(content)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func fileFromTar(t *testing.T, data []byte, name string) string {
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		hd, err := tr.Next()
		if err != nil {
			t.Fatalf("no %s in the archive: %v", name, err)
		}
		if strings.TrimPrefix(hd.Name, "./") == name {
			b, _ := io.ReadAll(tr)
			return string(b)
		}
	}
}
