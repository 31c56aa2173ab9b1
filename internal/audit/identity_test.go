package audit

import (
	"testing"

	"github.com/bot-bottle/bot-bottle/sdk/backendtest"
)

func TestIdentityRule(t *testing.T) {
	backendtest.CheckNameRule(t, func(id string) bool {
		_, err := Open(t.TempDir()).EgressPath(id)
		return err == nil
	})
}
