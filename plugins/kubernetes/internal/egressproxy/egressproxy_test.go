package egressproxy

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/plugins/internal/egress"
)

func TestPendingBatchAckFull(t *testing.T) {
	p := NewPending(30)
	for _, l := range []string{"aaaaaaaaa\n", "bbbbbbbbb\n", "ccccccccc\n"} {
		if _, err := p.Write([]byte(l)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.Write([]byte("d\n")); !errors.Is(err, ErrFull) {
		t.Fatalf("a write past the bound: %v, want ErrFull", err)
	}
	b, seq, left := p.Batch(20)
	if string(b) != "aaaaaaaaa\nbbbbbbbbb\n" || seq != 2 || left != 10 {
		t.Fatalf("batch = %q seq %d left %d", b, seq, left)
	}
	// Not acknowledged: the same batch again (a collector that died).
	if b2, seq2, _ := p.Batch(20); string(b2) != string(b) || seq2 != seq {
		t.Fatalf("an unacknowledged batch changed: %q %d", b2, seq2)
	}
	p.Ack(seq)
	if _, err := p.Write([]byte("d\n")); err != nil {
		t.Fatalf("after an ack there is room: %v", err)
	}
	b, seq, left = p.Batch(MaxBatch)
	if string(b) != "ccccccccc\nd\n" || seq != 4 || left != 0 {
		t.Fatalf("batch after ack = %q seq %d left %d", b, seq, left)
	}
	p.Ack(2) // an old ack drops nothing more
	if _, seq2, _ := p.Batch(MaxBatch); seq2 != 4 {
		t.Fatalf("an old ack dropped events: seq %d", seq2)
	}
	p.Ack(4)
	if b, seq, _ := p.Batch(MaxBatch); b != nil || seq != 0 {
		t.Fatalf("all acknowledged, still %q %d", b, seq)
	}
	// One event larger than a batch still goes, alone.
	big := NewPending(100)
	_, _ = big.Write([]byte(strings.Repeat("x", 50) + "\n"))
	if b, seq, _ := big.Batch(10); len(b) != 51 || seq != 1 {
		t.Fatalf("a large event: %d bytes seq %d", len(b), seq)
	}
}

// TestPeerOnly: the proxy answers nobody before setup and then only its
// peer; the rules come with setup and are replaced by rules; its events
// wait until collected.
func TestPeerOnly(t *testing.T) {
	s, err := New("bottle-aaaaa", nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = s.Proxy.Serve(ctx, s.filter(ln)) }()
	addr := ln.Addr().String()

	if status, _ := ask(t, addr, "blocked.invalid:443"); status != 0 {
		t.Fatalf("before setup the proxy answered %d; it must answer no one", status)
	}
	// A rule about requests needs TLS termination, which this proxy does
	// not do: refused, and the setup leaves no peer.
	reqRules, err := egress.EncodeRulesFile("bottle-aaaaa", []string{"GET allowed.invalid/repos/"})
	if err != nil {
		t.Fatal(err)
	}
	if rep := s.Do(Request{Op: OpSetup, Peer: "127.0.0.1", Rules: reqRules}); !strings.Contains(rep.Error, "about requests") {
		t.Fatalf("a request rule: %+v, want it refused", rep)
	}
	if status, _ := ask(t, addr, "blocked.invalid:443"); status != 0 {
		t.Fatalf("a refused setup set the peer (%d)", status)
	}
	rules, _ := egress.EncodeRulesFile("bottle-aaaaa", []string{"allowed.invalid:443"})
	if rep := s.Do(Request{Op: OpSetup, Peer: "10.1.2.3", Rules: rules}); rep.Error != "" {
		t.Fatal(rep.Error)
	}
	if status, _ := ask(t, addr, "blocked.invalid:443"); status != 0 {
		t.Fatalf("with another peer the proxy answered 127.0.0.1 (%d)", status)
	}
	if rep := s.Do(Request{Op: OpSetup, Peer: "127.0.0.1", Rules: rules}); rep.Error != "" {
		t.Fatal(rep.Error)
	}
	status, reason := ask(t, addr, "blocked.invalid:443")
	if status != http.StatusForbidden || !strings.Contains(reason, "not in the allowlist") {
		t.Fatalf("a host not allowed: %d %q, want 403 with the reason", status, reason)
	}
	other, _ := egress.EncodeRulesFile("bottle-bbbbb", []string{"blocked.invalid:443"})
	if rep := s.Do(Request{Op: OpRules, Rules: other}); rep.Error == "" {
		t.Fatal("rules for another bottle were accepted")
	}
	rep := s.Do(Request{Op: OpCollect})
	if rep.Seq == 0 || !strings.Contains(rep.Events, `"host":"blocked.invalid"`) || !strings.Contains(rep.Events, `"allowed":false`) {
		t.Fatalf("the refusal is not in the pending audit: %+v", rep)
	}
	s.Do(Request{Op: OpAck, Seq: rep.Seq})
	if rep := s.Do(Request{Op: OpCollect}); rep.Seq != 0 {
		t.Fatalf("acknowledged events came again: %+v", rep)
	}
	if rep := s.Do(Request{Op: "nonsense"}); rep.Error == "" {
		t.Fatal("an unknown operation was accepted")
	}
}

// ask sends CONNECT host through the proxy and returns the status and the
// refusal header; 0 when the connection was closed unanswered.
func ask(t *testing.T, addr, host string) (int, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("CONNECT " + host + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n")); err != nil {
		return 0, ""
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	return resp.StatusCode, resp.Header.Get(egress.RefusedHeader)
}

func TestPendingWithoutAudit(t *testing.T) {
	p := NewPending(0)
	for range 3 {
		if _, err := p.Write([]byte("event\n")); err != nil {
			t.Fatalf("a proxy with no audit file refused an event: %v", err)
		}
	}
	if b, seq, _ := p.Batch(MaxBatch); b != nil || seq != 0 {
		t.Fatalf("a proxy with no audit file kept %q", b)
	}
}
