package modal_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/providers/modal"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

func run(t *testing.T, sb *sandbox.Sandbox, cmd *sandbox.Cmd) *sandbox.Result {
	t.Helper()
	res, err := sandbox.Run(context.Background(), sb, cmd, &sandbox.RunOptions{OutputLimit: -1})
	require.NoError(t, err)
	return res
}

func TestExecSeparatesStreamsAndReportsExitCode(t *testing.T) {
	sb := create(t, newProvider(t), nil)
	res := run(t, sb, &sandbox.Cmd{Args: []string{"sh", "-c", "echo out; echo err >&2; exit 7"}})
	assert.Equal(t, "out\n", string(res.Stdout), "the wrapper's PID line is not part of stdout")
	assert.Equal(t, "err\n", string(res.Stderr))
	assert.Equal(t, 7, res.Status.Code)
	assert.False(t, res.Status.Success())
}

func TestExecArgvHasNoImplicitShell(t *testing.T) {
	sb := create(t, newProvider(t), nil)
	res := run(t, sb, &sandbox.Cmd{Args: []string{"echo", "$HOME", "a b", "*"}})
	assert.Equal(t, "$HOME a b *\n", string(res.Stdout))
}

func TestExecStdinReachesTheCommand(t *testing.T) {
	sb := create(t, newProvider(t), nil)
	data := make([]byte, 3<<20)
	rand.Read(data)
	var out bytes.Buffer
	res := run(t, sb, &sandbox.Cmd{Args: []string{"cat"}, Stdin: bytes.NewReader(data), Stdout: &out})
	assert.Equal(t, 0, res.Status.Code)
	assert.True(t, bytes.Equal(data, out.Bytes()), "3 MiB of binary stdin comes back unchanged")
}

func TestExecWithoutStdinReadsEOF(t *testing.T) {
	sb := create(t, newProvider(t), nil)
	res := run(t, sb, &sandbox.Cmd{Args: []string{"cat"}})
	assert.Equal(t, 0, res.Status.Code)
	assert.Empty(t, res.Stdout)
}

func TestExecLargeOutput(t *testing.T) {
	sb := create(t, newProvider(t), nil)
	var out bytes.Buffer
	res := run(t, sb, &sandbox.Cmd{Args: []string{"head", "-c", "8000000", "/dev/urandom"}, Stdout: &out})
	assert.Equal(t, 0, res.Status.Code)
	assert.Equal(t, 8000000, out.Len())
}

func TestExecEnvAndDir(t *testing.T) {
	p := newProvider(t)
	sb := create(t, p, &sandbox.Spec{Env: map[string]string{"FROM_SPEC": "s", "BOTH": "spec"}})
	require.NoError(t, sb.MkdirAll(context.Background(), "sub/dir", 0o755))
	res := run(t, sb, &sandbox.Cmd{
		Args: []string{"sh", "-c", `echo "$FROM_SPEC $FROM_CMD $BOTH"; pwd`},
		Env:  map[string]string{"FROM_CMD": "c", "BOTH": "cmd"},
		Dir:  "sub/dir",
	})
	lines := strings.Split(strings.TrimSpace(string(res.Stdout)), "\n")
	require.Len(t, lines, 2)
	assert.Equal(t, "s c cmd", lines[0], "Cmd.Env is added to the spec's and wins")
	assert.True(t, strings.HasSuffix(lines[1], "/sub/dir"), lines[1])
}

func TestExecMissingDirIsNotFound(t *testing.T) {
	sb := create(t, newProvider(t), nil)
	_, err := sb.Start(context.Background(), &sandbox.Cmd{Args: []string{"true"}, Dir: "no/such/dir"})
	assert.ErrorIs(t, err, sandbox.ErrNotFound)
	_, err = sb.Start(context.Background(), &sandbox.Cmd{Args: []string{"true"}, Dir: "../up"})
	assert.ErrorIs(t, err, sandbox.ErrInvalidArgument)
}

func TestExecMissingProgramExits127(t *testing.T) {
	sb := create(t, newProvider(t), nil)
	res := run(t, sb, &sandbox.Cmd{Args: []string{"no-such-program-perimeter"}})
	assert.Equal(t, 127, res.Status.Code)
	require.NoError(t, sb.WriteFile(context.Background(), "noexec", strings.NewReader("x"), 0o644))
	res = run(t, sb, &sandbox.Cmd{Args: []string{"./noexec"}})
	assert.Equal(t, 126, res.Status.Code)
}

func TestExecBadInput(t *testing.T) {
	sb := create(t, newProvider(t), nil)
	ctx := context.Background()
	_, err := sb.Start(ctx, &sandbox.Cmd{})
	assert.ErrorIs(t, err, sandbox.ErrInvalidArgument)
	_, err = sb.Start(ctx, &sandbox.Cmd{Args: []string{"true"}, TTY: &sandbox.TTY{Rows: 24, Cols: 80}})
	assert.ErrorIs(t, err, sandbox.ErrNotSupported)
	_, err = sb.Start(ctx, &sandbox.Cmd{Args: []string{"true"}, Timeout: -time.Second})
	assert.ErrorIs(t, err, sandbox.ErrInvalidArgument)
	_, err = sb.Start(ctx, &sandbox.Cmd{Args: []string{"true"}, Env: map[string]string{"A=B": "x"}})
	assert.ErrorIs(t, err, sandbox.ErrInvalidArgument)
}

func TestExecTimeoutKillsTheTree(t *testing.T) {
	sb := create(t, newProvider(t), nil)
	start := time.Now()
	// The child sleep would keep the output open if it survived.
	res := run(t, sb, &sandbox.Cmd{Args: []string{"sh", "-c", "sleep 30 & sleep 30; echo unreachable"}, Timeout: 300 * time.Millisecond})
	assert.True(t, res.Status.TimedOut, "%+v", res.Status)
	assert.Equal(t, sandbox.SIGKILL, res.Status.Signal)
	assert.Equal(t, -1, res.Status.Code)
	assert.Empty(t, res.Stdout)
	assert.Less(t, time.Since(start), 10*time.Second)
}

func TestCancellingStartContextKillsTheCommand(t *testing.T) {
	sb := create(t, newProvider(t), nil)
	ctx, cancel := context.WithCancel(context.Background())
	pr, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"sleep", "30"}})
	require.NoError(t, err)
	cancel()
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	st, err := pr.Wait(wctx)
	assert.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, -1, st.Code)
	assert.Equal(t, sandbox.SIGKILL, st.Signal)
}

func TestWaitContextBoundsOnlyTheWaiting(t *testing.T) {
	sb := create(t, newProvider(t), nil)
	var out bytes.Buffer
	pr, err := sb.Start(context.Background(), &sandbox.Cmd{Args: []string{"sh", "-c", "sleep 0.3; echo done"}, Stdout: &out})
	require.NoError(t, err)
	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err = pr.Wait(short)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	st, err := pr.Wait(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 0, st.Code)
	assert.Equal(t, "done\n", out.String())
	st2, err2 := pr.Wait(context.Background())
	assert.Equal(t, st, st2, "Wait returns the same result each time")
	assert.Equal(t, err, err2)
}

func TestSignalReachesTheProcessGroup(t *testing.T) {
	sb := create(t, newProvider(t), nil)
	ctx := context.Background()
	pr, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"sleep", "30"}})
	require.NoError(t, err)
	require.NoError(t, pr.Signal(ctx, sandbox.SIGTERM))
	st, err := pr.Wait(ctx)
	require.NoError(t, err)
	assert.Equal(t, sandbox.SIGTERM, st.Signal)
	assert.Equal(t, -1, st.Code)
	assert.NoError(t, pr.Signal(ctx, sandbox.SIGTERM), "signalling an exited process is not an error")
	assert.ErrorIs(t, pr.Signal(ctx, "SIGWHAT"), sandbox.ErrInvalidArgument)
}

func TestSignalHandledByTheCommand(t *testing.T) {
	sb := create(t, newProvider(t), nil)
	ctx := context.Background()
	out := &syncBuffer{}
	pr, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"sh", "-c", `trap 'echo got-usr1; exit 3' USR1; echo ready; while :; do sleep 0.05; done`}, Stdout: out})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "ready") }, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, pr.Signal(ctx, sandbox.SIGUSR1))
	st, err := pr.Wait(ctx)
	require.NoError(t, err)
	assert.Equal(t, 3, st.Code)
	assert.Contains(t, out.String(), "got-usr1")
}

func TestProcessAsReachesTheSDK(t *testing.T) {
	sb := create(t, newProvider(t), nil)
	pr, err := sb.Start(context.Background(), &sandbox.Cmd{Args: []string{"true"}})
	require.NoError(t, err)
	defer pr.Wait(context.Background())
	var x int
	assert.False(t, pr.As(&x))
}

func TestExecAfterTerminate(t *testing.T) {
	sb := create(t, newProvider(t), nil)
	ctx := context.Background()
	pr, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"sleep", "30"}})
	require.NoError(t, err)
	require.NoError(t, sb.Terminate(ctx))
	st, err := pr.Wait(ctx)
	require.NoError(t, err)
	assert.Equal(t, sandbox.SIGKILL, st.Signal, "the command died with the sandbox")
	_, err = sb.Start(ctx, &sandbox.Cmd{Args: []string{"true"}})
	assert.ErrorIs(t, err, sandbox.ErrTerminated)
	assert.NoError(t, sb.Terminate(ctx), "Terminate is idempotent")
}

func TestStdoutWriterErrorDoesNotHang(t *testing.T) {
	sb := create(t, newProvider(t), nil)
	pr, err := sb.Start(context.Background(), &sandbox.Cmd{Args: []string{"head", "-c", "2000000", "/dev/zero"}, Stdout: failingWriter{}})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = pr.Wait(ctx)
	assert.NoError(t, err)
}

type failingWriter struct{}

func (failingWriter) Write(p []byte) (int, error) { return 0, errors.New("disk full") }

var _ io.Writer = failingWriter{}

// syncBuffer is a bytes.Buffer safe to read while a process writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// unsafeWriter fails the test if two Writes overlap.
type unsafeWriter struct {
	t      *testing.T
	active atomic.Int32
	n      atomic.Int64
}

func (u *unsafeWriter) Write(p []byte) (int, error) {
	if u.active.Add(1) != 1 {
		u.t.Error("concurrent Write calls on the writer given as both Stdout and Stderr")
	}
	time.Sleep(time.Microsecond)
	u.n.Add(int64(len(p)))
	u.active.Add(-1)
	return len(p), nil
}

func TestOneWriterForBothStreamsGetsOneWriteAtATime(t *testing.T) {
	sb := create(t, newProvider(t), nil)
	w := &unsafeWriter{t: t}
	pr, err := sb.Start(context.Background(), &sandbox.Cmd{
		Args:   []string{"sh", "-c", "for i in $(seq 200); do echo out$i; echo err$i >&2; done"},
		Stdout: w, Stderr: w,
	})
	require.NoError(t, err)
	st, err := pr.Wait(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 0, st.Code)
	assert.Positive(t, w.n.Load())
}

func TestNoGoroutineOutlivesTheProvider(t *testing.T) {
	before := runtime.NumGoroutine()
	p, err := modal.New(context.Background(), &modal.Options{App: "perimeter-test", Logger: quiet})
	require.NoError(t, err)
	sb, err := p.Create(context.Background(), nil)
	require.NoError(t, err)
	res, err := sandbox.Run(context.Background(), sb, &sandbox.Cmd{Args: []string{"cat"}, Stdin: strings.NewReader("x")}, nil)
	require.NoError(t, err)
	assert.Equal(t, "x", string(res.Stdout))
	r, err := sb.ReadFile(context.Background(), "/etc/hostname")
	if err == nil {
		io.ReadAll(r)
		r.Close()
	}
	require.NoError(t, sb.Terminate(context.Background()))
	require.NoError(t, p.Close())
	// A plain loop: assert.Eventually runs its condition on a goroutine of
	// its own.
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines outlive the provider", n-before)
		buf := make([]byte, 1<<20)
		t.Logf("goroutines: %d before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
	}
}
