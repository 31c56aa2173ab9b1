package backend

import (
	"testing"

	"github.com/bot-bottle/bot-bottle/sdk/backendtest"
)

func TestIdentityRule(t *testing.T) {
	backendtest.CheckNameRule(t, func(id string) bool { return checkIdentity(id) == nil })
}
