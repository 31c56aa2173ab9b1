package queue

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const otherID = "b-bbbbb"

// flood submits n egress requests with tokens from start on.
func flood(t testing.TB, dir string, start, n int) {
	t.Helper()
	for i := start; i < start+n; i++ {
		name := filepath.Join(dir, "inbox", token(i)+".json")
		if err := os.WriteFile(name, []byte(`{"kind":"egress","reason":"r","host":"x.test"}`), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func inboxLen(t testing.TB, dir string) int {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "inbox"))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// Issue 18 acceptance 4 (queue side): 2,000 requests from one bottle, the
// cap applies and the agent reads why; another bottle is served meanwhile,
// with the work of each call bounded.
func TestPendingCapPerBottle(t *testing.T) {
	q, home, dir := newQueue(t)
	const n = 2000
	flood(t, dir, 0, n)
	odir, err := q.Dir(otherID)
	must(t, err)
	submit(t, odir, token(9999)+".json", `{"kind":"egress","reason":"r","host":"y.test"}`)

	// One call: the other bottle's request is in, and the flooding bottle
	// cost at most maxPerIngest files of work.
	rs, _, err := q.IngestAll()
	must(t, err)
	if took := n - inboxLen(t, dir); took != MaxPending+maxRefusedPerIngest {
		t.Fatalf("one IngestAll took %d of the flood, want %d", took, MaxPending+maxRefusedPerIngest)
	}
	if c := PendingCount(rs); c[otherID] != 1 {
		t.Fatalf("the other bottle's request was not ingested in the same call: %v", c)
	}
	for calls := 1; inboxLen(t, dir) > 0; calls++ {
		if calls > n/maxRefusedPerIngest+1 {
			t.Fatal("the flood is not drained in bounded calls")
		}
		_, _, err := q.Ingest(testID)
		must(t, err)
	}
	all, err := q.List()
	must(t, err)
	if c := PendingCount(all); c[testID] != MaxPending || c[otherID] != 1 {
		t.Fatalf("pending by bottle %v, want %d for %s and 1 for %s", c, MaxPending, testID, otherID)
	}
	refused := 0
	for i := range n {
		rc := readReceipt(t, dir, token(i))
		if rc.Status == StatusRefused {
			refused++
			if !strings.Contains(rc.DecisionReason, fmt.Sprintf("already has %d pending requests", MaxPending)) {
				t.Fatalf("refusal %d does not say why: %q", i, rc.DecisionReason)
			}
		}
	}
	if refused != n-MaxPending {
		t.Fatalf("%d refused, want %d", refused, n-MaxPending)
	}
	// A decision frees a place.
	var first Request
	for _, r := range all {
		if r.Identity == testID {
			first = r
			break
		}
	}
	if _, err := q.Decide(first.ID, false, "no", "user:test"); err != nil {
		t.Fatal(err)
	}
	flood(t, dir, n, 2)
	rs, refusedErrs, err := q.Ingest(testID)
	if err != nil || len(rs) != 1 || len(refusedErrs) != 1 || !IsTooManyPending(refusedErrs[0]) {
		t.Fatalf("after one decision: %d in, refused %v, %v; want 1 in and 1 over the cap", len(rs), refusedErrs, err)
	}
	_ = home
}

// BenchmarkRequestsDuringFlood is one `bot-bottle requests` (ingest every
// inbox, list everything) while one bottle keeps its inbox full of 2,000
// requests and sits at its cap. The target is well under a second per op.
func BenchmarkRequestsDuringFlood(b *testing.B) {
	home := b.TempDir()
	q := Open(home)
	dir, err := q.Dir(testID)
	if err != nil {
		b.Fatal(err)
	}
	odir, _ := q.Dir(otherID)
	next := 0
	flood(b, dir, next, 2000)
	next += 2000
	for b.Loop() {
		b.StopTimer()
		if k := 2000 - inboxLen(b, dir); k > 0 {
			flood(b, dir, next, k)
			next += k
		}
		if err := os.WriteFile(filepath.Join(odir, "inbox", fmt.Sprintf("o%015d.json", next)), []byte(`{"kind":"egress","reason":"r","host":"y.test"}`), 0o644); err != nil {
			b.Fatal(err)
		}
		next++
		b.StartTimer()
		if _, _, err := q.IngestAll(); err != nil {
			b.Fatal(err)
		}
		if _, err := q.List(); err != nil {
			b.Fatal(err)
		}
	}
	if per := b.Elapsed() / time.Duration(b.N); per > time.Second {
		b.Errorf("requests took %s per call during a flood, want under 1s", per)
	}
}
