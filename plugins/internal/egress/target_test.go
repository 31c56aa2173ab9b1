package egress

import (
	"strings"
	"testing"
)

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		in   string
		def  uint16
		want string
		err  string
	}{
		{"example.com:443", 0, "example.com:443", ""},
		{"Example.COM.:8443", 0, "example.com:8443", ""},
		{"example.com", 80, "example.com:80", ""},
		{"example.com", 0, "", "a port is required"},
		{"[::1]:443", 0, "[::1]:443", ""},
		{"[::1]", 0, "", "a port is required"},
		{"127.0.0.1:80", 0, "127.0.0.1:80", ""},
		{"*.example.com:443", 0, "", "wildcard is not a host"},
		{"example.com:99999", 0, "", "port"},
		{strings.Repeat("x", 5000) + ":443", 0, "", "more than a DNS name"},
	} {
		got, err := parseTarget(tc.in, tc.def)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("parseTarget(%.40q) err = %v, want %q", tc.in, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("parseTarget(%q): %v", tc.in, err)
		case tc.err == "" && got.String() != tc.want:
			t.Errorf("parseTarget(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
