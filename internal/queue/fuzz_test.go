package queue

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode"
)

// FuzzParseRequest feeds the untrusted-request parser arbitrary bytes. It must
// never panic, and whatever it accepts must satisfy every promise the host
// relies on and survive a round trip unchanged. Seeds: testdata/fuzz.
func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(`{"kind":"egress","reason":"r","host":"a.b:443"}`), testID)
	f.Add([]byte(`{"kind":"capability","reason":"r","run":"apt-get install -y ripgrep"}`), testID)
	f.Fuzz(func(t *testing.T, data []byte, identity string) {
		r, err := ParseRequest(data, identity)
		if err != nil {
			if r != (Request{}) {
				t.Fatalf("error %v with a non-zero request %+v", err, r)
			}
			return
		}
		if len(data) > MaxRequestSize {
			t.Fatalf("accepted %d bytes", len(data))
		}
		if r.Identity != identity || !ValidIdentity(identity) {
			t.Fatalf("identity %q from inbox %q", r.Identity, identity)
		}
		if r.ID != "" || r.Status != StatusPending || r.DecidedBy != "" || r.DecidedAt != nil || r.ClientToken != "" {
			t.Fatalf("parser set host-only fields: %+v", r)
		}
		if strings.TrimSpace(r.Reason) == "" || len(r.Reason) > MaxReasonLen {
			t.Fatalf("bad reason accepted: %q", r.Reason)
		}
		for _, s := range []string{r.Reason, r.Dockerfile, r.Run, r.Host} {
			for _, c := range s {
				if c != '\n' && c != '\t' && (unicode.IsControl(c) || isBidi(c)) {
					t.Fatalf("control character %U accepted in %q", c, s)
				}
			}
		}
		switch r.Kind {
		case KindCapability:
			if (r.Run == "") == (r.Dockerfile == "") || r.Host != "" || strings.Contains(r.Run, "\n") {
				t.Fatalf("bad capability accepted: %+v", r)
			}
		case KindEgress:
			if h, err := NormalizeHost(r.Host); err != nil || h != r.Host || r.Run != "" || r.Dockerfile != "" {
				t.Fatalf("bad egress accepted: %+v (%v)", r, err)
			}
		default:
			t.Fatalf("kind %q accepted", r.Kind)
		}
		// Round trip: what the helper would write for r parses back to r.
		again, err := json.Marshal(Submission{Identity: r.Identity, Kind: r.Kind, Reason: r.Reason, Dockerfile: r.Dockerfile, Run: r.Run, Host: r.Host})
		if err != nil {
			t.Fatal(err)
		}
		r2, err := ParseRequest(again, identity)
		if err != nil || r2 != r {
			t.Fatalf("round trip: %+v, %v; want %+v", r2, err, r)
		}
	})
}
