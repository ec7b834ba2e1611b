package local

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// startReportingPid starts script, which writes its own pid ($$) as its
// first line on fd 2 (to = 2) or 1 (to = 1), and returns the process and
// that pid. The rest of the output is discarded.
func startReportingPid(t *testing.T, ctx context.Context, sb testSandbox, script string, to int) (*sandbox.Process, int) {
	t.Helper()
	r, w := io.Pipe()
	t.Cleanup(func() { r.Close() })
	cmd := &sandbox.Cmd{Args: []string{"sh", "-c", script}, Stdout: io.Discard, Stderr: io.Discard}
	if to == 2 {
		cmd.Stderr = w
	} else {
		cmd.Stdout = w
	}
	p, err := sb.Start(ctx, cmd)
	require.NoError(t, err)
	br := bufio.NewReader(r)
	line, err := br.ReadString('\n')
	require.NoError(t, err, script)
	go io.Copy(io.Discard, br)
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	require.NoError(t, err, "%q", line)
	return p, pid
}

// A command whose leader has exited but whose group goes on writing its
// output is not done: Signal still reaches the group.
func TestSignalReachesTheGroupAfterItsLeader(t *testing.T) {
	t.Parallel()
	sb := create(t, newIsolated(t), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	p, leader := startReportingPid(t, ctx, sb, `(while :; do echo tick; sleep 0.1; done) & echo $$ >&2`, 2)
	waitReaped(t, sb, leader)
	require.NoError(t, p.Signal(ctx, sandbox.SIGKILL))
	st, err := p.Wait(ctx)
	require.NoError(t, err, "the group's output did not end: Signal after the leader exited did not reach it")
	assert.Equal(t, 0, st.Code, "the leader's own status")
}

// Once a command's leader has been reaped and its group has emptied, the
// group's number is free: a new command can get it, and lead a group of
// that number. Signal to the first command must not reach it. The test
// gives the number to the new command on purpose (through the sandbox's
// pid namespace's ns_last_pid) while the first command is still running
// as far as the host knows: its leader is gone, its output still flows
// from a process in a session of its own.
func TestSignalSparesAGroupThatTookTheNumber(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: it chooses the sandbox's next pid through ns_last_pid")
	}
	if !pidfdGroupSignals() {
		t.Skip("the kernel lacks PIDFD_SIGNAL_PROCESS_GROUP (Linux 6.9): the agent signals a group by its number, which after the leader is reaped is the group's only while a member is left")
	}
	nsenter, err := exec.LookPath("nsenter")
	require.NoError(t, err, "nsenter (util-linux) is needed")
	t.Parallel()
	sb := create(t, newIsolated(t), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	first, leader := startReportingPid(t, ctx, sb, `setsid sh -c 'while :; do echo tick; sleep 0.1; done' & echo $$ >&2`, 2)
	waitReaped(t, sb, leader)

	// Start commands until one gets the leader's number (the agent's own
	// threads may take the number first).
	var second *sandbox.Process
	for attempt := 1; second == nil; attempt++ {
		require.LessOrEqual(t, attempt, 20, "no command got pid %d", leader)
		out, err := exec.Command(nsenter, "--target", strconv.Itoa(sb.d.iso.initPID), "--pid", "--",
			"sh", "-c", "echo "+strconv.Itoa(leader-1)+" > /proc/sys/kernel/ns_last_pid").CombinedOutput()
		require.NoError(t, err, "setting the sandbox's last pid: %s", out)
		p, pid := startReportingPid(t, ctx, sb, `echo $$; exec sleep 60`, 1)
		if pid == leader {
			second = p
			break
		}
		require.NoError(t, p.Signal(ctx, sandbox.SIGKILL))
		_, err = p.Wait(ctx)
		require.NoError(t, err)
	}

	require.NoError(t, first.Signal(ctx, sandbox.SIGKILL))
	require.NoError(t, second.Signal(ctx, sandbox.SIGTERM))
	st, err := second.Wait(ctx)
	require.NoError(t, err)
	assert.Equal(t, sandbox.SIGTERM, st.Signal, "the second command (pid %d) was killed by the first's Signal: %v", leader, st)
}

// waitReaped waits until pid is no longer a process in sb.
func waitReaped(t *testing.T, sb testSandbox, pid int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		_, out, _ := sh(t, sb, "[ -e /proc/"+strconv.Itoa(pid)+" ] && echo here || echo gone")
		if out == "gone\n" {
			return
		}
		require.True(t, time.Now().Before(deadline), "pid %d was not reaped", pid)
		time.Sleep(20 * time.Millisecond)
	}
}
