package proxycmd

// The shared proxy: one process (one container) per home that serves many
// bottles. Each bottle has an egress.Proxy of its own — its rules, limits,
// audit and recent refusals — listening on its own internal network only:
// the listener is bound to the bottle's address on that network *and*, with
// SO_BINDTODEVICE, to the interface the network reaches the proxy through.
// So a bottle is told by the interface its connection arrived on, which no
// packet it forges can change: a connection to another bottle's listener
// address that arrives on this bottle's interface finds no listener.
//
// Bottles come and go through the control channel: an abstract unix socket
// (@bot-bottle-egress-control) and, with --control-dir, a socket file in a
// directory the backend mounted into this container alone. Abstract
// sockets belong to a network namespace, and only the proxy's own
// processes (and what `docker exec` starts in its container) are in the
// proxy's; the file is reachable by the proxy's user and root on the host
// only: no agent can reach either. The backend sends its requests over the
// file itself, or through `docker exec <proxy> … egress-proxy add|forget|
// rules|list|revoke` (control.go); each returns once the proxy has done it
// (add: the listener is bound), so nothing polls.
//
// The audit: the bottle's log file is opened by the user the bottles'
// egress logs belong to (the backend on the host, or the exec'd `add` in
// the bind-mounted audit directory) and handed open to the proxy over the
// socket (SCM_RIGHTS). The proxy itself runs as nobody and cannot even list
// that directory: it writes the files it was given and nothing else.

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bot-bottle/bot-bottle/plugins/internal/egress"
)

// ErrNoCredential starts revoke's refusal of a credential the bottle does
// not have in force; the backend tells it from other failures by it.
const ErrNoCredential = "no credential in force"

// ControlSocket is the shared proxy's control channel: an abstract unix
// socket, reachable only from the proxy's own network namespace.
const ControlSocket = "@bot-bottle-egress-control"

// Subcommands of Command.
const (
	CmdServe  = "serve"
	CmdAdd    = "add"
	CmdForget = "forget"
	CmdRules  = "rules"
	CmdList   = "list"
	CmdRevoke = "revoke"
)

// LogServing is what the shared proxy logs once its control channel is up.
const LogServing = "egress proxy serving"

const (
	// maxRequest bounds a control request: a rules file and a little more.
	maxRequest = egress.MaxRulesFileSize + 4096
	// dialWait bounds a client's wait for a proxy that is still starting.
	dialWait = 10 * time.Second
	// forgetWait bounds how long forget waits for a bottle's connections
	// to close; its listener is closed at once.
	forgetWait = 200 * time.Millisecond
)

type Request struct {
	Op       string `json:"op"`
	Identity string `json:"identity,omitempty"`
	// Credential names the credential of revoke.
	Credential string          `json:"credential,omitempty"`
	Listen     string          `json:"listen,omitempty"`
	Rules      json.RawMessage `json:"rules,omitempty"`
	// Log says the request carries the bottle's open egress log.
	Log bool `json:"log,omitempty"`
}

type Reply struct {
	Error string `json:"error,omitempty"`
	// Addr is where add listens, and Device the interface it is bound to.
	Addr   string `json:"addr,omitempty"`
	Device string `json:"device,omitempty"`
	// Bottles are the identities served, after the request.
	Bottles []string `json:"bottles"`
	// Forgot: forget found the bottle.
	Forgot bool `json:"forgot,omitempty"`
}

// AddInput is what `add` reads on its stdin: the bottle's rules file (its
// fields are those of egress.RulesFile, which ParseRulesFile reads from the
// same bytes) and what the bottle's TLS termination needs. The CA's key
// and the credentials' values are secrets: they travel only over the exec's
// stdin and the control socket, never in a command line, a container's
// config or a log, and the proxy holds them in memory only.
type AddInput struct {
	egress.RulesFile
	CACert      string          `json:"ca_cert,omitempty"`
	CAKey       string          `json:"ca_key,omitempty"`
	Credentials []AddCredential `json:"credentials,omitempty"`
	// UpstreamRoots (PEM) replace the system's roots for the upstreams of
	// terminated connections: for tests, whose upstreams have a test CA.
	UpstreamRoots string `json:"upstream_roots,omitempty"`
}

// AddCredential is one egress.Credential on its way to the proxy.
type AddCredential struct {
	Name        string   `json:"name"`
	Hosts       []string `json:"hosts"`
	Header      string   `json:"header"`
	Prefix      string   `json:"prefix,omitempty"`
	Placeholder string   `json:"placeholder"`
	Value       string   `json:"value"`
}

// tlsConfig turns the TLS half of an add into the proxy's config.
func (in AddInput) tlsConfig(cfg *egress.Config) error {
	if in.CACert != "" || in.CAKey != "" {
		ca, err := egress.ParseCA([]byte(in.CACert), []byte(in.CAKey))
		if err != nil {
			return fmt.Errorf("the bottle's CA: %w", err)
		}
		cfg.CA = ca
	}
	for _, c := range in.Credentials {
		cfg.Credentials = append(cfg.Credentials, egress.Credential{Name: c.Name, Hosts: c.Hosts, Header: c.Header,
			Prefix: c.Prefix, Placeholder: c.Placeholder, Value: c.Value})
	}
	if in.UpstreamRoots != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(in.UpstreamRoots)) {
			return errors.New("upstream roots: no certificate in the PEM")
		}
		cfg.UpstreamRoots = pool
	}
	return nil
}

// served is one bottle of the shared proxy.
type served struct {
	identity string
	addr     netip.AddrPort
	subnet   netip.Prefix
	proxy    *egress.Proxy
	ln       net.Listener
	cancel   context.CancelFunc
	done     chan struct{}
}

// hub is the shared proxy's bottles.
type hub struct {
	ctx          context.Context
	log          *slog.Logger
	stdout       *egress.EventLog
	allowOwnHost bool

	mu      sync.RWMutex
	bottles map[string]*served
}

func runServe(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(name+" "+CmdServe, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	allowOwnHost := fs.Bool("allow-own-host", false, "tests only: let rules reach this host's loopback and addresses")
	control := fs.String("control", ControlSocket, "the control socket")
	controlDir := fs.String("control-dir", "", "a directory to listen on a control socket file in as well ("+ControlFile+"), for a backend on the same host")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	h := &hub{ctx: ctx, log: log, stdout: egress.NewEventLog(stdout), allowOwnHost: *allowOwnHost, bottles: map[string]*served{}}
	ln, err := net.Listen("unix", *control)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	lns := []net.Listener{ln}
	file := ""
	if *controlDir != "" {
		if fl, err := listenFile(*controlDir); err != nil {
			// The backend falls back to docker exec: without the file
			// the proxy is slower to drive, not broken.
			log.Warn("no control socket file: control through the abstract socket only", "error", err)
		} else {
			lns, file = append(lns, fl), fl.Addr().String()
		}
	}
	go func() {
		<-ctx.Done()
		for _, l := range lns {
			l.Close()
		}
	}()
	log.Info(LogServing, "control", *control, "control_file", file)
	errs := make(chan error, len(lns))
	for _, l := range lns {
		go func() { errs <- h.accept(l) }()
	}
	var failed error
	for range lns {
		if err := <-errs; err != nil && failed == nil {
			failed = err
			stop()
		}
	}
	if failed != nil {
		return failed
	}
	h.mu.Lock()
	all := make([]*served, 0, len(h.bottles))
	for _, s := range h.bottles {
		all = append(all, s)
	}
	h.mu.Unlock()
	for _, s := range all {
		<-s.done
	}
	log.Info("egress proxy stopped")
	return nil
}

// accept answers the requests on one control socket until it is closed.
func (h *hub) accept(ln net.Listener) error {
	for {
		conn, err := ln.Accept()
		if err != nil {
			if h.ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("control socket: %w", err)
		}
		go h.handle(conn.(*net.UnixConn))
	}
}

// handle answers one control request.
func (h *hub) handle(conn *net.UnixConn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	req, file, err := readRequest(conn)
	var rep Reply
	if err == nil {
		rep, err = h.do(req, file)
	} else if file != nil {
		file.Close()
	}
	if err != nil {
		rep = Reply{Error: err.Error()}
		h.log.Warn("control request refused", "op", req.Op, "identity", req.Identity, "error", err)
	}
	if rep.Bottles == nil {
		rep.Bottles = h.identities()
	}
	b, _ := json.Marshal(rep)
	conn.Write(append(b, '\n'))
}

// readRequest reads a request and the file descriptor that may come with it.
func readRequest(conn *net.UnixConn) (Request, *os.File, error) {
	var req Request
	buf := make([]byte, 64<<10)
	oob := make([]byte, syscall.CmsgSpace(4))
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil && !errors.Is(err, io.EOF) {
		return req, nil, fmt.Errorf("read request: %w", err)
	}
	var file *os.File
	if oobn > 0 {
		msgs, perr := syscall.ParseSocketControlMessage(oob[:oobn])
		if perr == nil && len(msgs) == 1 {
			if fds, ferr := syscall.ParseUnixRights(&msgs[0]); ferr == nil {
				for i, fd := range fds {
					if i == 0 {
						file = os.NewFile(uintptr(fd), "egress-log")
					} else {
						syscall.Close(fd)
					}
				}
			}
		}
	}
	data := buf[:n]
	if err == nil {
		rest, rerr := io.ReadAll(io.LimitReader(conn, maxRequest))
		if rerr != nil {
			return req, file, fmt.Errorf("read request: %w", rerr)
		}
		data = append(data, rest...)
	}
	if len(data) > maxRequest {
		return req, file, errors.New("request too large")
	}
	if err := json.Unmarshal(bytes.TrimSpace(data), &req); err != nil {
		return req, file, fmt.Errorf("bad request: %w", err)
	}
	return req, file, nil
}

func (h *hub) identities() []string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]string, 0, len(h.bottles))
	for id := range h.bottles {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

func (h *hub) do(req Request, file *os.File) (Reply, error) {
	if req.Op != CmdList {
		if err := checkIdentity("identity", req.Identity); err != nil {
			if file != nil {
				file.Close()
			}
			return Reply{}, err
		}
	}
	switch req.Op {
	case CmdAdd:
		return h.add(req, file)
	case CmdForget:
		return h.forget(req.Identity)
	case CmdRules:
		h.mu.RLock()
		s := h.bottles[req.Identity]
		h.mu.RUnlock()
		if s == nil {
			return Reply{}, fmt.Errorf("bottle %s is not served here", req.Identity)
		}
		rs, err := egress.ParseRulesFile(req.Rules, req.Identity)
		if err != nil {
			return Reply{}, fmt.Errorf("rules: %w", err)
		}
		s.proxy.SetRules(rs)
		h.log.Info("egress rules replaced", "identity", req.Identity, "rules", rs.Len())
		return Reply{}, nil
	case CmdList:
		return Reply{}, nil
	case CmdRevoke:
		h.mu.RLock()
		s := h.bottles[req.Identity]
		h.mu.RUnlock()
		if s == nil {
			return Reply{}, fmt.Errorf("bottle %s is not served here", req.Identity)
		}
		if !s.proxy.Revoke(req.Credential) {
			return Reply{}, fmt.Errorf("%s %q: %s", ErrNoCredential, req.Credential, req.Identity)
		}
		h.log.Info("credential revoked", "identity", req.Identity, "credential", req.Credential)
		return Reply{}, nil
	}
	if file != nil {
		file.Close()
	}
	return Reply{}, fmt.Errorf("unknown request %q", req.Op)
}

// add starts serving a bottle: its listener is bound when add returns.
func (h *hub) add(req Request, file *os.File) (rep Reply, err error) {
	defer func() {
		if err != nil && file != nil {
			file.Close()
		}
	}()
	// Listen may offer several addresses (the networks of the backend's
	// pool): the first that serves no bottle is taken, here, under the
	// lock, so that two starts never take one network.
	var offers []netip.AddrPort
	for _, a := range strings.Split(req.Listen, ",") {
		ap, err := netip.ParseAddrPort(a)
		if err != nil || !ap.Addr().Is4() {
			return rep, fmt.Errorf("listen %q: want IPv4 addresses and ports", req.Listen)
		}
		offers = append(offers, ap)
	}
	rules, err := egress.ParseRulesFile(req.Rules, req.Identity)
	if err != nil {
		return rep, fmt.Errorf("rules: %w", err)
	}
	if req.Log && file == nil {
		return rep, errors.New("the egress log did not come with the request")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.bottles[req.Identity]; ok {
		return rep, fmt.Errorf("bottle %s is served already", req.Identity)
	}
	var (
		ap     netip.AddrPort
		dev    string
		subnet netip.Prefix
		why    error
	)
offer:
	for _, o := range offers {
		d, sn, err := interfaceOf(o.Addr())
		if err != nil {
			why = err
			continue
		}
		for _, s := range h.bottles {
			if s.subnet.Overlaps(sn) {
				why = fmt.Errorf("%s is bottle %s's network", sn, s.identity)
				continue offer
			}
		}
		ap, dev, subnet = o, d, sn
		break
	}
	if dev == "" {
		return rep, fmt.Errorf("none of %s is free: %w", req.Listen, why)
	}
	events, size := h.stdout, int64(0)
	if file != nil {
		if fi, err := file.Stat(); err == nil {
			if !fi.Mode().IsRegular() {
				return rep, errors.New("the egress log is not a regular file")
			}
			size = fi.Size()
		}
		events = egress.NewEventLog(file)
	}
	log := h.log.With("identity", req.Identity)
	cfg := egress.Config{
		Identity:     req.Identity,
		Rules:        rules,
		Events:       events,
		Log:          log,
		AllowOwnHost: h.allowOwnHost,
		LogSize:      size,
		Reserved:     h.reserved,
	}
	var in AddInput
	if err := json.Unmarshal(req.Rules, &in); err != nil {
		return rep, fmt.Errorf("add: %w", err)
	}
	if err := in.tlsConfig(&cfg); err != nil {
		return rep, err
	}
	proxy, err := egress.New(cfg)
	if err != nil {
		return rep, err
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptString(int(fd), syscall.SOL_SOCKET, syscall.SO_BINDTODEVICE, dev)
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("bind to interface %s: %w", dev, serr)
		}
		// Only the speed of the bottle's leg depends on it.
		if err := egress.ListenLocal("", "", rc); err != nil {
			log.Warn("egress listener keeps the host's congestion control", "error", err)
		}
		return nil
	}}
	ln, err := lc.Listen(h.ctx, "tcp4", ap.String())
	if err != nil {
		return rep, fmt.Errorf("listen on %s (%s): %w", ap, dev, err)
	}
	ctx, cancel := context.WithCancel(h.ctx)
	s := &served{identity: req.Identity, addr: ap, subnet: subnet, proxy: proxy, ln: ln, cancel: cancel, done: make(chan struct{})}
	h.bottles[req.Identity] = s
	go func() {
		defer close(s.done)
		if err := proxy.Serve(ctx, ln); err != nil && ctx.Err() == nil {
			log.Error("egress proxy of a bottle stopped", "error", err)
		}
		if file != nil {
			file.Close()
		}
	}()
	log.Info("egress proxy listening", "addr", ap.String(), "device", dev, "rules", rules.Len())
	served := make([]string, 0, len(h.bottles))
	for id := range h.bottles {
		served = append(served, id)
	}
	sort.Strings(served)
	return Reply{Addr: ap.String(), Device: dev, Bottles: served}, nil
}

// forget stops serving a bottle: its listener is closed when forget
// returns, and its connections a moment later.
func (h *hub) forget(identity string) (Reply, error) {
	h.mu.Lock()
	s := h.bottles[identity]
	delete(h.bottles, identity)
	h.mu.Unlock()
	if s == nil {
		return Reply{}, nil // gone already: a retried stop
	}
	s.cancel()
	s.ln.Close()
	s.proxy.Forget()
	select {
	case <-s.done:
	case <-time.After(forgetWait):
	}
	h.log.Info("egress proxy forgot a bottle", "identity", identity)
	return Reply{Forgot: true}, nil
}

// reserved keeps every bottle's internal network out of every rule: the
// shared proxy is on all of them, and must lead no bottle into another.
func (h *hub) reserved(a netip.Addr) (string, bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, s := range h.bottles {
		if s.subnet.Contains(a) {
			return "on a bottle's internal network", true
		}
	}
	return "", false
}

// interfaceOf finds the interface that holds a, and its subnet.
func interfaceOf(a netip.Addr) (string, netip.Prefix, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return "", netip.Prefix{}, fmt.Errorf("interfaces: %w", err)
	}
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, ia := range addrs {
			n, ok := ia.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(n.IP)
			if !ok || ip.Unmap() != a {
				continue
			}
			ones, _ := n.Mask.Size()
			return ifc.Name, netip.PrefixFrom(a, ones).Masked(), nil
		}
	}
	return "", netip.Prefix{}, fmt.Errorf("no interface holds %s (is the proxy on the bottle's network?)", a)
}
