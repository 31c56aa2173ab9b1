package names_test

import (
	"strings"
	"testing"

	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/backendtest"
	"github.com/bot-bottle/bot-bottle/sdk/names"
)

func TestNameRule(t *testing.T) {
	backendtest.CheckNameRule(t, names.Valid)
	backendtest.CheckNameRule(t, sdk.ValidName)
	backendtest.CheckNameRule(t, sdk.ValidIdentity)
	backendtest.CheckNameRule(t, func(s string) bool { return sdk.CheckName("identity", s) == nil })
}

func TestCheckNameIsOneLine(t *testing.T) {
	err := sdk.CheckName("agent name", "a\nb")
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.HasPrefix(err.Error(), `invalid agent name "a\nb": must be`) {
		t.Fatalf("CheckName = %v", err)
	}
}

func TestSlugMakesValidIdentities(t *testing.T) {
	for agent, want := range map[string]string{
		"Claude Code":             "claude-code",
		"--x--":                   "x",
		"":                        "bottle",
		"é":                       "bottle",
		strings.Repeat("ab-", 30): strings.Repeat("ab-", 13) + "a",
	} {
		got := names.Slug(agent)
		if got != want {
			t.Errorf("Slug(%q) = %q, want %q", agent, got, want)
		}
		if id := got + "-7k2qz"; !sdk.ValidIdentity(id) {
			t.Errorf("Slug(%q) + suffix = %q is not a valid identity", agent, id)
		}
	}
}
