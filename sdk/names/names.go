// Package names is bot-bottle's one identity and name rule, with no
// dependencies, so that small binaries (the in-bottle helper, the egress
// proxy) check names exactly as the core and every backend do. Plugin
// authors use the same rule through package sdk (sdk.ValidName,
// sdk.ValidIdentity, sdk.CheckName).
package names

import (
	"fmt"
	"regexp"
	"strings"
)

// MaxLen is the longest identity or name: a DNS label, which also fits
// Docker container, network and volume names, Kubernetes object names and a
// single path component.
const MaxLen = 63

// SuffixLen is the length of the random base36 suffix of a minted
// identity.
const SuffixLen = 5

// maxSlugLen leaves room for "-" and the suffix well inside MaxLen, and
// for a backend's prefix on its resource names ("bot-bottle-", "bb-").
const maxSlugLen = 40

// nameRE is the one identity and name grammar of bot-bottle: a DNS label in
// lower case. Everything that validates an identity, an agent, plugin or
// backend name uses Valid.
var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Rule says what Valid accepts, for error messages.
const Rule = "must be lower-case letters, digits and '-', 1-63 characters, not starting or ending with '-'"

// Valid reports whether s is a valid identity or name (of an agent, a
// plugin or a backend): 1 to MaxLen lower-case letters, digits and '-',
// not starting or ending with '-'. That rules out "/", "..", ".", spaces,
// upper case and anything that could be read as a flag, so a valid name is
// safe as a path component, a label value and a resource name part.
func Valid(s string) bool { return len(s) <= MaxLen && nameRE.MatchString(s) }

// Check returns nil for a valid name and otherwise a one-line error
// naming what it is (kind: "identity", "agent name", …), safe to show even
// for hostile input.
func Check(kind, s string) error {
	if Valid(s) {
		return nil
	}
	return fmt.Errorf("invalid %s %q: %s", kind, s, Rule)
}

// Slug turns an agent name into the prefix of its identities: lower case,
// every run of characters outside [a-z0-9] collapsed to one '-', no '-' at
// either end, at most 40 characters, and "bottle" when nothing is left.
func Slug(agent string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(agent) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			dash = false
			b.WriteRune(r)
			if b.Len() >= maxSlugLen {
				break
			}
			continue
		}
		dash = true
	}
	s := b.String()
	if len(s) > maxSlugLen {
		s = s[:maxSlugLen]
	}
	s = strings.TrimRight(s, "-")
	if s == "" {
		return "bottle"
	}
	return s
}
