package backendtest

import (
	"strings"
	"testing"
)

// NameCases is the table of identities and names against the one rule
// (sdk.ValidName): every place that validates an identity or a name, in the
// core, the backends and your plugin, runs it with CheckNameRule, so none can
// drift from the others.
var NameCases = []struct {
	Name  string
	Valid bool
}{
	{"claude-7k2qz", true},
	{"shell-00000", true},
	{"a", true},
	{"0", true},
	{"a-b", true},
	{"my-agent-2", true},
	{strings.Repeat("a", 63), true},
	{strings.Repeat("a", 57) + "-7k2qz", true},
	{"", false},
	{strings.Repeat("a", 64), false},
	{"-", false},
	{"-a", false},
	{"a-", false},
	{"/", false},
	{".", false},
	{"..", false},
	{"../x", false},
	{"x/../y", false},
	{"/etc", false},
	{"Claude-abcde", false},
	{"CLAUDE", false},
	{"a b", false},
	{"a_b", false},
	{"a.b", false},
	{"a\nb", false},
	{"a\x00b", false},
	{"é", false},
	{"claude-7k2qz ", false},
	{" claude-7k2qz", false},
	{"--help", false},
}

// CheckNameRule runs NameCases against valid, a validator of identities or
// names, and fails t for every case it decides differently from the rule.
func CheckNameRule(t testing.TB, valid func(string) bool) {
	t.Helper()
	for _, c := range NameCases {
		if got := valid(c.Name); got != c.Valid {
			t.Errorf("name rule: %q valid = %v, want %v", c.Name, got, c.Valid)
		}
	}
}
