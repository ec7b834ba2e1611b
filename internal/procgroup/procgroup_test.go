//go:build linux

package procgroup_test

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/internal/procgroup"
)

func start(t *testing.T, script string) (*exec.Cmd, *bufio.Reader) {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	return cmd, bufio.NewReader(out)
}

// state returns the state letter of pid in /proc, or "" if it is gone.
func state(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])[0]
}

func TestLeaderStaysUnreapedUntilReap(t *testing.T) {
	// The leader exits and leaves a child in its group.
	cmd, out := start(t, `sleep 60 & echo $!; exit 3`)
	line, err := out.ReadString('\n')
	require.NoError(t, err)
	child, err := strconv.Atoi(strings.TrimSpace(line))
	require.NoError(t, err)
	l := procgroup.Watch(cmd)
	<-l.Exited()
	require.False(t, l.Signaled())
	require.Equal(t, "Z", state(cmd.Process.Pid), "the exited leader is kept as a zombie, holding the group's id")

	// The group is still signalled through the exited leader's id.
	require.NoError(t, l.Signal(syscall.SIGKILL))
	require.Eventually(t, func() bool { s := state(child); return s == "" || s == "Z" }, time.Minute, 10*time.Millisecond)

	var ee *exec.ExitError
	require.True(t, errors.As(l.Reap(), &ee))
	require.Equal(t, 3, ee.ExitCode())
	require.Equal(t, "", state(cmd.Process.Pid), "reaped")
	require.ErrorIs(t, l.Signal(syscall.SIGKILL), os.ErrProcessDone, "nothing is sent once the id may be another's")
}

func TestSignaled(t *testing.T) {
	cmd, _ := start(t, `kill -9 $$`)
	l := procgroup.Watch(cmd)
	require.True(t, l.Signaled())
	require.Error(t, l.Reap())

	cmd, _ = start(t, `exit 0`)
	l = procgroup.Watch(cmd)
	require.False(t, l.Signaled())
	require.NoError(t, l.Reap())
}

func TestSignalRunning(t *testing.T) {
	cmd, out := start(t, `trap 'echo got; exit 0' TERM; echo ready; while :; do sleep 0.01; done`)
	l := procgroup.Watch(cmd)
	line, err := out.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "ready\n", line)
	require.NoError(t, l.Signal(syscall.SIGTERM))
	line, err = out.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "got\n", line)
	require.NoError(t, l.Reap())
	require.False(t, l.Signaled())
}

func TestKillIf(t *testing.T) {
	cmd, _ := start(t, `sleep 60`)
	l := procgroup.Watch(cmd)
	pid := cmd.Process.Pid
	require.False(t, procgroup.KillIf(pid, func() bool { return false }), "not matched, not sent")
	select {
	case <-l.Exited():
		t.Fatal("killed though not matched")
	case <-time.After(100 * time.Millisecond):
	}
	require.True(t, procgroup.KillIf(pid, func() bool { return state(pid) != "" }))
	require.True(t, l.Signaled())
	require.Error(t, l.Reap())
	require.False(t, procgroup.KillIf(pid, func() bool { return true }), "a pid no process has")
}
