package driverutil_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver/driverutil"
)

func TestKindOfMapsOperatingSystemErrors(t *testing.T) {
	dir := t.TempDir()
	_, errMissing := os.Open(filepath.Join(dir, "missing"))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "file"), nil, 0o644))
	_, errNotDir := os.Open(filepath.Join(dir, "file", "below"))
	errExist := os.Mkdir(dir, 0o755)
	require.NoError(t, os.Mkdir(filepath.Join(dir, "full"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "full", "x"), nil, 0o644))
	errNotEmpty := os.Remove(filepath.Join(dir, "full"))

	for _, tc := range []struct {
		err  error
		want error
	}{
		{errMissing, sandbox.ErrNotFound},
		{errNotDir, sandbox.ErrNotFound},
		{errExist, sandbox.ErrAlreadyExists},
		{errNotEmpty, sandbox.ErrInvalidArgument},
		{&fs.PathError{Op: "open", Path: "x", Err: syscall.EACCES}, sandbox.ErrPermissionDenied},
		{&fs.PathError{Op: "write", Path: "x", Err: syscall.EROFS}, sandbox.ErrPermissionDenied},
		{&fs.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC}, sandbox.ErrResourceExhausted},
		{&fs.PathError{Op: "open", Path: "x", Err: syscall.EISDIR}, sandbox.ErrInvalidArgument},
		{&os.LinkError{Op: "rename", Old: "a", New: "b", Err: syscall.EXDEV}, sandbox.ErrInvalidArgument},
		{fmt.Errorf("wrapped: %w", syscall.ETIMEDOUT), sandbox.ErrTimeout},
		{&exec.Error{Name: "x", Err: exec.ErrNotFound}, sandbox.ErrNotFound},
		{fmt.Errorf("already kinded: %w", sandbox.ErrNotSupported), sandbox.ErrNotSupported},
	} {
		assert.Equal(t, tc.want, driverutil.KindOf(tc.err), "KindOf(%v)", tc.err)
	}
	assert.Nil(t, driverutil.KindOf(nil))
	assert.Nil(t, driverutil.KindOf(errors.New("something else")))
}

func TestErrorBuildsASandboxError(t *testing.T) {
	_, cause := os.Open(filepath.Join(t.TempDir(), "missing"))
	err := driverutil.Error("myprov", "sb-1", "read file", cause)
	var e *sandbox.Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, "myprov", e.Provider)
	assert.Equal(t, "sb-1", e.Sandbox)
	assert.Equal(t, "read file", e.Op)
	assert.ErrorIs(t, err, sandbox.ErrNotFound)
	var pe *fs.PathError
	assert.ErrorAs(t, err, &pe, "the native cause stays reachable")

	assert.ErrorIs(t, driverutil.Error("p", "", "op", errors.New("odd")), sandbox.ErrUnavailable)
	assert.Equal(t, context.Canceled, driverutil.Error("p", "", "op", context.Canceled))
	assert.Equal(t, io.EOF, driverutil.Error("p", "", "op", io.EOF))
	assert.NoError(t, driverutil.Error("p", "", "op", nil))
}

func TestSignalNamesAndNumbers(t *testing.T) {
	for name, num := range map[sandbox.Signal]int{
		sandbox.SIGHUP: 1, sandbox.SIGINT: 2, sandbox.SIGQUIT: 3, sandbox.SIGKILL: 9,
		sandbox.SIGUSR1: 10, sandbox.SIGUSR2: 12, sandbox.SIGTERM: 15, "SIGWINCH": 28,
	} {
		n, ok := driverutil.SignalNumber(name)
		assert.True(t, ok, name)
		assert.Equal(t, num, n, name)
		back, ok := driverutil.SignalName(num)
		assert.True(t, ok, num)
		assert.Equal(t, name, back)
		assert.Equal(t, int(syscall.Signal(num)), n, "agrees with this machine's numbering")
	}
	for _, bad := range []sandbox.Signal{"", "TERM", "sigterm", "SIGNOPE"} {
		_, ok := driverutil.SignalNumber(bad)
		assert.False(t, ok, bad)
	}
	for _, bad := range []int{0, -1, 32, 64} {
		_, ok := driverutil.SignalName(bad)
		assert.False(t, ok, bad)
	}
}

func TestExitStatusOfARealProcess(t *testing.T) {
	run := func(script string) syscall.WaitStatus {
		cmd := exec.Command("sh", "-c", script)
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil {
			require.ErrorAs(t, err, &ee)
		}
		return cmd.ProcessState.Sys().(syscall.WaitStatus)
	}
	assert.Equal(t, sandbox.ExitStatus{Code: 0}, driverutil.ExitStatusOf(run("exit 0")))
	assert.Equal(t, sandbox.ExitStatus{Code: 42}, driverutil.ExitStatusOf(run("exit 42")))
	assert.Equal(t, sandbox.ExitStatus{Code: -1, Signal: sandbox.SIGTERM}, driverutil.ExitStatusOf(run("kill -TERM $$")))
	assert.Equal(t, sandbox.ExitStatus{Code: -1, Signal: sandbox.SIGKILL}, driverutil.ExitStatusOf(run("kill -KILL $$")))
}

func TestShellExitCode(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	require.NoError(t, os.WriteFile(plain, []byte("#!/bin/sh\n"), 0o644))
	start := func(name string) error { return exec.Command(name).Start() }

	code, ok := driverutil.ShellExitCode(start("perimeter-no-such-program"))
	assert.True(t, ok)
	assert.Equal(t, 127, code, "not on PATH")
	code, ok = driverutil.ShellExitCode(start(filepath.Join(dir, "missing")))
	assert.True(t, ok)
	assert.Equal(t, 127, code, "missing file")
	code, ok = driverutil.ShellExitCode(start(plain))
	assert.True(t, ok)
	assert.Equal(t, 126, code, "not executable")
	code, ok = driverutil.ShellExitCode(start(dir))
	assert.True(t, ok)
	assert.Equal(t, 126, code, "a directory")

	_, ok = driverutil.ShellExitCode(errors.New("the agent is gone"))
	assert.False(t, ok)
	_, ok = driverutil.ShellExitCode(nil)
	assert.False(t, ok)
}

func TestAwaitEndSaysWhatCameFirst(t *testing.T) {
	open := make(chan struct{})
	closed := make(chan struct{})
	close(closed)

	ctxErr, timedOut := driverutil.AwaitEnd(context.Background(), closed, time.Hour)
	assert.NoError(t, ctxErr)
	assert.False(t, timedOut, "done was closed")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ctxErr, timedOut = driverutil.AwaitEnd(ctx, open, 0)
	assert.ErrorIs(t, ctxErr, context.Canceled)
	assert.False(t, timedOut)

	ctxErr, timedOut = driverutil.AwaitEnd(context.Background(), open, time.Nanosecond)
	assert.NoError(t, ctxErr)
	assert.True(t, timedOut)

	// No timeout: only done or ctx end the wait.
	ctx, cancel = context.WithCancel(context.Background())
	go cancel()
	ctxErr, timedOut = driverutil.AwaitEnd(ctx, open, 0)
	assert.ErrorIs(t, ctxErr, context.Canceled)
	assert.False(t, timedOut)
}
