package local

import (
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// waitFor reaps a command and delivers its status both ways: through the
// netpoller on a pidfd, and with a blocking wait4 where there is none.
func TestWaitForReapsWithAndWithoutPidfd(t *testing.T) {
	a := newAgent(nil, false)
	t.Cleanup(func() { unix.Close(a.devNull) })
	for _, withPidfd := range []bool{true, false} {
		pidfd := -1
		sys := &syscall.SysProcAttr{PidFD: &pidfd}
		pid, err := syscall.ForkExec("/bin/sh", []string{"sh", "-c", "sleep 0.2; exit 3"}, &syscall.ProcAttr{Sys: sys})
		require.NoError(t, err)
		require.GreaterOrEqual(t, pidfd, 0, "no pidfd from CLONE_PIDFD")
		if !withPidfd {
			unix.Close(pidfd)
			pidfd = -1
		}
		ch := make(chan unix.WaitStatus, 1)
		go a.waitFor(pid, pidfd, ch)
		select {
		case ws := <-ch:
			assert.True(t, ws.Exited(), "pidfd %v: status %v", withPidfd, ws)
			assert.Equal(t, 3, ws.ExitStatus(), "pidfd %v", withPidfd)
		case <-time.After(time.Minute):
			t.Fatalf("pidfd %v: the command's status never came", withPidfd)
		}
		// Reaped: no child is left to wait for.
		_, err = unix.Wait4(pid, nil, unix.WNOHANG, nil)
		assert.ErrorIs(t, err, unix.ECHILD, "pidfd %v: the command was not reaped", withPidfd)
	}
}
