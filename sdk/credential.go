package sdk

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
)

// Credential is one credential of an agent as the core hands it to a
// backend: how it goes on the wire, never its value (the value is in
// Spec.Credentials, by Name).
//
// The agent's environment gets EnvName=Placeholder (the core puts it in
// Spec.Env). A backend with CapCredentials has its egress proxy replace the
// placeholder with the value in header Header (Prefix+Value) on requests to
// Hosts only, so the agent never holds the secret.
type Credential struct {
	Name    string
	EnvName string
	// Hosts are egressrule host[:port] patterns (port 443 when none).
	Hosts  []string
	Header string // e.g. "x-api-key", "Authorization"
	Prefix string // e.g. "Bearer "
	// Placeholder is this launch's stand-in for the value (NewPlaceholder):
	// not a secret, the agent sees it. A new one is made at every launch.
	Placeholder string
}

// CredentialRevoker is implemented by backends with CapCredentials: it
// revokes a running bottle's credential name live, so that the next request
// goes out without it. A credential the bottle does not have is an error
// wrapping ErrNotFound.
type CredentialRevoker interface {
	RevokeCredential(ctx context.Context, h Handle, name string) error
}

// PlaceholderPrefix starts every placeholder, so that a grep for it finds
// them in logs, files and requests.
const PlaceholderPrefix = "bbph-"

// ValidCredentialName checks a credential's name with the one name rule
// (ValidName: a DNS label). The name is part of every placeholder and of
// audit records, so it is kept to characters safe in a header, a URL and a
// log line.
func ValidCredentialName(name string) error { return CheckName("credential name", name) }

// NewPlaceholder returns a fresh placeholder for the credential name:
// "bbph-<name>-<32 hex digits>". It is the one shape of a placeholder: the
// core makes them and the egress proxy recognises them by it. It is long
// and random so that it is unique (a grep finds exactly the one bottle's),
// and made of characters every client accepts in a header or an API key.
func NewPlaceholder(name string) string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand, Go ≥ 1.24)
	return PlaceholderPrefix + name + "-" + hex.EncodeToString(b[:])
}

// IsPlaceholder reports whether s has the shape NewPlaceholder gives.
func IsPlaceholder(s string) bool {
	rest, ok := strings.CutPrefix(s, PlaceholderPrefix)
	if !ok || len(rest) < 34 {
		return false
	}
	name, hexpart := rest[:len(rest)-33], rest[len(rest)-33:]
	if hexpart[0] != '-' {
		return false
	}
	if _, err := hex.DecodeString(hexpart[1:]); err != nil || strings.ToLower(hexpart[1:]) != hexpart[1:] {
		return false
	}
	return ValidCredentialName(name) == nil
}
