package state

import "errors"

var (
	// ErrInvalidIdentity is wrapped by every error ValidateIdentity returns.
	ErrInvalidIdentity = errors.New("invalid identity")
	// ErrInvalidName is wrapped by every error ValidateName returns.
	ErrInvalidName = errors.New("invalid name")
	// ErrNoBottle means there is no state (or no metadata) for an identity.
	ErrNoBottle = errors.New("no bottle")
	// ErrCorrupt means a state file exists but cannot be read as what it
	// should be: bad or truncated JSON, a symlink, not a regular file.
	ErrCorrupt = errors.New("corrupt state")
	// ErrLocked means another process (or another Lock in this process)
	// holds the bottle's lock.
	ErrLocked = errors.New("bottle is in use by another bot-bottle process")
)

// stateError carries a complete one-line message while still matching a
// sentinel (and the underlying cause, if any) with errors.Is and errors.As.
type stateError struct {
	msg      string
	sentinel error
	cause    error
}

func (e *stateError) Error() string { return e.msg }

func (e *stateError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.sentinel}
	}
	return []error{e.sentinel, e.cause}
}
