package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Error kinds. Every error a provider returns for a failed operation matches
// exactly one of them with errors.Is (context errors and io.EOF excepted, which
// are returned as they are).
var (
	// ErrNotFound: the sandbox, file or process does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: the thing to create exists.
	ErrAlreadyExists = errors.New("already exists")
	// ErrInvalidArgument: the request is malformed, such as an empty argv or a
	// file name with a ".." element.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNotSupported: the provider does not have the ability asked for.
	ErrNotSupported = errors.New("not supported")
	// ErrTimeout: the provider gave up waiting for the operation.
	ErrTimeout = errors.New("timeout")
	// ErrPermissionDenied: the credentials or the sandbox's policy forbid it.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrResourceExhausted: a quota or limit was reached.
	ErrResourceExhausted = errors.New("resource exhausted")
	// ErrUnavailable: the provider could not be reached or is overloaded; the
	// operation may succeed if retried.
	ErrUnavailable = errors.New("unavailable")
	// ErrTerminated: the sandbox has been terminated.
	ErrTerminated = errors.New("sandbox terminated")
	// ErrClosed: the Provider was closed; every method of it and of the
	// sandboxes and processes it returned fails with this kind afterwards.
	// Sandboxes keep running: open the provider again to reach them.
	ErrClosed = errors.New("provider closed")
)

var kinds = []error{
	ErrNotFound, ErrAlreadyExists, ErrInvalidArgument, ErrNotSupported, ErrTimeout,
	ErrPermissionDenied, ErrResourceExhausted, ErrUnavailable, ErrTerminated, ErrClosed,
}

// Error is a failed operation of a provider. It matches its Kind with errors.Is
// and its native cause with errors.As.
type Error struct {
	Provider string // such as "local" or "modal"
	Sandbox  string // the sandbox's ID; empty for provider-level operations
	Op       string // the operation, such as "exec" or "read file"
	Kind     error  // one of the Err* kinds
	Err      error  // the native cause; may be nil
}

// Error reads as "local: sandbox sb-1: read file: not found: open x: no such file".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Provider)
	if e.Sandbox != "" {
		b.WriteString(": sandbox ")
		b.WriteString(e.Sandbox)
	}
	if e.Op != "" {
		b.WriteString(": ")
		b.WriteString(e.Op)
	}
	if e.Kind != nil {
		b.WriteString(": ")
		b.WriteString(e.Kind.Error())
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the kind and the native cause.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// NewError returns an *Error for a failed operation, with cause as its native
// error. cause is returned unchanged when it is io.EOF, matches
// context.Canceled or context.DeadlineExceeded, or (with a nil kind) already
// contains an *Error. A nil kind is otherwise taken from the kind cause
// matches, and is ErrUnavailable when it matches none.
func NewError(provider, sandboxID, op string, kind, cause error) error {
	if cause != nil {
		if passThrough(cause) {
			return cause
		}
		var e *Error
		if errors.As(cause, &e) && kind == nil {
			return cause
		}
	}
	if kind == nil {
		kind = KindOf(cause)
		if kind == nil {
			kind = ErrUnavailable
		}
	}
	return &Error{Provider: provider, Sandbox: sandboxID, Op: op, Kind: kind, Err: cause}
}

// Errorf returns an *Error of kind whose native cause is
// fmt.Errorf(format, args...) (so %w wraps). Unlike [NewError] it never passes
// a cause through: the kind given is the kind returned, and a nil kind is
// ErrUnavailable.
func Errorf(provider, sandboxID, op string, kind error, format string, args ...any) error {
	if kind == nil {
		kind = ErrUnavailable
	}
	return &Error{Provider: provider, Sandbox: sandboxID, Op: op, Kind: kind, Err: fmt.Errorf(format, args...)}
}

func passThrough(err error) bool {
	return err == io.EOF || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// KindOf returns the kind err matches, or nil if it matches none.
func KindOf(err error) error {
	if err == nil {
		return nil
	}
	for _, k := range kinds {
		if errors.Is(err, k) {
			return k
		}
	}
	return nil
}
