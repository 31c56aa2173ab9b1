package host

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// ErrPluginGone is returned when the plugin process went away mid-call.
var ErrPluginGone = errors.New("plugin process exited or stopped answering")

// RemoteError is an error a plugin returned over gRPC. It wraps
// sdk.ErrNotSupported, sdk.ErrNotFound or ErrPluginGone where its code
// says so, for errors.Is.
type RemoteError struct {
	Op   string
	Code codes.Code
	Msg  string
	base error
}

func (e *RemoteError) Error() string {
	if e.base == ErrPluginGone {
		return fmt.Sprintf("%s: %v (%s)", e.Op, ErrPluginGone, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Op, e.Msg)
}

func (e *RemoteError) Unwrap() error { return e.base }

// fromStatus turns a gRPC error back into an error a caller can test with
// errors.Is, keeping the plugin's message.
func fromStatus(op string, err error) error {
	if err == nil {
		return nil
	}
	s, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", op, err)
	}
	re := &RemoteError{Op: op, Code: s.Code(), Msg: s.Message()}
	switch s.Code() {
	case codes.Unimplemented:
		re.base = sdk.ErrNotSupported
	case codes.NotFound:
		re.base = sdk.ErrNotFound
	case codes.Unavailable, codes.Canceled:
		re.base = ErrPluginGone
	}
	return re
}
