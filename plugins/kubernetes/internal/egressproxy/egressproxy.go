// Package egressproxy is a Kubernetes bottle's egress proxy: one pod per
// bottle runs it (kube-init egress-proxy serve), the agent's pod reaches it
// and nothing else (package podnet). It is plugins/internal/egress's Proxy
// with what a cluster needs around it:
//
//   - it answers only the agent's pod (its address, set once the agent's pod
//     has one; nothing before): other pods of the cluster cannot use the
//     bottle's allowlist;
//   - its events wait in memory, bounded (MaxPending), until the plugin
//     collects them through the API server (exec of `collect`, then `ack`
//     once they are in the operator's Spec.EgressLog); an allowed
//     connection whose event does not fit is refused, so nothing allowed
//     goes unaudited while no one collects;
//   - it is controlled through an abstract unix socket, which exists only in
//     the proxy pod's network namespace: the agent, in another pod, cannot
//     reach it, so it cannot change the rules. `kube-init egress-proxy
//     setup|rules|collect|ack`, run in the proxy pod through exec, speaks
//     to it and returns once the proxy has done it.
package egressproxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bot-bottle/bot-bottle/plugins/internal/egress"
	"github.com/bot-bottle/bot-bottle/sdk/egressrule"
)

// Port is where the proxy listens in its pod.
const Port = 3128

// MaxPending bounds the events waiting for collection.
const MaxPending = 8 << 20

// MaxBatch bounds one collect's answer (an exec's output).
const MaxBatch = 1 << 20

// socketName is the control socket's abstract name ("@" + it).
const socketName = "bot-bottle-kube-egress"

// Control operations.
const (
	OpSetup   = "setup"   // peer and rules
	OpRules   = "rules"   // rules
	OpCollect = "collect" // the pending events, oldest first
	OpAck     = "ack"     // drop the events up to Seq
)

// Request is one control request.
type Request struct {
	Op    string          `json:"op"`
	Peer  string          `json:"peer,omitempty"`
	Rules json.RawMessage `json:"rules,omitempty"` // an egress rules file
	Seq   uint64          `json:"seq,omitempty"`
}

// Reply is its answer.
type Reply struct {
	Error string `json:"error,omitempty"`
	// Seq is the sequence number of the last event in Events (collect).
	Seq    uint64 `json:"seq,omitempty"`
	Events string `json:"events,omitempty"` // JSON lines
	// Pending is how many bytes of events wait after this batch.
	Pending int `json:"pending,omitempty"`
}

// CheckRules refuses what this proxy cannot enforce: a rule about requests
// (methods, paths) needs a proxy that terminates the bottle's TLS with its
// own CA, and this one does not.
func CheckRules(rs *egressrule.Rules) error {
	for _, r := range rs.List() {
		if r.Requests() {
			return fmt.Errorf("rule %s is about requests (methods or paths), which the kubernetes backend's proxy cannot read (it does not terminate TLS); allow the host[:port] instead, or use the docker backend", r)
		}
	}
	return nil
}

// Pending is the events waiting for collection, each one JSON line, with
// sequence numbers so that a collector acknowledges exactly what it wrote.
type Pending struct {
	mu    sync.Mutex
	lines [][]byte
	first uint64 // sequence number of lines[0]
	size  int
	max   int
}

// NewPending holds up to max bytes.
func NewPending(max int) *Pending { return &Pending{first: 1, max: max} }

// ErrFull is Write's error when the events do not fit.
var ErrFull = errors.New("the bottle's egress audit is full until the plugin collects it (bot-bottle list)")

// Write takes one JSON line (egress.EventLog writes one per call).
// A Pending of max 0 keeps nothing: a bottle with no audit file.
func (p *Pending) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.max == 0 {
		return len(b), nil
	}
	if p.size+len(b) > p.max {
		return 0, ErrFull
	}
	p.lines = append(p.lines, append([]byte(nil), b...))
	p.size += len(b)
	return len(b), nil
}

// Batch returns up to max bytes of the oldest events and the sequence
// number of the last one (0: none), and how many bytes wait after it.
func (p *Pending) Batch(max int) ([]byte, uint64, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []byte
	n := 0
	for _, l := range p.lines {
		if len(out)+len(l) > max && n > 0 {
			break
		}
		out = append(out, l...)
		n++
	}
	if n == 0 {
		return nil, 0, 0
	}
	return out, p.first + uint64(n) - 1, p.size - len(out)
}

// Ack drops the events up to seq.
func (p *Pending) Ack(seq uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.lines) > 0 && p.first <= seq {
		p.size -= len(p.lines[0])
		p.lines = p.lines[1:]
		p.first++
	}
}

// Server is a running proxy and its control.
type Server struct {
	Proxy   *egress.Proxy
	Pending *Pending
	log     *slog.Logger
	peer    atomic.Pointer[netip.Addr]
	// identity is the bottle's; a rules file for another is refused.
	identity string
}

// Serve runs the proxy for identity on ln, with no rules and no peer until
// setup, and its control socket, until ctx is done. Without audit its
// events are not kept (the bottle has no audit file to collect them into).
func Serve(ctx context.Context, identity string, audit bool, ln net.Listener, log *slog.Logger) error {
	s, err := New(identity, log)
	if !audit && err == nil {
		s.Pending.max = 0
	}
	if err != nil {
		return err
	}
	ctl, err := net.Listen("unix", "@"+socketName)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	defer ctl.Close()
	go s.control(ctx, ctl)
	return s.Proxy.Serve(ctx, s.filter(ln))
}

// New returns a server with an empty allowlist and no peer.
func New(identity string, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{Pending: NewPending(MaxPending), log: log, identity: identity}
	rules, err := egressrule.ParseRules(nil)
	if err != nil {
		return nil, err
	}
	s.Proxy, err = egress.New(egress.Config{Identity: identity, Rules: rules, Events: egress.NewEventLog(s.Pending), Log: log})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Do carries out one control request.
func (s *Server) Do(req Request) Reply {
	switch req.Op {
	case OpSetup, OpRules:
		rs, err := egress.ParseRulesFile(req.Rules, s.identity)
		if err == nil {
			err = CheckRules(rs)
		}
		if err != nil {
			return Reply{Error: err.Error()}
		}
		if req.Op == OpSetup {
			a, err := netip.ParseAddr(req.Peer)
			if err != nil {
				return Reply{Error: fmt.Sprintf("peer %q: %v", req.Peer, err)}
			}
			a = a.Unmap()
			s.peer.Store(&a)
		}
		s.Proxy.SetRules(rs)
		s.log.Info("egress rules set", "rules", rs.Len())
		return Reply{}
	case OpCollect:
		b, seq, left := s.Pending.Batch(MaxBatch)
		return Reply{Seq: seq, Events: string(b), Pending: left}
	case OpAck:
		s.Pending.Ack(req.Seq)
		return Reply{}
	}
	return Reply{Error: fmt.Sprintf("unknown operation %q", req.Op)}
}

func (s *Server) control(ctx context.Context, ln net.Listener) {
	go func() { <-ctx.Done(); ln.Close() }()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			var req Request
			r := bufio.NewReader(io.LimitReader(c, egress.MaxRulesFileSize+4096))
			if err := json.NewDecoder(r).Decode(&req); err != nil {
				_ = json.NewEncoder(c).Encode(Reply{Error: "bad request: " + err.Error()})
				return
			}
			_ = json.NewEncoder(c).Encode(s.Do(req))
		}()
	}
}

// filter admits only the peer's connections.
func (s *Server) filter(ln net.Listener) net.Listener { return &peerListener{Listener: ln, s: s} }

type peerListener struct {
	net.Listener
	s *Server
}

func (l *peerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.s.admits(c.RemoteAddr()) {
			return c, nil
		}
		c.Close()
	}
}

func (s *Server) admits(a net.Addr) bool {
	peer := s.peer.Load()
	if peer == nil {
		return false
	}
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	return ok && ip.Unmap() == *peer
}

// Call sends req to the proxy's control socket (in this network namespace)
// and returns its reply; a reply with an error is an error.
func Call(ctx context.Context, req Request) (Reply, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", "@"+socketName)
	if err != nil {
		return Reply{}, fmt.Errorf("the egress proxy's control socket: %w", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return Reply{}, err
	}
	var rep Reply
	if err := json.NewDecoder(bufio.NewReader(c)).Decode(&rep); err != nil {
		return Reply{}, fmt.Errorf("the egress proxy's answer: %w", err)
	}
	if rep.Error != "" {
		return rep, errors.New(rep.Error)
	}
	return rep, nil
}
