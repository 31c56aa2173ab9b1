package backend

import (
	"github.com/bot-bottle/bot-bottle/plugins/internal/enginestream"

	"errors"
	"fmt"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/client"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// kindError keeps an engine error's message and lets callers test it for an
// sdk sentinel (ErrNotFound) with errors.Is.
type kindError struct {
	err  error
	kind error
}

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.err, e.kind} }

// engineErr wraps an engine error with what was being done, mapping "no such
// …" to sdk.ErrNotFound and a refused connection to a sentence a user can act
// on.
func engineErr(c *client.Client, op string, err error) error {
	if err == nil {
		return nil
	}
	switch {
	case cerrdefs.IsNotFound(err):
		return &kindError{err: fmt.Errorf("%s: %w", op, err), kind: sdk.ErrNotFound}
	case client.IsErrConnectionFailed(err) && c != nil:
		return fmt.Errorf("%s: cannot reach the Docker Engine at %s: %w", op, c.DaemonHost(), err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// lineError presents an error on one line (engine and build errors can span
// several) while keeping it testable with errors.Is.
type lineError struct{ err error }

func (e *lineError) Error() string { return oneLine(e.err.Error()) }
func (e *lineError) Unwrap() error { return e.err }

// finish is applied to every error a Backend method returns.
func finish(err error) error {
	if err == nil || !strings.ContainsAny(err.Error(), "\r\n") {
		return err
	}
	return &lineError{err}
}

// oneLine keeps an engine message to the one line a user sees.
func oneLine(s string) string { return enginestream.OneLine(s) }

func isNotFound(err error) bool {
	return cerrdefs.IsNotFound(err) || errors.Is(err, sdk.ErrNotFound)
}
