package cloudflare

import (
	"errors"
	"io"
	"net/http"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

const providerName = "cloudflare"

// kindOf maps an error of the Client to the contract's error kinds: the
// bridge's codes first, its HTTP status next; anything else (a transport
// failure) is ErrUnavailable.
func kindOf(err error) error {
	var ae *APIError
	var ve *VersionError
	switch {
	case errors.As(err, &ve):
		return sandbox.ErrNotSupported
	case errors.Is(err, ErrTooLarge):
		return sandbox.ErrResourceExhausted
	case errors.As(err, &ae):
		return ae.kind()
	}
	return sandbox.ErrUnavailable
}

func (e *APIError) kind() error {
	switch e.Code {
	case CodeWorkspaceReadNotFound:
		return sandbox.ErrNotFound
	case CodeUnauthorized:
		return sandbox.ErrPermissionDenied
	case CodePayloadTooLarge, CodeCapacityExceeded:
		return sandbox.ErrResourceExhausted
	case CodeInvalidRequest:
		if e.Status == http.StatusForbidden {
			// A path or cwd outside /workspace.
			return sandbox.ErrPermissionDenied
		}
		return sandbox.ErrInvalidArgument
	case CodeExecError, CodeExecTransportError, CodePoolError, CodeSessionError, CodeTunnelError,
		CodeWorkspaceArchiveReadError, CodeWorkspaceArchiveWriteErr, CodeMountError, CodeUnmountError:
		return sandbox.ErrUnavailable
	}
	switch {
	case e.Status == http.StatusNotFound:
		return sandbox.ErrNotFound
	case e.Status == http.StatusBadRequest:
		return sandbox.ErrInvalidArgument
	case e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden:
		return sandbox.ErrPermissionDenied
	case e.Status == http.StatusRequestEntityTooLarge || e.Status == http.StatusTooManyRequests:
		return sandbox.ErrResourceExhausted
	case e.Status == http.StatusRequestTimeout || e.Status == http.StatusGatewayTimeout:
		return sandbox.ErrTimeout
	}
	return sandbox.ErrUnavailable
}

// wrap turns a Client error into a *sandbox.Error naming the sandbox and the
// operation. nil, context errors and io.EOF are returned as they are.
func wrap(id, op string, err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	var se *sandbox.Error
	if errors.As(err, &se) {
		return err
	}
	return sandbox.NewError(providerName, id, op, kindOf(err), err)
}

// isCode reports whether err is the bridge's error with the given code.
func isCode(err error, code string) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Code == code
}
