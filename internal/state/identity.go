package state

import (
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strconv"
	"strings"

	"github.com/bot-bottle/bot-bottle/sdk"
)

const (
	// MaxIdentityLen bounds identities and user-given names (sdk.MaxNameLen).
	MaxIdentityLen = sdk.MaxNameLen
	suffixLen      = sdk.IdentitySuffixLen
	mintRetries    = 100
)

// suffixSpace is 36^5: every 5-character base36 string.
var suffixSpace = big.NewInt(36 * 36 * 36 * 36 * 36)

// ValidateIdentity refuses anything that is not a safe identity
// (sdk.ValidIdentity: which rules out "/", "..", spaces and upper case). The
// error wraps ErrInvalidIdentity and is one line even for hostile input.
func ValidateIdentity(id string) error {
	if sdk.ValidIdentity(id) {
		return nil
	}
	return &stateError{
		msg:      fmt.Sprintf("invalid identity %q: %s", id, sdk.NameRule),
		sentinel: ErrInvalidIdentity,
	}
}

// ValidateName applies the identity rules to a name a user chose, such as an
// agent or plugin name; kind says what it is ("agent name", "plugin name")
// for the message. The error wraps ErrInvalidName.
func ValidateName(kind, name string) error {
	if sdk.ValidName(name) {
		return nil
	}
	return &stateError{
		msg:      fmt.Sprintf("invalid %s %q: %s", kind, name, sdk.NameRule),
		sentinel: ErrInvalidName,
	}
}

// Slug turns an agent name into the prefix of its identities (sdk.Slug).
func Slug(agent string) string { return sdk.Slug(agent) }

// Mint creates a new identity <Slug(agent)>-<5 random base36 characters> and
// reserves it by creating its state directory with os.Mkdir, which succeeds
// for exactly one caller even across processes. A candidate whose directory
// already exists, or for which taken reports true (for example a bottle the
// backend still runs), is skipped; taken may be nil. Gives up after a
// bounded number of attempts.
func (s *Store) Mint(agent string, taken func(id string) bool) (string, error) {
	id, _, err := s.mint(agent, taken, false)
	return id, err
}

// MintLocked is Mint that also takes the new bottle's Lock before its state
// directory exists, so no other process (a prune, say) can see the fresh
// directory without metadata and remove it before the caller writes it.
func (s *Store) MintLocked(agent string, taken func(id string) bool) (id string, unlock func(), err error) {
	return s.mint(agent, taken, true)
}

func (s *Store) mint(agent string, taken func(string) bool, lock bool) (string, func(), error) {
	slug := Slug(agent)
	for range mintRetries {
		suffix, err := s.randomSuffix()
		if err != nil {
			return "", nil, fmt.Errorf("mint identity for agent %q: %w", agent, err)
		}
		id := slug + "-" + suffix
		if taken != nil && taken(id) {
			continue
		}
		unlock := func() {}
		if lock {
			unlock, err = s.Lock(id)
			if errors.Is(err, ErrLocked) {
				continue
			}
			if err != nil {
				return "", nil, fmt.Errorf("mint identity for agent %q: %w", agent, err)
			}
		}
		err = os.Mkdir(s.Dir(id), dirPerm)
		if err == nil {
			return id, unlock, nil
		}
		unlock()
		if errors.Is(err, os.ErrExist) {
			continue
		}
		return "", nil, fmt.Errorf("mint identity for agent %q: reserve %s: %w", agent, id, err)
	}
	return "", nil, fmt.Errorf("mint identity for agent %q: no free identity after %d attempts", agent, mintRetries)
}

func (s *Store) randomSuffix() (string, error) {
	if s.suffix != nil {
		return s.suffix()
	}
	n, err := rand.Int(rand.Reader, suffixSpace)
	if err != nil {
		return "", fmt.Errorf("random suffix: %w", err)
	}
	return padBase36(n.Int64()), nil
}

func padBase36(n int64) string {
	s := strconv.FormatInt(n, 36)
	return strings.Repeat("0", suffixLen-len(s)) + s
}
