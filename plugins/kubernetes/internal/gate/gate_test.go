package gate

import (
	"bytes"
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// lateStream is an output stream that an attach joins late: what is
// written before join goes to nobody, as in a runtime that copies stdin
// before it has joined stdout.
type lateStream struct {
	mu     sync.Mutex
	joined bool
	to     io.Writer
}

func (l *lateStream) join() { l.mu.Lock(); l.joined = true; l.mu.Unlock() }

func (l *lateStream) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.joined {
		return len(p), nil
	}
	return l.to.Write(p)
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestNoOutputIsLostToALateJoin(t *testing.T) {
	var gotOut, gotErr syncBuf
	fo, fe := NewFilter(&gotOut), NewFilter(&gotErr)
	out, errOut := &lateStream{to: fo}, &lateStream{to: fe}
	inR, inW := io.Pipe()
	waited := make(chan error, 1)
	go func() {
		err := Wait(inR, out, errOut)
		if err == nil {
			// The agent's first output, the instant the gate opens.
			_, _ = io.WriteString(out, "first line\n")
			_, _ = io.WriteString(errOut, "first error\n")
		}
		waited <- err
	}()
	if _, err := io.WriteString(inW, Start); err != nil {
		t.Fatal(err)
	}
	// The first Ready goes to nobody; the streams join later, stderr last.
	time.Sleep(30 * time.Millisecond)
	out.join()
	select {
	case <-fo.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("no Ready on stdout after it joined")
	}
	select {
	case <-fe.Ready():
		t.Fatal("stderr saw Ready before it joined")
	default:
	}
	time.Sleep(30 * time.Millisecond)
	errOut.join()
	select {
	case <-fe.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("no Ready on stderr after it joined")
	}
	if _, err := io.WriteString(inW, Go); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	<-fo.Opened()
	<-fe.Opened()
	if gotOut.String() != "first line\n" || gotErr.String() != "first error\n" {
		t.Fatalf("the agent's output came through as %q and %q", gotOut.String(), gotErr.String())
	}
}

func TestAStartAgainIsANewAttach(t *testing.T) {
	inR, inW := io.Pipe()
	var raw syncBuf
	waited := make(chan error, 1)
	go func() { waited <- Wait(inR, &raw) }()
	// An attach that died after Start; the next one sends Start again.
	go func() { _, _ = io.WriteString(inW, Start+Start+Go+"agent input") }()
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	// Wait took no byte beyond Go: the agent's input is still there.
	rest := make([]byte, len("agent input"))
	if _, err := io.ReadFull(inR, rest); err != nil || string(rest) != "agent input" {
		t.Fatalf("after the gate: %q, %v", rest, err)
	}
	if !strings.HasSuffix(raw.String(), Opened) || !strings.Contains(raw.String(), Ready) {
		t.Fatalf("gate wrote %q", raw.String())
	}
}

func TestBadTokens(t *testing.T) {
	for _, in := range []string{"", "hello\n", Start + "hello\n", Start, strings.Repeat("x", 200)} {
		if err := Wait(strings.NewReader(in), io.Discard); err == nil {
			t.Errorf("Wait(%q) opened the gate", in)
		}
	}
}

func TestFilterHoldsMarkersSplitAnywhere(t *testing.T) {
	stream := "ady>" + Ready + Ready + Opened + "agent says hi" // cut at the front, as a late join sees it
	for step := 1; step <= len(stream); step++ {
		var got bytes.Buffer
		f := NewFilter(&got)
		for i := 0; i < len(stream); i += step {
			if _, err := f.Write([]byte(stream[i:min(i+step, len(stream))])); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case <-f.Ready():
		default:
			t.Fatalf("step %d: Ready not seen", step)
		}
		select {
		case <-f.Opened():
		default:
			t.Fatalf("step %d: Opened not seen", step)
		}
		if got.String() != "agent says hi" {
			t.Fatalf("step %d: passed %q", step, got.String())
		}
	}
}

func TestEndFilterTakesEndOutSplitAnywhere(t *testing.T) {
	stream := "last words <b\n" + End
	for step := 1; step <= len(stream); step++ {
		var got syncBuf
		f := NewEndFilter(&got)
		for i := 0; i < len(stream); i += step {
			if _, err := f.Write([]byte(stream[i:min(i+step, len(stream))])); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case <-f.Ended():
		default:
			t.Fatalf("step %d: End not seen", step)
		}
		f.Close()
		if got.String() != "last words <b\n" {
			t.Fatalf("step %d: passed %q", step, got.String())
		}
	}
}

func TestEndFilterShowsAPromptThatLooksLikeEnd(t *testing.T) {
	var got syncBuf
	f := NewEndFilter(&got)
	// A prompt that ends like the start of End, and nothing after it.
	if _, err := f.Write([]byte("continue? <bot")); err != nil {
		t.Fatal(err)
	}
	if got.String() != "continue? " {
		t.Fatalf("passed at once %q, want the prompt less what could be End", got.String())
	}
	deadline := time.Now().Add(5 * time.Second)
	for got.String() != "continue? <bot" && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got.String() != "continue? <bot" {
		t.Fatalf("the held prompt never showed: %q", got.String())
	}
	select {
	case <-f.Ended():
		t.Fatal("a prompt was taken for End")
	default:
	}
}

func TestHoldWaitsForRelease(t *testing.T) {
	var out syncBuf
	released := make(chan struct{})
	held := make(chan struct{})
	go func() { Hold(released, time.Minute, &out); close(held) }()
	time.Sleep(20 * time.Millisecond)
	select {
	case <-held:
		t.Fatal("Hold returned before it was released")
	default:
	}
	close(released)
	select {
	case <-held:
	case <-time.After(5 * time.Second):
		t.Fatal("Hold did not return once released")
	}
	if out.String() != End {
		t.Fatalf("Hold wrote %q", out.String())
	}
	began := time.Now()
	Hold(make(chan struct{}), 10*time.Millisecond, io.Discard)
	if time.Since(began) > 5*time.Second {
		t.Fatal("Hold with no attach did not time out")
	}
}

func TestFiltersWaitForEveryStream(t *testing.T) {
	fs := Filters{NewFilter(io.Discard), NewFilter(io.Discard)}
	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, _ = fs[0].Write([]byte(Ready + Opened))
	if err := fs.WaitReady(short); err == nil {
		t.Fatal("WaitReady returned with one stream of two ready")
	}
	if fs.Opened() {
		t.Fatal("Opened with one stream of two opened")
	}
	_, _ = fs[1].Write([]byte(Ready + Opened))
	if err := fs.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !fs.Opened() {
		t.Fatal("not Opened with every stream opened")
	}
	eo, ee := NewEndFilter(io.Discard), NewEndFilter(io.Discard)
	_, _ = eo.Write([]byte(End))
	short2, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if WaitEnded(short2, eo, ee) == nil {
		t.Fatal("WaitEnded returned with one stream of two ended")
	}
	_, _ = ee.Write([]byte(End))
	if err := WaitEnded(context.Background(), eo, ee); err != nil {
		t.Fatal(err)
	}
}
