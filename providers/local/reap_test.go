package local

import (
	"bufio"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// stallWriter accepts writes until stall is closed, then blocks them until
// release is closed.
type stallWriter struct{ stall, release chan struct{} }

func (w *stallWriter) Write(p []byte) (int, error) {
	select {
	case <-w.stall:
		<-w.release
	default:
	}
	return len(p), nil
}

// A command whose leader has exited while a background process of its group
// still writes its output is not done: the sandbox's agent keeps the leader
// unreaped until the output ends, so the group's id cannot pass to another
// process while the command can still be signalled, and Signal still reaches
// the group. Meanwhile the agent goes on reaping the sandbox's other exited
// processes.
func TestLeaderHeldUntilItsOutputEnds(t *testing.T) {
	t.Parallel()
	sb := create(t, newIsolated(t), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	out := &stallWriter{stall: make(chan struct{}), release: make(chan struct{})}
	errR, errW := io.Pipe()
	p, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"sh", "-c", "yes held & echo $$ >&2"}, Stdout: out, Stderr: errW})
	require.NoError(t, err)
	leader, err := bufio.NewReader(errR).ReadString('\n')
	require.NoError(t, err)
	leader = strings.TrimSpace(leader)
	go io.Copy(io.Discard, errR)
	close(out.stall) // the output backs up: its copy never idles out

	state := func(pid string) string {
		st, o, _ := sh(t, sb, "cat /proc/"+pid+"/stat 2>/dev/null || echo gone")
		require.Equal(t, 0, st.Code)
		if o == "gone\n" {
			return "gone"
		}
		i := strings.LastIndexByte(o, ')')
		require.Positive(t, i, o)
		return strings.Fields(o[i+1:])[0]
	}
	deadline := time.Now().Add(time.Minute)
	for state(leader) != "Z" {
		require.True(t, time.Now().Before(deadline), "the leader %s did not become a zombie (state %s): it was reaped while its output was still being copied", leader, state(leader))
		time.Sleep(20 * time.Millisecond)
	}

	// An orphan that exits meanwhile is reaped all the same, though the
	// held leader is a waitable child of the agent too.
	st, _, _ := sh(t, sb, "(sleep 0.1; exit 0) & exit 0")
	require.Equal(t, 0, st.Code)
	zombies := func() string {
		_, o, _ := sh(t, sb, `for f in /proc/[0-9]*/stat; do read -r l < "$f" 2>/dev/null || continue; case "${l##*) }" in Z*) echo "${f#/proc/}";; esac; done`)
		return strings.Join(strings.Fields(strings.ReplaceAll(o, "/stat", "")), " ")
	}
	for z := zombies(); z != leader; z = zombies() {
		require.True(t, time.Now().Before(deadline), "zombies %q, want only the held leader %s", z, leader)
		time.Sleep(20 * time.Millisecond)
	}

	require.NoError(t, p.Signal(ctx, sandbox.SIGKILL), "Signal after the leader exited")
	close(out.release)
	status, err := p.Wait(ctx)
	require.NoError(t, err)
	assert.Equal(t, 0, status.Code, "the leader's own status")
	assert.Equal(t, "gone", state(leader), "the leader is reaped by the time Wait returns")
	_, o, _ := sh(t, sb, `for f in /proc/[0-9]*/comm; do read -r c < "$f" 2>/dev/null && [ "$c" = yes ] && echo "$f"; done; true`)
	assert.Empty(t, o, "Signal did not reach the leader's group")
}
