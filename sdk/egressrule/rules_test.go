package egressrule

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParseRule(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"api.example.com", "api.example.com:443"},
		{"API.Example.COM:8443", "api.example.com:8443"},
		{"example.com.", "example.com:443"},
		{"example.com.:80", "example.com:80"},
		{"*.example.com", "*.example.com:443"},
		{"*.Example.com.:443", "*.example.com:443"},
		{"localhost", "localhost:443"},
		{"xn--bcher-kva.example", "xn--bcher-kva.example:443"},
		{"a-b.c-d.e", "a-b.c-d.e:443"},
		{"127.0.0.1", "127.0.0.1:443"},
		{"10.1.2.3:8080", "10.1.2.3:8080"},
		{"[::1]", "[::1]:443"},
		{"[2001:DB8::1]:65535", "[2001:db8::1]:65535"},
		{"[::ffff:127.0.0.1]:80", "127.0.0.1:80"},
		{"host:1", "host:1"},
		{strings.Repeat("a", 63) + ".com", strings.Repeat("a", 63) + ".com:443"},
	} {
		r, err := ParseRule(tc.in)
		if err != nil {
			t.Errorf("ParseRule(%q): %v", tc.in, err)
			continue
		}
		if got := r.String(); got != tc.want {
			t.Errorf("ParseRule(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseRuleErrors(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want: a substring of the error
	}{
		{"", "empty host"},
		{":443", "empty host"},
		{"example.com:", "port"},
		{"example.com:0", "port"},
		{"example.com:65536", "port"},
		{"example.com:0443", "port"},
		{"example.com:https", "port"},
		{"example.com:-1", "port"},
		{"example.com:443:1", "brackets"},
		{"::1", "brackets"},
		{"[::1", "unclosed"},
		{"[::1]443", "want [ipv6]"},
		{"[127.0.0.1]", "not an IPv6"},
		{"[fe80::1%eth0]", "not an IPv6"},
		{"[example.com]", "not an IPv6"},
		{"*", "wildcard needs a suffix"},
		{"*.", "wildcard needs a suffix"},
		{"*.*.example.com", `"*" is only allowed`},
		{"foo*.example.com", `"*" is only allowed`},
		{"a.*.example.com", `"*" is only allowed`},
		{"*.10.0.0.1", "wildcard matches names"},
		{"exa mple.com", "not an HTTP method"},
		{"a.com b.com", "not an HTTP method"},
		{"example.com\n", "characters"},
		{"exämple.com", "characters"},
		{"under_score.com", "letters, digits"},
		{"a..b", "empty label"},
		{".example.com", "empty label"},
		{"example.com..", "empty label"},
		{"-a.com", "starts or ends"},
		{"a-.com", "starts or ends"},
		{strings.Repeat("a", 64) + ".com", "more than 63"},
		{strings.Repeat("a.", 127) + "com", "more than 253"},
		{strings.Repeat("a", 400), "more than a DNS name"},
		{"127.1", "not an IPv4"},
		{"999.1.1.1", "not an IPv4"},
		{"127.000.000.001", "not an IPv4"},
		{"1.2.3", "not an IPv4"},
	} {
		_, err := ParseRule(tc.in)
		if err == nil {
			t.Errorf("ParseRule(%q): no error", tc.in)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseRule(%q) = %v, want it to mention %q", tc.in, err, tc.want)
		}
		if strings.ContainsAny(err.Error(), "\n\r") {
			t.Errorf("ParseRule(%q): error is not one line: %q", tc.in, err)
		}
	}
}

func TestParseRulesNamesTheBadRule(t *testing.T) {
	_, err := ParseRules([]string{"ok.example", "fine.example:80", "bad:port"})
	if err == nil || !strings.HasPrefix(err.Error(), `rule 3 ("bad:port"): `) {
		t.Fatalf("err = %v, want it to name rule 3", err)
	}
}

func TestParseRulesDeduplicates(t *testing.T) {
	rs := MustParseRules("Example.com", "example.com:443", "example.com.", "*.a.b", "*.A.b:443", "[::1]", "[0::1]:443", "127.0.0.1", "example.com:80")
	want := []string{"example.com:443", "*.a.b:443", "[::1]:443", "127.0.0.1:443", "example.com:80"}
	if got := rs.Strings(); !slices.Equal(got, want) {
		t.Fatalf("Strings() = %q, want %q", got, want)
	}
	if rs.Len() != len(want) {
		t.Fatalf("Len() = %d, want %d", rs.Len(), len(want))
	}
}

func TestMatch(t *testing.T) {
	rs := MustParseRules(
		"api.example.com",
		"plain.example.com:80",
		"*.example.com",
		"*.deep.example.com:8443",
		"*.cdn.example.net",
		"cdn.example.net:443",
		"10.0.0.7:8080",
		"[2001:db8::7]",
	)
	for _, tc := range []struct {
		host string
		port int
		rule string // "" = refused
	}{
		{"api.example.com", 443, "api.example.com:443"},
		{"API.EXAMPLE.COM", 443, "api.example.com:443"},
		{"api.example.com.", 443, "api.example.com:443"},
		{"api.example.com", 80, ""},
		{"plain.example.com", 80, "plain.example.com:80"},
		{"plain.example.com", 443, "*.example.com:443"},
		// wildcards: any depth below the suffix, never the suffix itself
		{"x.example.com", 443, "*.example.com:443"},
		{"a.b.c.example.com", 443, "*.example.com:443"},
		{"example.com", 443, ""},
		{"example.com.", 443, ""},
		{"badexample.com", 443, ""},
		{"example.com.evil.test", 443, ""},
		{"x.example.com", 8443, ""},
		// the longest matching suffix decides
		{"a.deep.example.com", 8443, "*.deep.example.com:8443"},
		{"a.deep.example.com", 443, "*.example.com:443"},
		{"deep.example.com", 8443, ""},
		// an exact rule wins over a wildcard
		{"cdn.example.net", 443, "cdn.example.net:443"},
		{"eu.cdn.example.net", 443, "*.cdn.example.net:443"},
		// address literals match address rules only
		{"10.0.0.7", 8080, "10.0.0.7:8080"},
		{"10.0.0.7", 443, ""},
		{"10.0.0.8", 8080, ""},
		{"::ffff:10.0.0.7", 8080, "10.0.0.7:8080"},
		{"[2001:db8::7]", 443, "[2001:db8::7]:443"},
		{"2001:db8::7", 443, "[2001:db8::7]:443"},
		{"2001:0db8:0::7", 443, "[2001:db8::7]:443"},
		{"[2001:db8::8]", 443, ""},
		// nonsense never matches
		{"", 443, ""},
		{".", 443, ""},
		{"api.example.com", 0, ""},
		{"api.example.com", 70000, ""},
	} {
		got, ok := rs.Match(tc.host, tc.port)
		if got != tc.rule || ok != (tc.rule != "") {
			t.Errorf("Match(%q, %d) = %q, %v; want %q", tc.host, tc.port, got, ok, tc.rule)
		}
	}
}

func TestNilAndEmptyRulesAllowNothing(t *testing.T) {
	var nilRules *Rules
	empty := MustParseRules()
	for _, rs := range []*Rules{nilRules, empty, {}} {
		if r, ok := rs.Match("example.com", 443); ok {
			t.Errorf("Match on empty rules = %q", r)
		}
		if r, ok := rs.NamesAddr(netip.MustParseAddrPort("127.0.0.1:443")); ok {
			t.Errorf("NamesAddr on empty rules = %q", r)
		}
		if rs.Len() != 0 || len(rs.Strings()) != 0 {
			t.Errorf("empty rules have length %d", rs.Len())
		}
	}
}

func TestNamesAddr(t *testing.T) {
	rs := MustParseRules("127.0.0.1:8080", "[::1]:9090", "name.example:8080")
	for _, tc := range []struct {
		ap   string
		rule string
	}{
		{"127.0.0.1:8080", "127.0.0.1:8080"},
		{"[::ffff:127.0.0.1]:8080", "127.0.0.1:8080"},
		{"127.0.0.1:9090", ""},
		{"[::1]:9090", "[::1]:9090"},
		{"[::1]:8080", ""},
		{"127.0.0.2:8080", ""},
	} {
		got, ok := rs.NamesAddr(netip.MustParseAddrPort(tc.ap))
		if got != tc.rule || ok != (tc.rule != "") {
			t.Errorf("NamesAddr(%s) = %q, %v; want %q", tc.ap, got, ok, tc.rule)
		}
	}
}

func FuzzParseRule(f *testing.F) {
	for _, s := range []string{"a.com", "*.a.com:80", "[::1]:443", "1.2.3.4", "a..b", "[", "*.", "x:0", "!GET a.com/x", "GET,POST *.a.b:80/", "!a.b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRule(s)
		if err != nil {
			return
		}
		// A rule's canonical form parses back to itself and matches it.
		again, err := ParseRule(r.String())
		if err != nil || again != r {
			t.Fatalf("ParseRule(%q) = %v, but its form %q parses to %v, %v", s, r, r.String(), again, err)
		}
		if r.Deny || r.Requests() {
			// About requests: the connection is allowed only without "!".
			v := MustParseRules(s).Conn(matchName(r), int(r.Port))
			wantRule := r.String()
			if r.Deny && r.Requests() {
				wantRule = "" // only takes away from requests no rule allows
			}
			if v.Allowed == r.Deny || v.Requests != r.Requests() || v.Rule != wantRule {
				t.Fatalf("rule %q: Conn = %+v", s, v)
			}
			return
		}
		rs := MustParseRules(s)
		h := r.Host
		if r.Wildcard {
			h = "x." + h
		}
		if r.Addr.IsValid() {
			h = r.Addr.String()
		}
		if got, ok := rs.Match(h, int(r.Port)); !ok || got != r.String() {
			t.Fatalf("rule %q does not match %s:%d (got %q)", s, h, r.Port, got)
		}
	})
}

// matchName is a name rule r matches.
func matchName(r Rule) string {
	switch {
	case r.Addr.IsValid():
		return r.Addr.String()
	case r.Wildcard:
		return "x." + r.Host
	}
	return r.Host
}
