package egressrule

import (
	"strings"
	"testing"
)

func TestCheckRequestedClasses(t *testing.T) {
	for in, want := range map[string]string{
		"localhost":                   "can only mean the proxy itself",
		"LocalHost.:8080":             "can only mean the proxy itself",
		"api.localhost":               "can only mean the proxy itself",
		"*.localhost":                 "can only mean the proxy itself",
		"127.0.0.1:3128":              "loopback",
		"127.9.9.9":                   "loopback",
		"[::1]:443":                   "loopback",
		"0.0.0.0:3128":                "unspecified",
		"0.1.2.3":                     "this-host",
		"[::]":                        "unspecified",
		"[::ffff:127.0.0.1]":          "loopback",
		"169.254.1.1":                 "link-local",
		"[fe80::1]":                   "link-local",
		"169.254.169.254:80":          "cloud metadata",
		"[fd00:ec2::254]:80":          "cloud metadata",
		"metadata.google.internal:80": "cloud metadata",
		"224.0.0.1":                   "multicast",
		"*.com":                       "public suffix",
		"*.co.uk:443":                 "public suffix",
		"*.github.io":                 "public suffix",
		"*.test":                      "public suffix",
	} {
		w, err := CheckRequested(in)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "refused") {
			t.Errorf("CheckRequested(%q) = %q, %v; want a refusal mentioning %q", in, w, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("CheckRequested(%q): not one line: %q", in, err)
		}
	}
	for in, warn := range map[string]bool{
		"api.example.com":   false,
		"10.1.2.3:5432":     false,
		"[2001:db8::1]:443": false,
		"*.example.com":     true,
		"*.pkg.github.io":   true,
		"*.example.co.uk":   true,
	} {
		w, err := CheckRequested(in)
		if err != nil || (w != "") != warn {
			t.Errorf("CheckRequested(%q) = %q, %v; want warning %v", in, w, err, warn)
		}
		if warn && !strings.Contains(w, "wildcard") {
			t.Errorf("CheckRequested(%q) warning %q does not say wildcard", in, w)
		}
	}
}
