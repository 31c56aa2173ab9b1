// Command bot-bottle-kube-init is the kubernetes backend's helper inside a
// bottle's pod. It is static and is the only file of its image; the pod's
// init container runs it to install itself into a shared volume and, for a
// bottle with no egress, to remove every network interface but loopback
// (the init container alone has NET_ADMIN, so the agent cannot bring them
// back, whatever the cluster's CNI does or does not enforce). The agent's
// container then runs it as a gate in front of the agent, and the plugin
// runs it through exec to copy files in and out of the bottle. For a bottle
// with an allowlist the init container leaves the pod one way out, to the
// bottle's egress proxy (package podnet), and the proxy's pod runs this same
// binary as the proxy (package egressproxy).
//
//	kube-init install DIR [--net-off | --egress-via IP] [--open-dir DIR]...
//	kube-init egress-proxy serve --identity ID [--audit]   the bottle's proxy, in its own pod (--audit: keep events for collection)
//	kube-init egress-proxy setup --peer IP <RULES | rules <RULES | collect | ack SEQ   its control (exec)
//	kube-init gate -- CMD...   hold CMD until an attach opens the gate (package gate), then exec it
//	kube-init run DIR -- CMD...  exec CMD in DIR (exec has no working directory)
//	kube-init idle             bb-queue's process (its work is exec)
//	kube-init queue take DIR | drop DIR NAME... | put DIR   the bottle's queue (package podqueue)
//	kube-init bye              release the gate held after the agent's end (pipe mode)
//	kube-init untar DIR        extract a tar from stdin into DIR
//	kube-init tar PATH         write PATH as a tar to stdout (exit 44: no such path)
package main

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bot-bottle/bot-bottle/plugins/kubernetes/internal/egressproxy"
	"github.com/bot-bottle/bot-bottle/plugins/kubernetes/internal/gate"
	"github.com/bot-bottle/bot-bottle/plugins/kubernetes/internal/podnet"
	"github.com/bot-bottle/bot-bottle/plugins/kubernetes/internal/podqueue"
)

// ExitNotFound is tar's exit code for a path that does not exist.
const ExitNotFound = 44

func main() {
	if len(os.Args) < 2 {
		fail("usage: kube-init install|gate|untar|tar ...")
	}
	var err error
	switch os.Args[1] {
	case "install":
		err = install(os.Args[2:])
	case "gate":
		err = holdGate(os.Args[2:])
	case "egress-proxy":
		err = egressProxy(os.Args[2:])
	case "run":
		if len(os.Args) < 5 || os.Args[3] != "--" {
			fail("usage: kube-init run DIR -- CMD...")
		}
		if err = os.Chdir(os.Args[2]); err == nil {
			err = execPath(os.Args[4:])
		}
	case "idle":
		// bb-queue's process: it does its work through exec.
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		<-ctx.Done()
		stop()
	case "queue":
		err = queueCmd(os.Args[2:])
	case "bye":
		// The gate is the container's first process.
		err = unix.Kill(1, byeSignal)
	case "untar":
		if len(os.Args) != 3 {
			fail("usage: kube-init untar DIR")
		}
		err = untar(os.Stdin, os.Args[2])
	case "tar":
		if len(os.Args) != 3 {
			fail("usage: kube-init tar PATH")
		}
		err = writeTar(os.Stdout, os.Args[2])
		if errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(os.Stderr, "kube-init: %v\n", err)
			os.Exit(ExitNotFound)
		}
	default:
		fail("unknown command " + os.Args[1])
	}
	if err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "kube-init: "+msg)
	os.Exit(125)
}

// install copies this binary to DIR/kube-init, makes the --open-dir
// directories writable by the agent's user (a fresh volume is root's), and
// with --net-off removes every interface but loopback.
func install(args []string) error {
	if len(args) < 1 {
		return errors.New("usage: kube-init install DIR [--net-off] [--open-dir DIR]...")
	}
	dir := args[0]
	netOff := false
	var via netip.Addr
	var open []string
	for i := 1; i < len(args); i++ {
		switch args[i] {
		case "--net-off":
			netOff = true
		case "--egress-via":
			if i+1 >= len(args) {
				return errors.New("--egress-via needs the proxy's address")
			}
			a, err := netip.ParseAddr(args[i+1])
			if err != nil {
				return fmt.Errorf("--egress-via: %w", err)
			}
			via = a
			i++
		case "--open-dir":
			if i+1 >= len(args) {
				return errors.New("--open-dir needs a directory")
			}
			open = append(open, args[i+1])
			i++
		default:
			return fmt.Errorf("unknown option %s", args[i])
		}
	}
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "kube-init"), self, 0o555); err != nil {
		return err
	}
	// The `bottle` helper, when the image has it (the plugin builds it in).
	if helper, err := os.ReadFile("/bottle"); err == nil {
		if err := os.WriteFile(filepath.Join(dir, "bottle"), helper, 0o555); err != nil {
			return err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, d := range open {
		// The sticky bit keeps one user's files its own, as in /tmp.
		if err := os.Chmod(d, 0o777|fs.ModeSticky); err != nil {
			return err
		}
	}
	switch {
	case netOff && via.IsValid():
		return errors.New("--net-off and --egress-via exclude each other")
	case netOff:
		return interfacesDown()
	case via.IsValid():
		res, err := podnet.RestrictTo(via)
		if err != nil {
			return fmt.Errorf("leave the pod only its egress proxy: %w", err)
		}
		fmt.Fprintf(os.Stderr, "kube-init: %s: only %s (next hop %s) is reachable\n", res.Link, res.Proxy, res.MAC)
		return nil
	}
	return nil
}

// egressProxy runs the bottle's proxy (serve) or speaks to it (the rest).
func egressProxy(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: kube-init egress-proxy serve|setup|rules|collect|ack ...")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var req egressproxy.Request
	switch args[0] {
	case "serve":
		audit := len(args) == 4 && args[3] == "--audit"
		if (len(args) != 3 && !audit) || args[1] != "--identity" {
			return errors.New("usage: kube-init egress-proxy serve --identity ID [--audit]")
		}
		log := slog.New(slog.NewTextHandler(os.Stderr, nil))
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", egressproxy.Port))
		if err != nil {
			return err
		}
		sctx, stop := signal.NotifyContext(context.Background(), unix.SIGTERM, unix.SIGINT)
		defer stop()
		log.Info("egress proxy listening", "addr", ln.Addr().String(), "identity", args[2])
		return egressproxy.Serve(sctx, args[2], audit, ln, log)
	case "setup", "rules":
		req.Op = args[0]
		if args[0] == "setup" {
			if len(args) != 3 || args[1] != "--peer" {
				return errors.New("usage: kube-init egress-proxy setup --peer IP <RULES")
			}
			req.Peer = args[2]
		}
		data, err := io.ReadAll(io.LimitReader(os.Stdin, 1<<20+1))
		if err != nil {
			return err
		}
		req.Rules = data
	case "collect":
		req.Op = egressproxy.OpCollect
	case "ack":
		if len(args) != 2 {
			return errors.New("usage: kube-init egress-proxy ack SEQ")
		}
		seq, err := strconv.ParseUint(args[1], 10, 64)
		if err != nil {
			return fmt.Errorf("ack: %w", err)
		}
		req.Op, req.Seq = egressproxy.OpAck, seq
	default:
		return fmt.Errorf("unknown egress-proxy command %s", args[0])
	}
	rep, err := egressproxy.Call(ctx, req)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(rep)
}

// interfacesDown removes every interface but loopback from the pod's
// network namespace (a veth's peer goes with it), which also removes every
// route: only loopback is left, and the agent, without NET_ADMIN, cannot
// make another.
func interfacesDown() error {
	ifs, err := net.Interfaces()
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	for i, ifc := range ifs {
		if ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		// ENODEV: it went with its veth peer.
		if err := delLink(fd, uint32(i+1), int32(ifc.Index)); err != nil && !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("remove interface %s: %w", ifc.Name, err)
		}
	}
	left, err := net.Interfaces()
	if err != nil {
		return err
	}
	for _, ifc := range left {
		if ifc.Flags&net.FlagLoopback == 0 {
			return fmt.Errorf("interface %s is still there", ifc.Name)
		}
	}
	return nil
}

// delLink sends RTM_DELLINK for one interface index and reads the kernel's
// acknowledgement.
func delLink(fd int, seq uint32, index int32) error {
	const hdr, info = unix.SizeofNlMsghdr, unix.SizeofIfInfomsg
	msg := make([]byte, hdr+info)
	nl := (*unix.NlMsghdr)(unsafe.Pointer(&msg[0]))
	nl.Len = uint32(len(msg))
	nl.Type = unix.RTM_DELLINK
	nl.Flags = unix.NLM_F_REQUEST | unix.NLM_F_ACK
	nl.Seq = seq
	ifi := (*unix.IfInfomsg)(unsafe.Pointer(&msg[hdr]))
	ifi.Family = unix.AF_UNSPEC
	ifi.Index = index
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Seq != seq || m.Header.Type != unix.NLMSG_ERROR {
				continue
			}
			if len(m.Data) < 4 {
				return errors.New("short netlink answer")
			}
			if code := *(*int32)(unsafe.Pointer(&m.Data[0])); code != 0 {
				return syscall.Errno(-code)
			}
			return nil
		}
	}
}

// holdGate holds the agent until an attach opens it (package gate) and then
// becomes the agent. On a terminal it reads the tokens in raw mode without echo, and restores the terminal
// before the agent starts.
func holdGate(args []string) error {
	if len(args) < 2 || args[0] != "--" {
		return errors.New("usage: kube-init gate -- CMD...")
	}
	cmd := args[1:]
	if _, err := exec.LookPath(cmd[0]); err != nil {
		return err
	}
	old, terr := unix.IoctlGetTermios(0, unix.TCGETS)
	if terr == nil {
		raw := *old
		raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
		if err := unix.IoctlSetTermios(0, unix.TCSETS, &raw); err != nil {
			return err
		}
	}
	// On a terminal stdout and stderr are one stream; otherwise each is
	// announced on, so the plugin knows both are joined.
	outs := []io.Writer{os.Stdout}
	if terr != nil {
		outs = append(outs, os.Stderr)
	}
	if err := gate.Wait(os.Stdin, outs...); err != nil {
		return err
	}
	if terr == nil {
		if err := unix.IoctlSetTermios(0, unix.TCSETS, old); err != nil {
			return err
		}
		return execPath(cmd)
	}
	os.Exit(runHeld(cmd, outs))
	return nil
}

// runHeld runs the agent (pipe mode) as this process's child, passing on
// the signals a pod gets, and once it has exited holds the container until
// an attach has all of its output (gate.Hold); its exit code is the
// agent's.
func runHeld(argv []string, outs []io.Writer) int {
	path, err := exec.LookPath(argv[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "kube-init: "+err.Error())
		return 127
	}
	c := exec.Command(path, argv[1:]...)
	c.Args = argv
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH)
	if err := c.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "kube-init: "+err.Error())
		return 126
	}
	go func() {
		for s := range sigs {
			_ = c.Process.Signal(s)
		}
	}()
	code := 0
	if err := c.Wait(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			fmt.Fprintln(os.Stderr, "kube-init: "+err.Error())
			return 126
		}
		code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
	}
	// Released by `kube-init bye`, which an attach runs once it has End;
	// handled before the forwarding stops, so it never has its default
	// action.
	bye := make(chan os.Signal, 1)
	signal.Notify(bye, byeSignal)
	signal.Stop(sigs)
	released := make(chan struct{})
	go func() { <-bye; close(released) }()
	gate.Hold(released, holdTimeout, outs...)
	return code
}

// byeSignal releases a held gate; PID 1 gets only the signals it handles,
// so it cannot come from anywhere but a process that means it.
const byeSignal = unix.SIGUSR1

// How long an ended agent's container waits for an attach to take the
// rest of its output: long enough for a loaded cluster's round trip, short
// enough that a detached bottle's end is not held for long.
const holdTimeout = 5 * time.Second

// execPath becomes cmd, found on $PATH.
func execPath(cmd []string) error {
	path, err := exec.LookPath(cmd[0])
	if err != nil {
		return err
	}
	return syscall.Exec(path, cmd, os.Environ())
}

// untar extracts r into dir; names that would leave dir are refused.
func untar(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(h.Name)
		if name == "." {
			continue
		}
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("tar entry %q leaves %s", h.Name, dir)
		}
		p := filepath.Join(dir, name)
		mode := fs.FileMode(h.Mode) & fs.ModePerm
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, mode|0o700); err != nil {
				return err
			}
			_ = os.Chmod(p, mode|0o700)
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			_ = os.Chmod(p, mode)
		case tar.TypeSymlink:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			_ = os.Remove(p)
			if err := os.Symlink(h.Linkname, p); err != nil {
				return err
			}
		default:
			// Devices, fifos and hard links are not part of a project copy.
		}
		if !h.ModTime.IsZero() && h.Typeflag != tar.TypeSymlink {
			_ = os.Chtimes(p, h.ModTime, h.ModTime)
		}
	}
}

// writeTar writes path (a file or a tree) to w, named from its base name.
func writeTar(w io.Writer, path string) error {
	if _, err := os.Lstat(path); err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	base := filepath.Dir(filepath.Clean(path))
	err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		} else if !info.Mode().IsRegular() && !info.IsDir() {
			return nil
		}
		h, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(base, p)
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if info.IsDir() {
			h.Name += "/"
		}
		h.Uname, h.Gname = "", ""
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := io.Copy(tw, f); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// queueCmd is the pod's side of a queue sync, run by exec in bb-queue.
func queueCmd(args []string) error {
	switch {
	case len(args) == 2 && args[0] == "take":
		return podqueue.Take(args[1], os.Stdout)
	case len(args) >= 2 && args[0] == "drop":
		return podqueue.Drop(args[1], args[2:])
	case len(args) == 2 && args[0] == "put":
		return podqueue.Put(os.Stdin, args[1])
	}
	return errors.New("usage: kube-init queue take DIR | drop DIR NAME... | put DIR")
}
