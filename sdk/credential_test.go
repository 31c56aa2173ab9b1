package sdk

import (
	"strings"
	"testing"
)

func TestPlaceholderShape(t *testing.T) {
	a, b := NewPlaceholder("anthropic"), NewPlaceholder("anthropic")
	if a == b {
		t.Fatalf("two placeholders are the same: %s", a)
	}
	for _, p := range []string{a, b, NewPlaceholder("x"), NewPlaceholder("a-b-1")} {
		if !IsPlaceholder(p) {
			t.Errorf("IsPlaceholder(%q) = false", p)
		}
		if !strings.HasPrefix(p, PlaceholderPrefix) || len(p) < len(PlaceholderPrefix)+34 {
			t.Errorf("placeholder %q has the wrong shape", p)
		}
	}
	if !strings.HasPrefix(a, "bbph-anthropic-") || len(a) != len("bbph-anthropic-")+32 {
		t.Errorf("placeholder %q: want bbph-anthropic-<32 hex>", a)
	}
	for _, s := range []string{"", "bbph-", "bbph-x-", "sk-ant-123", "bbph-x-0011223344556677889900aabbccdde",
		"bbph-X-00112233445566778899aabbccddeeff", "bbph-x-00112233445566778899AABBCCDDEEFF", "bbph-x_00112233445566778899aabbccddeeff"} {
		if IsPlaceholder(s) {
			t.Errorf("IsPlaceholder(%q) = true", s)
		}
	}
}

func TestValidCredentialName(t *testing.T) {
	for _, ok := range []string{"a", "anthropic", "openai-api", "gh-token", "1a", strings.Repeat("a", 63)} {
		if err := ValidCredentialName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "A", "-a", "a-", "a_b", "a b", "a.b", strings.Repeat("a", 64), "é"} {
		if ValidCredentialName(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
