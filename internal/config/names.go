package config

import (
	"fmt"
	"regexp"
)

// maxNameLen keeps names usable as parts of container, network and file names.
const maxNameLen = 63

// nameRE allows only what is safe as a path element and a Docker resource name
// part; a leading '-' is refused so a name can never be read as a flag.
var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

// ValidName reports whether s may name an agent, a plugin or a backend. It is
// checked before a name is ever used to build a path.
func ValidName(s string) error {
	if s == "" {
		return fmt.Errorf("empty name")
	}
	if len(s) > maxNameLen {
		return fmt.Errorf("name %q is longer than %d characters", s, maxNameLen)
	}
	if !nameRE.MatchString(s) {
		return fmt.Errorf("invalid name %q: use lower-case letters, digits and '-', not starting with '-'", s)
	}
	return nil
}
