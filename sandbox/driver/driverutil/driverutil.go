// Package driverutil holds the small pieces every provider author otherwise
// writes again: mapping operating-system errors to the contract's error
// kinds, translating signal names to and from Linux signal numbers, turning a
// wait status or a failed exec into an [sandbox.ExitStatus] (126 and 127 as a
// shell reports them), and building a *sandbox.Error.
//
// It sits beside package driver rather than in it because it builds
// package sandbox's error type, which package driver does not import; the
// portable layer does not use it, so nothing a host links depends on it.
//
// Signal numbers are Linux's on every platform: they are what a Linux
// sandbox's kernel, agent or API expects, whatever machine runs the driver.
package driverutil

import (
	"context"
	"errors"
	"io/fs"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// KindOf maps an operating-system error (an *fs.PathError, an *os.LinkError,
// a syscall.Errno, an *exec.Error and whatever wraps them) to the error kind
// a driver must report: a missing file or a missing parent directory is
// sandbox.ErrNotFound; an existing one, sandbox.ErrAlreadyExists; a
// permission or read-only failure, sandbox.ErrPermissionDenied; a directory
// where a file is expected, a non-empty directory, a loop of links, a name
// too long or a cross-device rename, sandbox.ErrInvalidArgument; a full disk
// or file table, sandbox.ErrResourceExhausted; a timed-out operation,
// sandbox.ErrTimeout. An error that already carries a kind keeps it. Anything
// else, nil included, is nil: the caller decides (sandbox.NewError makes it
// sandbox.ErrUnavailable).
func KindOf(err error) error {
	if err == nil {
		return nil
	}
	if k := sandbox.KindOf(err); k != nil {
		return k
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.ENOENT, syscall.ENOTDIR, syscall.ESRCH:
			return sandbox.ErrNotFound
		case syscall.EEXIST:
			return sandbox.ErrAlreadyExists
		case syscall.EISDIR, syscall.ENOTEMPTY, syscall.EINVAL, syscall.ELOOP, syscall.ENAMETOOLONG, syscall.EXDEV, syscall.EBADF:
			return sandbox.ErrInvalidArgument
		case syscall.EROFS, syscall.EACCES, syscall.EPERM:
			return sandbox.ErrPermissionDenied
		case syscall.ENOSPC, syscall.EDQUOT, syscall.EMFILE, syscall.ENFILE, syscall.ENOMEM, syscall.EAGAIN:
			return sandbox.ErrResourceExhausted
		case syscall.ETIMEDOUT:
			return sandbox.ErrTimeout
		case syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.EPIPE, syscall.EHOSTUNREACH, syscall.ENETUNREACH:
			return sandbox.ErrUnavailable
		}
	}
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, exec.ErrNotFound):
		return sandbox.ErrNotFound
	case errors.Is(err, fs.ErrExist):
		return sandbox.ErrAlreadyExists
	case errors.Is(err, fs.ErrPermission):
		return sandbox.ErrPermissionDenied
	case strings.Contains(err.Error(), "path escapes from parent"):
		// os.Root's refusal to follow a name out of its directory.
		return sandbox.ErrPermissionDenied
	}
	return nil
}

// Error returns err as a *sandbox.Error of the kind [KindOf] gives it, naming
// provider, sandbox (empty for provider-level operations) and op. Context
// errors and io.EOF are returned as they are, and an err that is already a
// *sandbox.Error is kept; an err of no known kind becomes
// sandbox.ErrUnavailable. A nil err is nil.
func Error(provider, sandboxID, op string, err error) error {
	if err == nil {
		return nil
	}
	return sandbox.NewError(provider, sandboxID, op, KindOf(err), err)
}

// signals is Linux's numbering of the signals a driver may see.
var signals = [...]sandbox.Signal{
	1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT",
	7: "SIGBUS", 8: "SIGFPE", 9: "SIGKILL", 10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2",
	13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM", 16: "SIGSTKFLT", 17: "SIGCHLD", 18: "SIGCONT",
	19: "SIGSTOP", 20: "SIGTSTP", 21: "SIGTTIN", 22: "SIGTTOU", 23: "SIGURG", 24: "SIGXCPU",
	25: "SIGXFSZ", 26: "SIGVTALRM", 27: "SIGPROF", 28: "SIGWINCH", 29: "SIGIO", 30: "SIGPWR",
	31: "SIGSYS",
}

// SignalNumber returns the Linux number of sig ("SIGTERM" is 15), and false
// for a name it does not know. The name must be spelled as the Signal
// constants are: upper case, with the "SIG" prefix.
func SignalNumber(sig sandbox.Signal) (int, bool) {
	if sig == "" {
		return 0, false
	}
	for n, s := range signals {
		if s == sig {
			return n, true
		}
	}
	return 0, false
}

// SignalName returns the name of the Linux signal number n (15 is
// "SIGTERM"), and false for a number outside 1–31. Real-time signals have
// no portable name.
func SignalName(n int) (sandbox.Signal, bool) {
	if n <= 0 || n >= len(signals) {
		return "", false
	}
	return signals[n], true
}

// ExitStatusOf returns the ExitStatus a Linux wait status describes: the
// exit code of a process that exited, or Code -1 and the signal's name for
// one a signal killed (the signal's number, as "SIG34", when it has no
// name). It does not set TimedOut or OOMKilled, which only the driver
// knows.
func ExitStatusOf(ws syscall.WaitStatus) sandbox.ExitStatus {
	if ws.Signaled() {
		n := int(ws.Signal())
		name, ok := SignalName(n)
		if !ok {
			name = sandbox.Signal("SIG" + strconv.Itoa(n))
		}
		return sandbox.ExitStatus{Code: -1, Signal: name}
	}
	return sandbox.ExitStatus{Code: ws.ExitStatus()}
}

// ShellExitCode returns the code a shell reports for a command that could
// not be started because of err: 127 when the program does not exist (not
// on PATH, or a missing file or interpreter), 126 when it exists but cannot
// be executed (no execute permission, a directory, not an executable
// format). ok is false when err is neither, such as a missing working
// directory or a resource limit: that is a failure of the sandbox, to be
// returned as an error.
func ShellExitCode(err error) (code int, ok bool) {
	if err == nil {
		return 0, false
	}
	if errors.Is(err, exec.ErrNotFound) {
		return 127, true
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.ENOENT, syscall.ENOTDIR:
			return 127, true
		case syscall.EACCES, syscall.EPERM, syscall.ENOEXEC, syscall.EISDIR:
			return 126, true
		}
	}
	return 0, false
}

// AwaitEnd waits until done is closed, ctx ends or timeout (when positive)
// passes, whichever comes first: the loop every driver's process runs to
// enforce Start's context and [sandbox.Cmd.Timeout]. It returns ctx's error
// when ctx ended first, timedOut when the timeout passed first, and neither
// when done was closed first. The caller records the answer and kills the
// command unless done was closed.
func AwaitEnd(ctx context.Context, done <-chan struct{}, timeout time.Duration) (ctxErr error, timedOut bool) {
	var timer <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-done:
		return nil, false
	case <-ctx.Done():
		return ctx.Err(), false
	case <-timer:
		return nil, true
	}
}
