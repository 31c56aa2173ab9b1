package sdk

import (
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var (
	// ErrNotSupported is returned for an operation the backend does not offer.
	// It travels to the core as gRPC Unimplemented.
	ErrNotSupported = errors.New("not supported by this backend")
	// ErrNotFound is returned when a bottle, path or image does not exist. It
	// travels to the core as gRPC NotFound.
	ErrNotFound = errors.New("not found")
)

// IsNotSupported reports whether err says the backend lacks the operation.
func IsNotSupported(err error) bool { return errors.Is(err, ErrNotSupported) }

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
