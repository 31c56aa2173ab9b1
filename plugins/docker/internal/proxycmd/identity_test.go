package proxycmd

import (
	"testing"

	"github.com/bot-bottle/bot-bottle/sdk/backendtest"
)

func TestIdentityRule(t *testing.T) { backendtest.CheckNameRule(t, validIdentity) }
