package egress

import (
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// A placeholder in a request body is found wherever the reads split it,
// with reads shorter than a placeholder too, and each credential is
// reported once.
func TestBodyScannerFindsPlaceholdersAcrossReads(t *testing.T) {
	long := &credential{Credential: Credential{Name: "long", Placeholder: "BB_PLACEHOLDER_LONG_0123456789"}}
	short := &credential{Credential: Credential{Name: "short", Placeholder: "BB_S"}}
	body := strings.Repeat("x", 50) + long.Placeholder + strings.Repeat("y", 7) + short.Placeholder + "z" + long.Placeholder
	for size := 1; size <= len(body); size++ {
		found := map[string]int{}
		b := newBodyScanner(io.NopCloser(&chunked{s: body, n: size}), []*credential{long, short}, func(c *credential) { found[c.Name]++ })
		if _, err := io.Copy(io.Discard, b); err != nil {
			t.Fatal(err)
		}
		if found["long"] != 1 || found["short"] != 1 {
			t.Fatalf("reads of %d bytes: found %v, want each credential once", size, found)
		}
	}
	// One byte at a time, through iotest's reader.
	found := 0
	b := newBodyScanner(io.NopCloser(iotest.OneByteReader(strings.NewReader("ab"+long.Placeholder[:5]+"-"+long.Placeholder[5:]))), []*credential{long}, func(*credential) { found++ })
	io.Copy(io.Discard, b)
	if found != 0 {
		t.Fatalf("a broken placeholder was reported %d times", found)
	}
}

// chunked reads s n bytes at a time.
type chunked struct {
	s string
	n int
}

func (c *chunked) Read(p []byte) (int, error) {
	if c.s == "" {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), c.n)], c.s)
	c.s = c.s[k:]
	return k, nil
}
