package queue

import (
	"encoding/json"
	"strings"
	"testing"
)

const testID = "shell-7k2qz"

func TestParseRequestValid(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want Request
	}{
		{"run", `{"kind":"capability","reason":"need rg","run":"apt-get install -y ripgrep"}`,
			Request{Identity: testID, Kind: KindCapability, Reason: "need rg", Run: "apt-get install -y ripgrep", Status: StatusPending}},
		{"dockerfile with own identity", `{"version":1,"identity":"shell-7k2qz","kind":"capability","reason":"r\nmore","dockerfile":"FROM x\n\tRUN y\n"}`,
			Request{Identity: testID, Kind: KindCapability, Reason: "r\nmore", Dockerfile: "FROM x\n\tRUN y\n", Status: StatusPending}},
		{"egress host", `{"kind":"egress","reason":"docs","host":"Docs.Example.COM"}`,
			Request{Identity: testID, Kind: KindEgress, Reason: "docs", Host: "docs.example.com", Status: StatusPending}},
		{"egress port", `{"kind":"egress","reason":"r","host":"example.com:8443"}`,
			Request{Identity: testID, Kind: KindEgress, Reason: "r", Host: "example.com:8443", Status: StatusPending}},
		{"egress wildcard", `{"kind":"egress","reason":"r","host":"*.pypi.org"}`,
			Request{Identity: testID, Kind: KindEgress, Reason: "r", Host: "*.pypi.org", Status: StatusPending}},
		{"egress ipv4", `{"kind":"egress","reason":"r","host":"10.0.0.1:80"}`,
			Request{Identity: testID, Kind: KindEgress, Reason: "r", Host: "10.0.0.1:80", Status: StatusPending}},
		{"egress ipv6", `{"kind":"egress","reason":"r","host":"[2001:DB8::1]:443"}`,
			Request{Identity: testID, Kind: KindEgress, Reason: "r", Host: "[2001:db8::1]:443", Status: StatusPending}},
		{"unicode reason", `{"kind":"egress","reason":"für Tests ✓","host":"a.b"}`,
			Request{Identity: testID, Kind: KindEgress, Reason: "für Tests ✓", Host: "a.b", Status: StatusPending}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseRequest([]byte(c.in), testID)
			if err != nil {
				t.Fatalf("ParseRequest: %v", err)
			}
			if got != c.want {
				t.Fatalf("got %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func TestParseRequestRefused(t *testing.T) {
	big := strings.Repeat("a", MaxRequestSize)
	cases := []struct{ name, in, wantErr string }{
		{"empty", ``, "malformed"},
		{"not json", `hello`, "malformed"},
		{"truncated", `{"kind":"egress"`, "malformed"},
		{"array", `[1,2]`, "malformed"},
		{"null", `null`, "reason: missing"},
		{"trailing", `{"kind":"egress","reason":"r","host":"a.b"} {}`, "after the JSON"},
		{"unknown field", `{"kind":"egress","reason":"r","host":"a.b","status":"approved"}`, "unknown field"},
		{"forged id", `{"id":"shell-7k2qz-aaaaaa","kind":"egress","reason":"r","host":"a.b"}`, "unknown field"},
		{"other identity", `{"identity":"other-aaaaa","kind":"egress","reason":"r","host":"a.b"}`, "names identity"},
		{"bad kind", `{"kind":"root","reason":"r"}`, "kind"},
		{"no kind", `{"reason":"r"}`, "kind: missing"},
		{"no reason", `{"kind":"egress","host":"a.b"}`, "reason: missing"},
		{"blank reason", `{"kind":"egress","reason":"  \n ","host":"a.b"}`, "reason: missing"},
		{"version", `{"version":2,"kind":"egress","reason":"r","host":"a.b"}`, "version"},
		{"type confusion", `{"kind":"egress","reason":5,"host":"a.b"}`, "malformed"},
		{"escape in reason", `{"kind":"egress","reason":"ok\u001b[2J","host":"a.b"}`, "forbidden character"},
		{"bidi in reason", `{"kind":"egress","reason":"ok\u202egnp.exe","host":"a.b"}`, "forbidden character"},
		{"c1 control", `{"kind":"egress","reason":"ok\u009b","host":"a.b"}`, "forbidden character"},
		{"invalid utf8", "{\"kind\":\"egress\",\"reason\":\"\xff\",\"host\":\"a.b\"}", "UTF-8"},
		{"long reason", `{"kind":"egress","host":"a.b","reason":"` + strings.Repeat("x", MaxReasonLen+1) + `"}`, "too long"},
		{"too big", `{"kind":"egress","host":"a.b","reason":"` + big + `"}`, "too large"},
		{"no change", `{"kind":"capability","reason":"r"}`, "missing dockerfile or run"},
		{"both", `{"kind":"capability","reason":"r","run":"x","dockerfile":"FROM y"}`, "not both"},
		{"run newline", `{"kind":"capability","reason":"r","run":"true\nUSER root"}`, "forbidden character"},
		{"run continuation", `{"kind":"capability","reason":"r","run":"true \\"}`, "continuation"},
		{"run blank", `{"kind":"capability","reason":"r","run":"   "}`, "run: empty"},
		{"dockerfile blank", `{"kind":"capability","reason":"r","dockerfile":"\n\n"}`, "dockerfile: empty"},
		{"capability host", `{"kind":"capability","reason":"r","run":"x","host":"a.b"}`, "not allowed"},
		{"egress run", `{"kind":"egress","reason":"r","run":"x","host":"a.b"}`, "not allowed"},
		{"egress no host", `{"kind":"egress","reason":"r"}`, "host: missing"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseRequest([]byte(c.in), testID)
			if err == nil {
				t.Fatalf("accepted: %+v", got)
			}
			if !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("error %q does not mention %q", err, c.wantErr)
			}
		})
	}
}

func TestParseRequestBadIdentity(t *testing.T) {
	for _, id := range []string{"", "../x", "A-b", "a/b", strings.Repeat("a", 64), "-a"} {
		if _, err := ParseRequest([]byte(`{"kind":"egress","reason":"r","host":"a.b"}`), id); err == nil {
			t.Errorf("identity %q accepted", id)
		}
	}
}

func TestNormalizeHost(t *testing.T) {
	good := map[string]string{
		"example.com":      "example.com",
		"EXAMPLE.com:443":  "example.com:443",
		"build.internal":   "build.internal",
		"a-b.c":            "a-b.c",
		"*.example.com:80": "*.example.com:80",
		// Issue 24: deny rules and rules about requests, in egressrule's canonical form.
		"a.b/x":                        "a.b:443/x",
		"GET,head api.example.com/v1/": "GET,HEAD api.example.com:443/v1/",
		"!api.example.com:443/admin":   "!api.example.com:443/admin",
		"192.168.1.1":                  "192.168.1.1",
		"[2001:db8::1]":                "[2001:db8::1]",
		"[fd12::1]:65535":              "[fd12::1]:65535",
		"xn--bcher-kva.test":           "xn--bcher-kva.test",
	}
	for in, want := range good {
		got, err := NormalizeHost(in)
		if err != nil || got != want {
			t.Errorf("NormalizeHost(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	bad := []string{
		"", ":443", "example.com:", "example.com:0", "example.com:65536", "example.com:080",
		"example.com:-1", "example.com:+1", "exa mple.com", "-a.com", "a-.com", "a..b", "a.b.",
		".a.b", "*", "*.", "a.*.b", "**.a", "http://a.b", "FLY a.b/x", "GET localhost/x", "user@a.b", "1.2.3", "999.1.1.1",
		"*.1.2.3.4", "[::1", "[::1]443", "[1.2.3.4]", "[::ffff:1.2.3.4]", "[fe80::1%eth0]", "::1",
		// Issue 18: refused as a bottle request, before any operator sees it.
		"localhost", "a.localhost:80", "127.0.0.1:3128", "0.0.0.0:3128", "[::1]", "[fe80::1]:65535",
		"169.254.169.254:80", "[fd00:ec2::254]:80", "metadata.google.internal:80", "*.com", "*.co.uk",
		"a_b.com", "é.com", strings.Repeat("a", 64) + ".com", strings.Repeat("a.", 130) + "com",
	}
	for _, in := range bad {
		if got, err := NormalizeHost(in); err == nil {
			t.Errorf("NormalizeHost(%q) accepted as %q", in, got)
		}
	}
}

// A submission that passes Validate on the helper side must pass ParseRequest
// on the host side, with the same result.
func TestValidateMatchesParse(t *testing.T) {
	s := Submission{Version: SubmissionVersion, Identity: testID, Kind: KindEgress, Reason: "r", Host: "A.b:1"}
	want, err := s.Validate(testID)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(s)
	got, err := ParseRequest(data, testID)
	if err != nil || got != want {
		t.Fatalf("ParseRequest = %+v, %v; Validate = %+v", got, err, want)
	}
}
