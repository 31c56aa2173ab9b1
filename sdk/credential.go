package sdk

import (
	"context"

	"github.com/bot-bottle/bot-bottle/sdk/credential"
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

// The rules of a credential's parts live in package credential (see there).
const (
	PlaceholderPrefix  = credential.PlaceholderPrefix
	MinCredentialValue = credential.MinValue
	MaxCredentialValue = credential.MaxValue
)

// ValidCredentialName is credential.ValidName.
func ValidCredentialName(name string) error { return credential.ValidName(name) }

// NewPlaceholder is credential.NewPlaceholder.
func NewPlaceholder(name string) string { return credential.NewPlaceholder(name) }

// IsPlaceholder is credential.IsPlaceholder.
func IsPlaceholder(s string) bool { return credential.IsPlaceholder(s) }

// CheckCredentialValue is credential.CheckValue.
func CheckCredentialValue(v string) error { return credential.CheckValue(v) }
