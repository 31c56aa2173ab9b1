package backend

// The shared proxy's control channel from the host. A `docker exec` of the
// control subcommand costs tens of milliseconds (create, attach, inspect);
// when the engine runs on this host the plugin talks to the proxy itself,
// over a socket file in a directory of the plugin's private directory that
// only the proxy's container has mounted (never a bottle):
//
//	<private>/<proxy name>.control/control.sock   the proxy's, made by serve
//	<private>/<proxy id, 12 hex>.control          → that socket (a symlink)
//
// The directory belongs to the proxy's user, 0700, inside the plugin's
// private directory (this user's, 0700): only this user and root reach the
// socket. The link, made when the proxy is created, lets every caller find
// the socket from the proxy's id alone. Before a request is sent, the peer
// on the socket must be a process of that very container (its cgroup names
// the container's id): a stale link or socket of a removed proxy, or one
// of a proxy of another engine with the same name, is never trusted. When
// the file is not there or not the proxy's (Docker Desktop's VM, a remote
// DOCKER_HOST, a user-namespaced engine, a proxy of an earlier build) the
// request goes through `docker exec` as before; never once it was sent.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"golang.org/x/sys/unix"

	"github.com/bot-bottle/bot-bottle/plugins/docker/internal/proxycmd"
	"github.com/bot-bottle/bot-bottle/sdk"
)

const (
	// guestControlDir is where the proxy's container has its control
	// directory.
	guestControlDir = "/run/egress-control"
	// controlDialWait bounds the dial of the socket file: a local socket
	// answers at once or not at all.
	controlDialWait = 200 * time.Millisecond
	// controlStartWait bounds the wait of a start that made the proxy for
	// its control socket file: a proxy listens on it a few milliseconds
	// after it started.
	controlStartWait = 2 * time.Second
	// controlSweepAge: a control link or directory younger than this may
	// be of a proxy that is being made (sweepControl).
	controlSweepAge = 10 * time.Minute
)

// controlDir is the shared proxy's control directory on the host.
func controlDir(private, proxyName string) string {
	return filepath.Join(private, proxyName+".control")
}

// controlLink is the link to the control socket of the proxy id.
func controlLink(private, id string) string {
	return filepath.Join(private, id[:12]+".control")
}

// prepareControlDir makes the control directory of the proxy name for the
// user it runs as, with no socket in it, and returns it (for a bind mount).
func prepareControlDir(name string) (string, error) {
	private, err := privateDir()
	if err != nil {
		return "", err
	}
	dir := controlDir(private, name)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("the egress proxy's control directory: %w", err)
	}
	if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("the egress proxy's control directory %s is not a directory", dir)
	}
	if err := os.Remove(filepath.Join(dir, proxycmd.ControlFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("the egress proxy's control directory: %w", err)
	}
	if proxyUser() == nobody {
		if err := os.Chown(dir, nobodyID, nobodyID); err != nil {
			return "", fmt.Errorf("the egress proxy's control directory: %w", err)
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", fmt.Errorf("the egress proxy's control directory: %w", err)
	}
	return dir, nil
}

// linkControl points the link of the proxy id at its control socket. The
// links of earlier proxies of the name (removed without their last stop:
// `docker rm`) go: only the newest proxy listens there.
func linkControl(id, dir string) error {
	private, err := privateDir()
	if err != nil {
		return err
	}
	sock := filepath.Join(dir, proxycmd.ControlFile)
	links, _ := filepath.Glob(filepath.Join(private, "*.control"))
	for _, l := range links {
		if t, err := os.Readlink(l); err == nil && t == sock {
			_ = os.Remove(l)
		}
	}
	return os.Symlink(sock, controlLink(private, id))
}

// dropControl removes the control directory and link of a proxy that is
// gone. A new proxy of the same name makes its directory afresh.
func dropControl(id, name string) {
	private, err := privateDir()
	if err != nil {
		return
	}
	if validContainerID(id) {
		_ = os.Remove(controlLink(private, id))
	}
	if name != "" {
		_ = os.RemoveAll(controlDir(private, name))
	}
}

// sweepControl removes the control links and directories that proxies
// removed around the plugin (`docker rm`, a test's cleanup by label) left
// behind: older than controlSweepAge (no proxy is being made with them),
// of no shared proxy of this engine, and with no listener on their socket
// (no other engine's proxy uses them either). It runs once a start made a
// proxy, in the background.
func sweepControl(ctx context.Context, c *client.Client) {
	private, err := privateDir()
	if err != nil {
		return
	}
	entries, err := filepath.Glob(filepath.Join(private, "*.control"))
	if err != nil || len(entries) == 0 {
		return
	}
	cs, err := c.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", LabelRole+"="+RoleSharedProxy), filters.Arg("label", sdk.LabelManaged+"=true"))})
	if err != nil {
		return
	}
	live := map[string]bool{}
	for _, ct := range cs {
		live[controlLink(private, ct.ID)] = true
		live[controlDir(private, containerName(ct))] = true
	}
	for _, e := range entries {
		fi, err := os.Lstat(e)
		if err != nil || live[e] || time.Since(fi.ModTime()) < controlSweepAge {
			continue
		}
		sock := e
		if fi.IsDir() {
			sock = filepath.Join(e, proxycmd.ControlFile)
		}
		if conn, err := net.DialTimeout("unix", sock, controlDialWait); err == nil {
			conn.Close()
			continue
		}
		_ = os.RemoveAll(e)
	}
}

// validContainerID: the engine's ids of containers and images (after
// "sha256:") are 64 lower-case hex digits.
func validContainerID(id string) bool {
	return len(id) == 64 && strings.Trim(id, "0123456789abcdef") == ""
}

// controlProxy makes one control request of the shared proxy id and
// returns its reply once the proxy has done it: over the proxy's socket
// file when it answers as the proxy, else through `docker exec`. egressLog
// is the bottle's egress log on the host (add), handed to the proxy open.
func controlProxy(ctx context.Context, c *client.Client, id string, req proxycmd.Request, egressLog string) (proxycmd.Reply, error) {
	if conn, err := dialControl(ctx, id); err == nil {
		defer conn.Close()
		var log *os.File
		if egressLog != "" {
			if log, err = proxycmd.OpenEgressLog(egressLog); err != nil {
				return proxycmd.Reply{}, fmt.Errorf("egress proxy %s: %w", req.Op, err)
			}
			defer log.Close()
		}
		rep, err := proxycmd.Send(ctx, conn, req, log)
		if err != nil {
			return rep, fmt.Errorf("egress proxy %s: %w", req.Op, err)
		}
		return rep, nil
	}
	args := req.Args()
	if egressLog != "" {
		args = append(args, "--log", guestAuditDir+"/"+filepath.Base(egressLog))
	}
	out, err := execProxy(ctx, c, id, req.Stdin(), args...)
	if err != nil {
		return proxycmd.Reply{}, err
	}
	return proxycmd.ParseOutput(req.Op, out)
}

// dialControl connects to the control socket file of the proxy id and
// makes sure the process that answers is the proxy's.
func dialControl(ctx context.Context, id string) (*net.UnixConn, error) {
	if !validContainerID(id) {
		return nil, fmt.Errorf("%q is not a container's id", id)
	}
	private, err := privateDir()
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: controlDialWait}
	nc, err := d.DialContext(ctx, "unix", controlLink(private, id))
	if err != nil {
		return nil, err
	}
	conn := nc.(*net.UnixConn)
	if err := checkPeer(conn, id); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// checkPeer makes sure the listener on conn is a process of the container
// id running as the proxy's user. Its credentials are the kernel's, taken
// when it listened; its pid is in this process's pid namespace (0 when the
// listener is not in it: refused).
func checkPeer(conn *net.UnixConn, id string) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var cred *syscall.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return fmt.Errorf("the control socket's peer: %w", cerr)
	}
	if uid := proxyUID(); cred.Uid != uint32(uid) {
		return fmt.Errorf("the control socket's peer (pid %d, uid %d) is not the egress proxy", cred.Pid, cred.Uid)
	}
	if err := inContainer(int(cred.Pid), id); err != nil {
		return fmt.Errorf("the control socket's peer: %w", err)
	}
	return nil
}

// inContainer makes sure the process pid (of this pid namespace) is one of
// the container id: its cgroup names the container.
func inContainer(pid int, id string) error {
	if pid <= 0 {
		return fmt.Errorf("pid %d is not a process here", pid)
	}
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return err
	}
	if !strings.Contains(string(cg), id) {
		return fmt.Errorf("process %d is not in the container %.12s", pid, id)
	}
	return nil
}

// awaitControl waits, for at most controlStartWait, until the proxy id
// that this start just made (its pid as the engine tells it) listens on
// its control socket file, so that the start's add goes over it too. It
// waits only when the socket can come: the proxy runs on this host (its
// pid is the container's here) in no user namespace (whose ids could not
// write the directory). Whatever it finds, the add dials as always and
// falls back to exec.
func awaitControl(ctx context.Context, id string, pid int) {
	if inContainer(pid, id) != nil {
		return
	}
	if m, err := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", pid)); err != nil || strings.Join(strings.Fields(string(m)), " ") != "0 0 4294967295" {
		return
	}
	private, err := privateDir()
	if err != nil {
		return
	}
	sock, err := os.Readlink(controlLink(private, id))
	if err != nil {
		return
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, filepath.Dir(sock), unix.IN_CREATE|unix.IN_MOVED_TO); err != nil {
		return
	}
	deadline := time.Now().Add(controlStartWait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	buf := make([]byte, 4096)
	for {
		// Looked for after the watch is set: it cannot come unseen.
		if _, err := os.Lstat(sock); err == nil {
			return
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			return
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, int(wait.Milliseconds())+1); err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
		for {
			if _, err := unix.Read(fd, buf); err != nil {
				break // drained (EAGAIN): look again
			}
		}
	}
}
