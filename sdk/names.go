package sdk

import "github.com/bot-bottle/bot-bottle/sdk/names"

// MaxNameLen is the longest identity or name: a DNS label, which also fits
// Docker container, network and volume names, Kubernetes object names and a
// single path component.
const MaxNameLen = names.MaxLen

// IdentitySuffixLen is the length of the random base36 suffix of a minted
// identity.
const IdentitySuffixLen = names.SuffixLen

// NameRule says what ValidName accepts, for error messages.
const NameRule = names.Rule

// ValidName reports whether s is a valid identity or name (of an agent, a
// plugin or a backend): 1 to MaxNameLen lower-case letters, digits and '-',
// not starting or ending with '-'. That rules out "/", "..", ".", spaces,
// upper case and anything that could be read as a flag, so a valid name is
// safe as a path component, a label value and a resource name part. It is
// the one rule of bot-bottle (package sdk/names holds it without
// dependencies, for small binaries).
func ValidName(s string) bool { return names.Valid(s) }

// ValidIdentity reports whether s is a valid bottle identity. An identity is
// a name (ValidName); the core mints them as Slug(agent) + "-" + 5 random
// base36 characters (e.g. "shell-7k2qz"), but a backend must accept any
// valid name and refuse everything else before it builds a path, a
// resource name or a label filter from it.
func ValidIdentity(s string) bool { return names.Valid(s) }

// CheckName returns nil for a valid name and otherwise a one-line error
// naming what it is (kind: "identity", "agent name", …), safe to show even
// for hostile input.
func CheckName(kind, s string) error { return names.Check(kind, s) }

// Slug turns an agent name into the prefix of its identities: lower case,
// every run of characters outside [a-z0-9] collapsed to one '-', no '-' at
// either end, at most 40 characters, and "bottle" when nothing is left.
func Slug(agent string) string { return names.Slug(agent) }
