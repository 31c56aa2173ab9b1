package egressrule

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseRequestRules(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		requests bool
	}{
		{"GET api.github.com/repos/acme/", "GET api.github.com:443/repos/acme/", true},
		{"get,head,GET API.GitHub.com:8443/x", "GET,HEAD api.github.com:8443/x", true},
		{"!api.github.com/admin", "!api.github.com:443/admin", true},
		{"!api.github.com", "!api.github.com:443", false},
		{"!POST *.example.com", "!POST *.example.com:443", true},
		{"api.example.com/", "api.example.com:443/", true},
		{"[2001:db8::1]:80/v1", "[2001:db8::1]:80/v1", true},
		{"DELETE 10.0.0.1:8080/items/", "DELETE 10.0.0.1:8080/items/", true},
		{"PUT a.test/x:y@z=1,2;3", "PUT a.test:443/x:y@z=1,2;3", true},
	} {
		r, err := ParseRule(tc.in)
		if err != nil {
			t.Errorf("ParseRule(%q): %v", tc.in, err)
			continue
		}
		if got := r.String(); got != tc.want {
			t.Errorf("ParseRule(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if r.Requests() != tc.requests {
			t.Errorf("ParseRule(%q).Requests() = %v", tc.in, r.Requests())
		}
		if again, err := ParseRule(r.String()); err != nil || again != r {
			t.Errorf("canonical %q parses to %v, %v", r.String(), again, err)
		}
	}
}

func TestParseRequestRuleErrors(t *testing.T) {
	for in, want := range map[string]string{
		" api.test":           "empty method list",
		"GET  api.test":       "characters",
		"GET, api.test":       "empty method",
		"FETCH api.test":      "not an HTTP method",
		"CONNECT api.test":    "CONNECT is how a tunnel opens",
		"GET api.test/a/../b": "canonical",
		"GET api.test//a":     "canonical",
		"GET api.test/a/./b":  "canonical",
		"api.test/a%2fb":      `"%"`,
		"api.test/a?b":        `"?"`,
		"api.test/it's":       `"'"`,
		"api.test/" + strings.Repeat("a", MaxPathLen): "path is",
		"!!api.test":       "letters, digits",
		"GET api.test:0/x": "port",
		"GET *.10.0.0.1/x": "wildcard matches names",
		strings.Repeat("GET,", 17) + "GET a.test": "more than",
	} {
		_, err := ParseRule(in)
		if err == nil || !strings.Contains(err.Error(), want) || strings.ContainsAny(err.Error(), "\r\n") {
			t.Errorf("ParseRule(%q) = %v, want one line mentioning %q", in, err, want)
		}
	}
}

func TestCleanPath(t *testing.T) {
	for p, want := range map[string]bool{
		"/": true, "/a": true, "/a/": true, "/a/b.c/d": true, "/a/...": true,
		"": false, "a": false, "//": false, "/a//b": false, "/./a": false, "/a/..": false, "/a/../b": false, "/.": false,
	} {
		if got := CleanPath(p); got != want {
			t.Errorf("CleanPath(%q) = %v, want %v", p, got, want)
		}
	}
}

func TestConnAndRequestVerdicts(t *testing.T) {
	rs := MustParseRules(
		"GET,HEAD gh.test/repos/acme/",
		"!gh.test/repos/acme/secret",
		"wide.test",
		"!wide.test/admin",
		"!DELETE wide.test",
		"*.corp.test",
		"!db.corp.test",
		"POST hooks.test:80/in",
		"plain.test",
	)
	for _, tc := range []struct {
		host     string
		port     int
		allowed  bool
		requests bool
		rule     string
	}{
		{"gh.test", 443, true, true, "GET,HEAD gh.test:443/repos/acme/"},
		{"wide.test", 443, true, true, "wide.test:443"},
		{"x.corp.test", 443, true, false, "*.corp.test:443"},
		{"db.corp.test", 443, false, false, "!db.corp.test:443"},
		{"DB.corp.test.", 443, false, false, "!db.corp.test:443"},
		{"hooks.test", 80, true, true, "POST hooks.test:80/in"},
		{"hooks.test", 443, false, false, ""},
		{"plain.test", 443, true, false, "plain.test:443"},
		{"gh.test", 80, false, false, ""},
	} {
		v := rs.Conn(tc.host, tc.port)
		if v.Allowed != tc.allowed || v.Requests != tc.requests || v.Rule != tc.rule {
			t.Errorf("Conn(%s, %d) = %+v, want allowed %v requests %v rule %q", tc.host, tc.port, v, tc.allowed, tc.requests, tc.rule)
		}
		if rule, ok := rs.Match(tc.host, tc.port); ok != tc.allowed || rule != tc.rule {
			t.Errorf("Match(%s, %d) = %q, %v", tc.host, tc.port, rule, ok)
		}
	}
	for _, tc := range []struct {
		host, method, path string
		port               int
		allowed            bool
		rule, reason       string
	}{
		{"gh.test", "GET", "/repos/acme/x", 443, true, "GET,HEAD gh.test:443/repos/acme/", ""},
		{"gh.test", "head", "/repos/acme/", 443, true, "GET,HEAD gh.test:443/repos/acme/", ""},
		{"gh.test", "POST", "/repos/acme/x", 443, false, "", ReasonNoRequest},
		{"gh.test", "GET", "/repos/acme", 443, false, "", ReasonNoRequest},
		{"gh.test", "GET", "/repos/acme/secret", 443, false, "!gh.test:443/repos/acme/secret", ReasonDenied},
		{"gh.test", "GET", "/repos/acme/secrets/x", 443, false, "!gh.test:443/repos/acme/secret", ReasonDenied},
		{"gh.test", "GET", "/repos/acme/../x", 443, false, "!gh.test:443/repos/acme/secret", ReasonUnclean},
		{"wide.test", "GET", "/anything", 443, true, "wide.test:443", ""},
		{"wide.test", "DELETE", "/anything", 443, false, "!DELETE wide.test:443", ReasonDenied},
		{"wide.test", "delete", "/anything", 443, false, "!DELETE wide.test:443", ReasonDenied},
		{"wide.test", "GET", "/admin", 443, false, "!wide.test:443/admin", ReasonDenied},
		{"wide.test", "GET", "/x//admin", 443, false, "!wide.test:443/admin", ReasonUnclean},
		{"db.corp.test", "GET", "/", 443, false, "!db.corp.test:443", ReasonDenied},
		{"x.corp.test", "GET", "/a//b", 443, true, "*.corp.test:443", ""}, // no path rule: not judged
		{"hooks.test", "POST", "/in/1", 80, true, "POST hooks.test:80/in", ""},
		{"hooks.test", "GET", "/in/1", 80, false, "", ReasonNoRequest},
		{"nowhere.test", "GET", "/", 443, false, "", ReasonNotAllowed},
	} {
		v := rs.Request(tc.host, tc.port, tc.method, tc.path)
		if v.Allowed != tc.allowed || v.Rule != tc.rule || v.Reason != tc.reason {
			t.Errorf("Request(%s:%d %s %s) = %+v, want allowed %v rule %q reason %q", tc.host, tc.port, tc.method, tc.path, v, tc.allowed, tc.rule, tc.reason)
		}
	}
	if got := strings.Join(rs.RequestRules("wide.test", 443), " | "); got != "!wide.test:443/admin | !DELETE wide.test:443" {
		t.Errorf("RequestRules(wide.test) = %q", got)
	}
}

func TestDeniesAddr(t *testing.T) {
	rs := MustParseRules("*.corp.test", "!10.0.0.5", "!GET 10.0.0.6/x")
	if r, ok := rs.DeniesAddr(netip.MustParseAddrPort("10.0.0.5:443")); !ok || r != "!10.0.0.5:443" {
		t.Errorf("DeniesAddr(10.0.0.5:443) = %q, %v", r, ok)
	}
	for _, ap := range []string{"10.0.0.5:80", "10.0.0.6:443", "10.0.0.7:443"} {
		if r, ok := rs.DeniesAddr(netip.MustParseAddrPort(ap)); ok {
			t.Errorf("DeniesAddr(%s) = %q", ap, r)
		}
	}
}

func TestCheckRequestedRequestRules(t *testing.T) {
	for in, ok := range map[string]bool{
		"GET api.github.com/repos/acme/": true,
		"!api.github.com/admin":          true,
		"!localhost":                     true, // a deny rule only takes away
		"GET 127.0.0.1/x":                false,
		"GET metadata.google.internal/":  false,
		"POST *.com/x":                   false,
		"FETCH api.github.com":           false,
	} {
		_, err := CheckRequested(in)
		if (err == nil) != ok {
			t.Errorf("CheckRequested(%q) = %v, want ok %v", in, err, ok)
		}
	}
}

func TestNamesMethods(t *testing.T) {
	rs := MustParseRules(
		"GET,HEAD gh.test/repos/acme/",
		"!DELETE wide.test",
		"wide.test",
		"paths.test/only/",
		"!paths.test/admin",
		"POST *.hooks.test:80/in",
	)
	for _, tc := range []struct {
		host string
		port int
		want bool
	}{
		{"gh.test", 443, true},
		{"GH.test.", 443, true},
		{"gh.test", 80, false},
		{"wide.test", 443, true}, // a deny rule's methods count too
		{"paths.test", 443, false},
		{"a.hooks.test", 80, true},
		{"hooks.test", 80, false},
		{"nowhere.test", 443, false},
	} {
		if got := rs.NamesMethods(tc.host, tc.port); got != tc.want {
			t.Errorf("NamesMethods(%s, %d) = %v, want %v", tc.host, tc.port, got, tc.want)
		}
	}
	if MustParseRules("paths.test/only/", "plain.test").NamesMethods("paths.test", 443) {
		t.Error("NamesMethods is true for rules none of which names methods")
	}
	var none *Rules
	if none.NamesMethods("gh.test", 443) {
		t.Error("NamesMethods of nil rules is true")
	}
}
