package config

import "github.com/bot-bottle/bot-bottle/sdk"

// ValidName reports whether s may name an agent, a plugin or a backend, by
// the one name rule (sdk.ValidName). It is checked before a name is ever
// used to build a path.
func ValidName(s string) error { return sdk.CheckName("name", s) }
