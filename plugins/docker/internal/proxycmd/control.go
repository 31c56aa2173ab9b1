package proxycmd

// The control channel's client side, used two ways: by the control
// subcommands that `docker exec` starts in the proxy's container (on the
// abstract socket), and by the backend itself on the host, over the socket
// file the proxy listens on as well (serve --control-dir): the same
// requests, replies and descriptor passing, without an exec.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/bot-bottle/bot-bottle/plugins/internal/egress"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// ControlFile is the name of the control socket file in serve's
// --control-dir.
const ControlFile = "control.sock"

// callWait bounds one request's exchange once connected.
const callWait = 30 * time.Second

// listenFile listens on the control socket file in dir. A socket file
// there is a predecessor's (a proxy of the same key before this one): it
// is replaced. The file is the proxy user's alone; the directory the
// backend made for it is too.
func listenFile(dir string) (*net.UnixListener, error) {
	path := filepath.Join(dir, ControlFile)
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("%s is there and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove the stale %s: %w", path, err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// Args are the control subcommand's arguments that make req (its Rules
// go on the subcommand's stdin, its log is --log): runClient reads them
// back. The subcommand may be a proxy's of an earlier build, which serves
// its bottles until they stop: flags are only ever added.
func (req Request) Args() []string {
	args := []string{req.Op}
	if req.Identity != "" {
		args = append(args, "--identity", req.Identity)
	}
	if req.Listen != "" {
		args = append(args, "--listen", req.Listen)
	}
	if req.Credential != "" {
		args = append(args, "--credential", req.Credential)
	}
	return args
}

// Stdin is what the control subcommand that makes req reads on its stdin:
// the rules, for the requests that carry them.
func (req Request) Stdin() []byte {
	if takesRules(req.Op) {
		return req.Rules
	}
	return nil
}

// takesRules says whether a request op carries a rules file.
func takesRules(op string) bool { return op == CmdAdd || op == CmdRules }

// runClient runs one control subcommand against a running shared proxy.
func runClient(op string, args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet(name+" "+op, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	identity := fs.String("identity", "", "the bottle")
	credential := fs.String("credential", "", "revoke: the credential's name")
	listen := fs.String("listen", "", "add: the bottle's listener address (the proxy's on its network)")
	logPath := fs.String("log", "", "add: the bottle's egress log, opened by this process and handed to the proxy")
	control := fs.String("control", ControlSocket, "the control socket")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	req := Request{Op: op, Identity: *identity, Listen: *listen, Credential: *credential}
	if op == CmdRevoke && sdk.ValidCredentialName(*credential) != nil {
		return usageError{fmt.Errorf("--credential %q is not a credential name", *credential)}
	}
	if op != CmdList {
		if err := checkIdentity("--identity", *identity); err != nil {
			return usageError{err}
		}
	}
	if takesRules(op) {
		data, err := io.ReadAll(io.LimitReader(stdin, egress.MaxRulesFileSize+1))
		if err != nil {
			return fmt.Errorf("read the rules from stdin: %w", err)
		}
		req.Rules = data
	}
	var log *os.File
	if op == CmdAdd && *logPath != "" {
		f, err := OpenEgressLog(*logPath)
		if err != nil {
			return err
		}
		defer f.Close()
		log = f
	}
	conn, err := dial(*control)
	if err != nil {
		return err
	}
	defer conn.Close()
	rep, err := Send(context.Background(), conn, req, log)
	if err != nil {
		return err
	}
	writeReply(stdout, op, rep)
	return nil
}

// writeReply is the subcommand's output; ParseOutput reads it back.
func writeReply(w io.Writer, op string, rep Reply) {
	switch op {
	case CmdAdd:
		// Where it listens, then the bottles served now.
		fmt.Fprintf(w, "%s %s\n", rep.Addr, rep.Device)
	case CmdForget:
		// Whether it was served, and the bottles served still: the
		// backend's last stop reads them.
		if rep.Forgot {
			fmt.Fprintln(w, "forgot")
		} else {
			fmt.Fprintln(w, "unknown")
		}
	case CmdList:
	default:
		return
	}
	for _, id := range rep.Bottles {
		fmt.Fprintln(w, id)
	}
}

// ParseOutput is the reply that the subcommand op printed as out.
func ParseOutput(op, out string) (Reply, error) {
	rep := Reply{Bottles: []string{}}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	switch op {
	case CmdAdd, CmdForget:
		if len(lines) == 0 {
			return rep, fmt.Errorf("egress proxy %s: no answer", op)
		}
		if op == CmdAdd {
			rep.Addr, rep.Device, _ = strings.Cut(lines[0], " ")
		} else {
			rep.Forgot = lines[0] == "forgot"
		}
		lines = lines[1:]
	case CmdList:
	default:
		return rep, nil
	}
	rep.Bottles = append(rep.Bottles, lines...)
	return rep, nil
}

// OpenEgressLog opens a bottle's egress log to hand to the proxy: for
// appending, made when missing, never through a symbolic link, and only a
// regular file.
func OpenEgressLog(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("egress log: %w", err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("egress log %s is not a regular file", path)
	}
	return f, nil
}

// dial connects to the control socket, waiting a little for a proxy that
// is starting.
func dial(control string) (*net.UnixConn, error) {
	deadline := time.Now().Add(dialWait)
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: control, Net: "unix"})
		if err == nil {
			return c, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the egress proxy's control channel: %w", err)
		}
		time.Sleep(delay)
	}
}

// Send makes one request on a connected control socket, with the bottle's
// open egress log when log is not nil, and returns the proxy's reply once
// it has done it. Whatever it returns, the request may have been made.
func Send(ctx context.Context, conn *net.UnixConn, req Request, log *os.File) (Reply, error) {
	var rep Reply
	var oob []byte
	if log != nil {
		req.Log = true
		oob = syscall.UnixRights(int(log.Fd()))
	}
	b, err := json.Marshal(req)
	if err != nil {
		return rep, err
	}
	deadline := time.Now().Add(callWait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn.SetDeadline(deadline)
	defer context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })()
	// The descriptor rides on the first bytes; the rest follows as a plain
	// write, which (unlike one sendmsg) never stops short.
	n, _, err := conn.WriteMsgUnix(b[:min(len(b), 1024)], oob, nil)
	if err == nil {
		_, err = conn.Write(b[n:])
	}
	if err != nil {
		return rep, errors.Join(ctx.Err(), fmt.Errorf("send the request: %w", err))
	}
	conn.CloseWrite()
	out, err := io.ReadAll(io.LimitReader(conn, 1<<20))
	if err != nil {
		return rep, errors.Join(ctx.Err(), fmt.Errorf("read the answer: %w", err))
	}
	if err := json.Unmarshal(bytes.TrimSpace(out), &rep); err != nil {
		return rep, fmt.Errorf("the egress proxy's answer %.80q: %w", out, err)
	}
	if rep.Error != "" {
		return rep, errors.New(strings.TrimSpace(rep.Error))
	}
	return rep, nil
}
