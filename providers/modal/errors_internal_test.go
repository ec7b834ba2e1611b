package modal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	sdk "github.com/modal-labs/libmodal/modal-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

func TestKindOfMapsEveryNativeError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		kind error
	}{
		{sdk.NotFoundError{Exception: "x"}, sandbox.ErrNotFound},
		{sdk.AlreadyExistsError{Exception: "x"}, sandbox.ErrAlreadyExists},
		{sdk.InvalidError{Exception: "x"}, sandbox.ErrInvalidArgument},
		{sdk.SandboxTimeoutError{Exception: "x"}, sandbox.ErrTimeout},
		{sdk.ExecTimeoutError{Exception: "x"}, sandbox.ErrTimeout},
		{sdk.ClientClosedError{Exception: "x"}, sandbox.ErrTerminated},
		{sdk.InternalFailure{Exception: "x"}, sandbox.ErrUnavailable},
		{sdk.RemoteError{Exception: "x"}, sandbox.ErrUnavailable},
		{fmt.Errorf("wrapped: %w", sdk.NotFoundError{Exception: "x"}), sandbox.ErrNotFound},
		{status.Error(codes.NotFound, "x"), sandbox.ErrNotFound},
		{status.Error(codes.AlreadyExists, "x"), sandbox.ErrAlreadyExists},
		{status.Error(codes.InvalidArgument, "x"), sandbox.ErrInvalidArgument},
		{status.Error(codes.OutOfRange, "x"), sandbox.ErrInvalidArgument},
		{status.Error(codes.FailedPrecondition, "x"), sandbox.ErrTerminated},
		{status.Error(codes.PermissionDenied, "x"), sandbox.ErrPermissionDenied},
		{status.Error(codes.Unauthenticated, "x"), sandbox.ErrPermissionDenied},
		{status.Error(codes.ResourceExhausted, "x"), sandbox.ErrResourceExhausted},
		{status.Error(codes.DeadlineExceeded, "x"), sandbox.ErrTimeout},
		{status.Error(codes.Unimplemented, "x"), sandbox.ErrNotSupported},
		{status.Error(codes.Unavailable, "x"), sandbox.ErrUnavailable},
		{status.Error(codes.Internal, "x"), sandbox.ErrUnavailable},
		{fmt.Errorf("failed: %w", status.Error(codes.NotFound, "x")), sandbox.ErrNotFound},
		{errors.New("Sandbox sb-1 does not have a task ID, it may not be running"), sandbox.ErrUnavailable},
		{errors.New("Sandbox sb-1 has already completed with result: x"), sandbox.ErrTerminated},
		{errors.New("missing token_id or token_secret, please set ..."), sandbox.ErrPermissionDenied},
		{errors.New("something else"), sandbox.ErrUnavailable},
	} {
		if got := kindOf(tc.err); got != tc.kind {
			t.Errorf("kindOf(%v) = %v, want %v", tc.err, got, tc.kind)
		}
	}
}

func TestWrapPassesContextErrorsThrough(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := wrap(ctx, "sb-1", "exec", status.Error(codes.Canceled, "context canceled")); err != context.Canceled {
		t.Errorf("wrap of a Canceled status after ctx ended = %v, want context.Canceled", err)
	}
	if err := wrap(context.Background(), "sb-1", "exec", context.DeadlineExceeded); err != context.DeadlineExceeded {
		t.Errorf("wrap(DeadlineExceeded) = %v", err)
	}
	if err := wrap(context.Background(), "sb-1", "read file", io.EOF); err != io.EOF {
		t.Errorf("wrap(io.EOF) = %v", err)
	}
	err := wrap(context.Background(), "sb-1", "exec", sdk.NotFoundError{Exception: "gone"})
	var pe *sandbox.Error
	if !errors.As(err, &pe) || pe.Provider != Name || pe.Sandbox != "sb-1" || pe.Op != "exec" {
		t.Errorf("wrap = %#v, want a *sandbox.Error naming provider, sandbox and op", err)
	}
}
