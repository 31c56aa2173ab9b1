package term

import (
	"io"
	"strings"
	"testing"
)

func TestDetachReader(t *testing.T) {
	cases := []struct {
		in, want string
		detached bool
	}{
		{"hello", "hello", false},
		{"ab\x10\x11cd", "ab", true},
		{"a\x10b", "a\x10b", false},
		{"\x10\x10\x11x", "\x10", true},
		{"end\x10", "end\x10", false},
	}
	for _, c := range cases {
		detached := false
		r := &DetachReader{R: &oneByte{strings.NewReader(c.in)}, OnDetach: func() { detached = true }}
		got, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("%q: %v", c.in, err)
		}
		if string(got) != c.want || detached != c.detached {
			t.Errorf("%q: got %q detached=%v, want %q detached=%v", c.in, got, detached, c.want, c.detached)
		}
	}
}

// oneByte splits reads so the sequence straddles read boundaries.
type oneByte struct{ r io.Reader }

func (o *oneByte) Read(p []byte) (int, error) { return o.r.Read(p[:1]) }
