package egressrule

import "testing"

// Paths as servers read them differently from the rule's plain prefix:
// a deny rule refuses what any of those readings would route to what it
// names, and an allow rule allows only what every reading keeps under it.
func TestRequestPathReadings(t *testing.T) {
	rs := MustParseRules(
		"GET gh.test/repos/acme/",
		"wide.test",
		"!wide.test/admin/",
		"PUT m.test/x;v=1/",
		"!m.test/x;v=1/private",
	)
	for _, tc := range []struct {
		host, path string
		allowed    bool
		reason     string
	}{
		// Case: many servers route paths without regard to case.
		{"wide.test", "/ADMIN/users", false, ReasonDenied},
		{"wide.test", "/Admin/", false, ReasonDenied},
		// Matrix parameters: Tomcat, Jetty, Spring drop ";..." per segment.
		{"wide.test", "/admin;x/users", false, ReasonDenied},
		{"gh.test", "/repos/acme/..;/..;/admin", false, ReasonUnclean},
		{"gh.test", "/repos;x/acme/y", false, ReasonNoRequest},
		{"gh.test", "/repos/acme/x;y", true, ""},
		// Backslash: IIS, some Node and Python servers take it for '/'.
		{"gh.test", `/repos/acme/..\..\admin`, false, ReasonUnclean},
		{"wide.test", `/admin\users`, false, ReasonDenied},
		// Double encoding: a server that decodes twice sees ../ here.
		{"gh.test", "/repos/acme/%2e%2e/%2E%2E/admin", false, ReasonUnclean},
		{"gh.test", "/repos/acme/..%2fadmin", false, ReasonUnclean},
		{"gh.test", "/repos/acme/%5c..%5cadmin", false, ReasonUnclean},
		// Allow rules keep their case.
		{"gh.test", "/REPOS/acme/x", false, ReasonNoRequest},
		{"gh.test", "/repos/acme/100%25/x", true, ""},
		{"wide.test", "/administrator", true, ""},
		// A rule's own ;params read the same way as the request's.
		{"m.test", "/x;v=1/y", true, ""},
		{"m.test", "/x;v=1/private", false, ReasonDenied},
		{"m.test", "/x;v=2/private", false, ReasonDenied},
		{"m.test", "/x;v=2/y", false, ReasonNoRequest},
	} {
		method := "GET"
		if tc.host == "m.test" {
			method = "PUT"
		}
		v := rs.Request(tc.host, 443, method, tc.path)
		if v.Allowed != tc.allowed || v.Reason != tc.reason {
			t.Errorf("Request(%s GET %s) = %+v, want allowed %v reason %q", tc.host, tc.path, v, tc.allowed, tc.reason)
		}
	}
	for p, want := range map[string]bool{
		`/a\b`: true, `/a\..\b`: false, `/a/..;/b`: false, "/a/.;x/b": false, "/a;x/b": true,
		"/a/%2e%2e/b": false, "/a/%2F": false, "/a/%25": true,
	} {
		if got := CleanPath(p); got != want {
			t.Errorf("CleanPath(%q) = %v, want %v", p, got, want)
		}
	}
}
