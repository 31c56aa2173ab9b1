package sdk

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var (
	// ErrNotSupported is returned for an operation the backend does not offer.
	ErrNotSupported = errors.New("not supported by this backend")
	// ErrNotFound is returned when a bottle or image does not exist.
	ErrNotFound = errors.New("not found")
)

// toStatus turns a backend error into a gRPC status error the core can read.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, ErrNotSupported):
		return status.Error(codes.Unimplemented, err.Error())
	case errors.Is(err, ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	}
	if s := status.FromContextError(err); s.Code() != codes.Unknown {
		return s.Err()
	}
	return status.Error(codes.Unknown, err.Error())
}

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
	switch s.Code() {
	case codes.Unimplemented:
		return &RemoteError{Op: op, Code: s.Code(), Msg: s.Message(), base: ErrNotSupported}
	case codes.NotFound:
		return &RemoteError{Op: op, Code: s.Code(), Msg: s.Message(), base: ErrNotFound}
	case codes.Unavailable, codes.Canceled:
		return &RemoteError{Op: op, Code: s.Code(), Msg: s.Message(), base: ErrPluginGone}
	}
	return &RemoteError{Op: op, Code: s.Code(), Msg: s.Message()}
}

// ErrPluginGone is returned when the plugin process went away mid-call.
var ErrPluginGone = errors.New("plugin process exited or stopped answering")

// RemoteError is an error a plugin returned over gRPC.
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
