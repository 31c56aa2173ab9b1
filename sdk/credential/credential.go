// Package credential holds the rules a credential's parts follow, which the
// core and every egress proxy must agree on: the one shape of a
// placeholder, the name and the value. It has no dependencies beyond the
// name rule, so that a proxy built into a small in-pod helper links it
// without package sdk's plugin machinery; sdk re-exports it.
package credential

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/bot-bottle/bot-bottle/sdk/names"
)

// PlaceholderPrefix starts every placeholder, so that a grep for it finds
// them in logs, files and requests.
const PlaceholderPrefix = "bbph-"

// ValidName checks a credential's name with the one name rule
// (sdk/names: a DNS label). The name is part of every placeholder and of
// audit records, so it is kept to characters safe in a header, a URL and a
// log line.
func ValidName(name string) error { return names.Check("credential name", name) }

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
	return ValidName(name) == nil
}

// Bounds of a credential's value (CheckValue).
const (
	// MinValue: a proxy masks every value in every answer on the
	// connections it terminates, and a value this short would match by
	// chance and corrupt unrelated answers.
	MinValue = 8
	MaxValue = 16 << 10
)

// CheckValue is the one rule for a credential's value, which the
// core checks when it reads the value and a proxy before it puts the value
// on the wire: MinValue to MaxValue bytes, no control
// character a header cannot carry (tab aside), no whitespace at either end
// (a header loses it, and an echo of the trimmed value would pass the mask
// unseen). Its errors never quote the value.
func CheckValue(v string) error {
	switch {
	case len(v) < MinValue:
		return fmt.Errorf("the value is shorter than %d bytes", MinValue)
	case len(v) > MaxValue:
		return fmt.Errorf("the value is longer than %d bytes", MaxValue)
	case strings.TrimSpace(v) != v:
		return errors.New("the value starts or ends with whitespace, which a header does not keep")
	}
	if !HeaderSafe(v) {
		// In a header a line break would forge another one.
		return errors.New("the value holds a line break or another control character a header cannot carry")
	}
	return nil
}

// HeaderSafe reports whether s holds no control character a header value
// cannot carry (tab aside): the check for every part of a credential that
// goes into a header.
func HeaderSafe(s string) bool {
	for _, c := range []byte(s) {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
