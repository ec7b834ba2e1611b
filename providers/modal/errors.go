package modal

import (
	"context"
	"errors"
	"strings"

	sdk "github.com/modal-labs/libmodal/modal-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// Messages of the SDK's plain errors that the adapter recognises (v0.7.0,
// sandbox.go ensureTaskID).
const (
	msgNoTask    = "does not have a task ID"
	msgCompleted = "has already completed"
)

// kindOf maps an error of the SDK, or a gRPC status it passes through, to a
// Perimeter error kind. It is the adapter's one mapping; everything else calls
// it through wrap.
func kindOf(err error) error {
	var (
		notFound    sdk.NotFoundError
		exists      sdk.AlreadyExistsError
		invalid     sdk.InvalidError
		sbTimeout   sdk.SandboxTimeoutError
		execTimeout sdk.ExecTimeoutError
		closed      sdk.ClientClosedError
		internal    sdk.InternalFailure
		remote      sdk.RemoteError
		execution   sdk.ExecutionError
	)
	switch {
	case errors.As(err, &notFound):
		return sandbox.ErrNotFound
	case errors.As(err, &exists):
		return sandbox.ErrAlreadyExists
	case errors.As(err, &invalid):
		return sandbox.ErrInvalidArgument
	case errors.As(err, &sbTimeout), errors.As(err, &execTimeout):
		return sandbox.ErrTimeout
	case errors.As(err, &closed):
		return sandbox.ErrTerminated
	case errors.As(err, &internal), errors.As(err, &remote), errors.As(err, &execution):
		return sandbox.ErrUnavailable
	}
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
		switch st.Code() {
		case codes.NotFound:
			return sandbox.ErrNotFound
		case codes.AlreadyExists:
			return sandbox.ErrAlreadyExists
		case codes.InvalidArgument, codes.OutOfRange:
			return sandbox.ErrInvalidArgument
		case codes.FailedPrecondition:
			// Modal answers FailedPrecondition for operations on a task
			// that has finished.
			return sandbox.ErrTerminated
		case codes.PermissionDenied, codes.Unauthenticated:
			return sandbox.ErrPermissionDenied
		case codes.ResourceExhausted:
			return sandbox.ErrResourceExhausted
		case codes.DeadlineExceeded:
			return sandbox.ErrTimeout
		case codes.Unimplemented:
			return sandbox.ErrNotSupported
		default: // Unavailable, Internal, Aborted, Canceled, DataLoss
			return sandbox.ErrUnavailable
		}
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, msgCompleted):
		return sandbox.ErrTerminated
	case strings.Contains(msg, msgNoTask):
		return sandbox.ErrUnavailable
	case strings.Contains(msg, "missing token_id or token_secret"):
		return sandbox.ErrPermissionDenied
	}
	return sandbox.ErrUnavailable
}

// wrap returns err as a Perimeter error of the provider for op on sandbox id.
// Context errors pass through; so does a gRPC Canceled or DeadlineExceeded
// status caused by ctx ending, which is reported as ctx's own error.
func wrap(ctx context.Context, id, op string, err error) error {
	if err == nil {
		return nil
	}
	if ctx != nil && ctx.Err() != nil {
		if c := status.Code(err); c == codes.Canceled || c == codes.DeadlineExceeded || errors.Is(err, ctx.Err()) {
			return ctx.Err()
		}
	}
	var pe *sandbox.Error
	if errors.As(err, &pe) {
		return err
	}
	return sandbox.NewError(Name, id, op, kindOf(err), err)
}
