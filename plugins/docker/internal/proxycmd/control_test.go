package proxycmd

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// startServe runs the shared proxy with args and returns once it serves.
func startServe(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := proxyCmd(append([]string{CmdServe}, args...)...)
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	serving := make(chan string, 1)
	var logs bytes.Buffer
	go func() {
		sc := bufio.NewScanner(errPipe)
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), LogServing) {
				serving <- logs.String()
			}
		}
	}()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	select {
	case <-serving:
	case <-time.After(10 * time.Second):
		t.Fatal("the shared proxy did not start")
	}
	return cmd
}

// serve --control-dir answers on a socket file as on the abstract socket,
// replacing a stale socket there, the file its user's alone; the open
// egress log a client hands over comes with the request.
func TestServeControlFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, ControlFile)
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	abstract := fmt.Sprintf("@bot-bottle-test-%d", os.Getpid())
	startServe(t, "--control", abstract, "--control-dir", dir)
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode() != os.ModeSocket|0o600 {
		t.Fatalf("control file: %v %v, want a socket of mode 0600", fi, err)
	}
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatalf("dial the control file: %v", err)
	}
	defer conn.Close()
	// An add on an address no interface holds is refused, and says so:
	// the request reached the proxy whole, with its log.
	log, err := OpenEgressLog(filepath.Join(t.TempDir(), "b.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	_, err = Send(context.Background(), conn, Request{Op: CmdAdd, Identity: "bottle-a", Listen: "192.0.2.1:3128",
		Rules: []byte(`{"identity":"bottle-a","rules":[]}`)}, log)
	if err == nil || !strings.Contains(err.Error(), "no interface holds 192.0.2.1") {
		t.Errorf("add on a foreign address over the file: %v", err)
	}
	out, err := proxyCmd(CmdList, "--control", abstract).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("list on the abstract socket: %v %q", err, out)
	}
}

// A control directory the proxy cannot listen in leaves it driven through
// the abstract socket only: it serves.
func TestServeWithoutControlFile(t *testing.T) {
	abstract := fmt.Sprintf("@bot-bottle-test-nofile-%d", os.Getpid())
	startServe(t, "--control", abstract, "--control-dir", filepath.Join(t.TempDir(), "missing"))
	if out, err := proxyCmd(CmdList, "--control", abstract).CombinedOutput(); err != nil {
		t.Errorf("list: %v %q", err, out)
	}
}

// ParseOutput reads back what a control subcommand printed: the exec
// fallback's replies are the direct path's.
func TestParseOutputReadsWriteReply(t *testing.T) {
	for _, c := range []struct {
		op  string
		rep Reply
	}{
		{CmdAdd, Reply{Addr: "198.18.0.2:3128", Device: "eth3", Bottles: []string{"a-1", "b-2"}}},
		{CmdForget, Reply{Forgot: true, Bottles: []string{"b-2"}}},
		{CmdForget, Reply{Bottles: []string{}}},
		{CmdList, Reply{Bottles: []string{"a-1"}}},
		{CmdRules, Reply{Bottles: []string{}}},
	} {
		var b bytes.Buffer
		writeReply(&b, c.op, c.rep)
		got, err := ParseOutput(c.op, b.String())
		if err != nil || !reflect.DeepEqual(got, c.rep) {
			t.Errorf("%s: %q read back as %+v (%v), want %+v", c.op, b.String(), got, err, c.rep)
		}
	}
	if _, err := ParseOutput(CmdAdd, ""); err == nil {
		t.Error("an add with no answer was read as one")
	}
}

// Args are flags the control subcommand reads back into the same request.
func TestArgsAreTheSubcommandsFlags(t *testing.T) {
	req := Request{Op: CmdRevoke, Identity: "a-1", Credential: "key"}
	if got := strings.Join(req.Args(), " "); got != "revoke --identity a-1 --credential key" {
		t.Errorf("args %q", got)
	}
	req = Request{Op: CmdAdd, Identity: "a-1", Listen: "198.18.0.2:3128,198.18.0.10:3128"}
	if got := strings.Join(req.Args(), " "); got != "add --identity a-1 --listen 198.18.0.2:3128,198.18.0.10:3128" {
		t.Errorf("args %q", got)
	}
}
