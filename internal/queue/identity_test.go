package queue

import (
	"testing"

	"github.com/bot-bottle/bot-bottle/sdk/backendtest"
)

func TestIdentityRule(t *testing.T) {
	backendtest.CheckNameRule(t, ValidIdentity)
	// A request id is <identity>-<6 base36>: its identity part obeys the rule.
	backendtest.CheckNameRule(t, func(id string) bool {
		got, err := identityOf(id + "-abc123")
		return err == nil && got == id
	})
}
