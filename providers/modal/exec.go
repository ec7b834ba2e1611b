package modal

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	sdk "github.com/modal-labs/libmodal/modal-go"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

// wrapper starts every command: it changes to the working directory,
// reports its own PID on the first line of stdout (the adapter strips it),
// and execs the argv, so the command keeps that PID and a later "kill" can
// reach it. A missing directory is reported instead of the PID. The shell
// gives "not found" (127) and "not executable" (126) as exit codes.
const wrapper = `d=$1; shift
if ! cd -- "$d" 2>/dev/null; then
  if [ ! -e "$d" ]; then echo "perimeter:nodir"; elif [ ! -d "$d" ]; then echo "perimeter:notdir"; else echo "perimeter:noaccess"; fi
  exit 126
fi
echo "perimeter:pid:$$"
exec "$@"`

// killer delivers a signal to a command's process group, or to the process
// alone where it does not lead a group. A process that is gone is not an
// error.
const killer = `kill -s "$1" -- "-$2" 2>/dev/null || kill -s "$1" -- "$2" 2>/dev/null || true`

// signals are the signals the contract names, with their Linux numbers (for
// the 128+N exit codes the SDK reports).
var signals = map[sandbox.Signal]int{
	sandbox.SIGHUP: 1, sandbox.SIGINT: 2, sandbox.SIGQUIT: 3, sandbox.SIGKILL: 9,
	sandbox.SIGUSR1: 10, sandbox.SIGUSR2: 12, sandbox.SIGTERM: 15,
}

// Start runs cmd in the sandbox through Modal's exec, with stdin, stdout and
// stderr streamed separately, and returns once the command is running.
// cmd.Env reaches the command as an ephemeral Modal Secret. cmd.TTY is an
// error of kind ErrNotSupported (Modal has no terminal size or resize).
func (s *Sandbox) Start(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error) {
	const op = "exec"
	end, err := s.begin(ctx, op)
	if err != nil {
		return nil, err
	}
	defer end()
	if err := s.ready(ctx); err != nil {
		return nil, s.fail(ctx, op, err)
	}
	dir := s.workdir
	if cmd.Dir != "" {
		dir = s.abs(cmd.Dir)
	}
	argv := append([]string{"sh", "-c", wrapper, "perimeter", dir}, cmd.Args...)
	if err := sdk.ValidateExecArgs(argv); err != nil {
		return nil, sandbox.NewError(Name, s.id, op, sandbox.ErrInvalidArgument, err)
	}
	params := &sdk.SandboxExecParams{Env: cmd.Env}
	if cmd.Timeout > 0 {
		// The adapter kills the command when Timeout passes; Modal's own
		// limit, in whole seconds, is the backstop should that fail.
		params.Timeout = (cmd.Timeout + time.Second - 1).Truncate(time.Second) + 5*time.Second
	}
	var cp *sdk.ContainerProcess
	err = retryUnscheduled(ctx, func() error {
		var err error
		cp, err = s.sb.Exec(ctx, argv, params)
		return err
	})
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	pr := &process{
		s: s, cp: cp,
		started: make(chan struct{}),
		done:    make(chan struct{}),
	}
	stdout, stderr := writerOr(cmd.Stdout), writerOr(cmd.Stderr)
	if sameWriter(cmd.Stdout, cmd.Stderr) {
		// As os/exec: one writer for both streams gets one Write at a time.
		w := &lockedWriter{w: cmd.Stdout}
		stdout, stderr = w, w
	}
	pr.outputs.Add(2)
	go pr.copyStdout(stdout)
	go func() {
		defer pr.outputs.Done()
		io.Copy(stderr, cp.Stderr)
		cp.Stderr.Close()
	}()
	if cmd.Stdin != nil {
		go feedStdin(cp.Stdin, cmd.Stdin, pr.done)
	} else if err := cp.Stdin.Close(); err != nil {
		pr.abandon()
		return nil, s.fail(ctx, op, err)
	}

	select {
	case <-pr.started:
	case <-ctx.Done():
		// The command may still start; the watcher kills it then.
	}
	go pr.watch(ctx, cmd.Timeout)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if pr.startErr != nil {
		return nil, pr.startErr
	}
	return pr, nil
}

// sameWriter reports whether a and b are the same comparable writer.
func sameWriter(a, b io.Writer) (same bool) {
	if a == nil || b == nil {
		return false
	}
	defer func() {
		if recover() != nil {
			same = false // not comparable
		}
	}()
	return a == b
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func writerOr(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// feedStdin copies r to the command's stdin and closes it at EOF. It ends
// when r does, or at the first write after the command is done.
func feedStdin(w io.WriteCloser, r io.Reader, done <-chan struct{}) {
	buf := make([]byte, 256<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			select {
			case <-done:
				return
			default:
			}
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			w.Close()
			return
		}
	}
}

// process is a command started by Start.
type process struct {
	s  *Sandbox
	cp *sdk.ContainerProcess

	started  chan struct{} // closed when the wrapper's first line arrived
	pid      int           // valid after started, if startErr is nil
	startErr error         // set before started is closed
	outputs  sync.WaitGroup

	mu       sync.Mutex
	signaled int  // the number of the last signal delivered
	timedOut bool // Cmd.Timeout passed and the command was killed
	ctxErr   error

	done   chan struct{} // closed once status and err are final
	status sandbox.ExitStatus
	err    error
}

// As sets a **sdk.ContainerProcess target to the SDK's process.
func (pr *process) As(target any) bool {
	if p, ok := target.(**sdk.ContainerProcess); ok {
		*p = pr.cp
		return true
	}
	return false
}

// copyStdout reads the wrapper's first line, then copies the rest of stdout.
func (pr *process) copyStdout(w io.Writer) {
	defer pr.outputs.Done()
	defer pr.cp.Stdout.Close()
	br := bufio.NewReaderSize(pr.cp.Stdout, 64<<10)
	line, err := br.ReadString('\n')
	switch {
	case err != nil:
		pr.startErr = sandbox.NewError(Name, pr.s.id, "exec", kindOf(err), fmt.Errorf("reading the command's first output: %w", err))
	case strings.HasPrefix(line, "perimeter:pid:"):
		pr.pid, err = strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "perimeter:pid:")))
		if err != nil || pr.pid <= 0 {
			pr.startErr = sandbox.Errorf(Name, pr.s.id, "exec", sandbox.ErrUnavailable, "unexpected first line from the command wrapper: %q", line)
		}
	case line == "perimeter:nodir\n":
		pr.startErr = sandbox.Errorf(Name, pr.s.id, "exec", sandbox.ErrNotFound, "working directory (Cmd.Dir) does not exist")
	case line == "perimeter:notdir\n":
		pr.startErr = sandbox.Errorf(Name, pr.s.id, "exec", sandbox.ErrInvalidArgument, "working directory (Cmd.Dir) is not a directory")
	case line == "perimeter:noaccess\n":
		pr.startErr = sandbox.Errorf(Name, pr.s.id, "exec", sandbox.ErrPermissionDenied, "working directory (Cmd.Dir) cannot be entered")
	default:
		pr.startErr = sandbox.Errorf(Name, pr.s.id, "exec", sandbox.ErrUnavailable, "unexpected first line from the command wrapper: %q", line)
	}
	close(pr.started)
	if pr.startErr != nil {
		io.Copy(io.Discard, br)
		return
	}
	io.Copy(w, br)
}

// abandon ends a process whose start failed after the exec was made.
func (pr *process) abandon() {
	pr.cp.Stdout.Close()
	pr.cp.Stderr.Close()
}

// watch enforces ctx and timeout, then waits for the command and its output
// and records how it ended. It owns the process's life and ends with it.
func (pr *process) watch(ctx context.Context, timeout time.Duration) {
	var timer <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		timer = t.C
	}
	waited := make(chan struct{})
	var code int
	var werr error
	go func() {
		defer close(waited)
		<-pr.started
		if pr.startErr != nil {
			werr = pr.startErr
			return
		}
		// Not ctx: ctx ending kills the command, and Wait then reports it.
		// The SDK retries a lost connection for ever; the provider's Close
		// ends that.
		code, werr = pr.cp.Wait(pr.s.p.life)
		if werr != nil {
			pr.abandon() // end the output streams too
		}
	}()
	select {
	case <-waited:
	case <-ctx.Done():
		pr.mu.Lock()
		pr.ctxErr = ctx.Err()
		pr.mu.Unlock()
		pr.kill(sandbox.SIGKILL)
		<-waited
	case <-timer:
		pr.mu.Lock()
		pr.timedOut = true
		pr.mu.Unlock()
		pr.kill(sandbox.SIGKILL)
		<-waited
	}
	pr.outputs.Wait()
	pr.finish(code, werr)
	close(pr.done)
}

func (pr *process) finish(code int, werr error) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	var closed sdk.ClientClosedError
	var execTimeout sdk.ExecTimeoutError
	switch {
	case werr == nil:
		pr.status = sandbox.ExitStatus{Code: code}
		switch {
		case pr.signaled != 0 && code == 128+pr.signaled:
			pr.status = sandbox.ExitStatus{Code: -1, Signal: signalName(pr.signaled)}
		case code == 128+9 && pr.s.ending.Load():
			// Killed by this handle's Terminate.
			pr.status = sandbox.ExitStatus{Code: -1, Signal: sandbox.SIGKILL}
		}
	case errors.As(werr, &closed):
		// The sandbox was terminated through this handle, which detached
		// the SDK's sandbox; its processes were killed with it.
		pr.status = sandbox.ExitStatus{Code: -1, Signal: sandbox.SIGKILL}
	case errors.As(werr, &execTimeout):
		pr.timedOut = true
		pr.status = sandbox.ExitStatus{Code: -1, Signal: sandbox.SIGKILL}
	case pr.s.p.life.Err() != nil:
		pr.err = sandbox.Errorf(Name, pr.s.id, "wait", sandbox.ErrUnavailable, "the provider was closed while the command ran")
	default:
		pr.err = pr.s.fail(context.Background(), "wait", werr)
		if errors.Is(pr.err, sandbox.ErrTerminated) {
			pr.status, pr.err = sandbox.ExitStatus{Code: -1, Signal: sandbox.SIGKILL}, nil
		}
	}
	if pr.timedOut || pr.ctxErr != nil {
		pr.status.TimedOut = pr.timedOut
		pr.status.Code = -1
		if pr.status.Signal == "" {
			pr.status.Signal = sandbox.SIGKILL
		}
	}
	if pr.ctxErr != nil {
		pr.err = pr.ctxErr
	}
}

func signalName(n int) sandbox.Signal {
	for s, num := range signals {
		if num == n {
			return s
		}
	}
	return sandbox.Signal("SIG" + strconv.Itoa(n))
}

// Wait waits for the command to exit and its output to be copied.
func (pr *process) Wait(ctx context.Context) (sandbox.ExitStatus, error) {
	select {
	case <-pr.done:
		return pr.status, pr.err
	case <-ctx.Done():
		return sandbox.ExitStatus{}, ctx.Err()
	}
}

// Signal sends sig to the command's process group with kill(1), run as a
// second command in the sandbox (Modal's exec API has no signal call).
func (pr *process) Signal(ctx context.Context, sig sandbox.Signal) error {
	const op = "signal"
	num, ok := signals[sig]
	if !ok {
		return sandbox.Errorf(Name, pr.s.id, op, sandbox.ErrInvalidArgument, "unknown signal %q", sig)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-pr.done:
		return nil
	default:
	}
	return pr.send(ctx, sig, num)
}

func (pr *process) send(ctx context.Context, sig sandbox.Signal, num int) error {
	const op = "signal"
	select {
	case <-pr.started:
	case <-ctx.Done():
		return ctx.Err()
	}
	if pr.startErr != nil {
		return nil
	}
	pr.mu.Lock()
	pr.signaled = num
	pr.mu.Unlock()
	end, err := pr.s.begin(ctx, op)
	if err != nil {
		if errors.Is(err, sandbox.ErrTerminated) {
			return nil // the command died with the sandbox
		}
		return err
	}
	defer end()
	_, _, _, err = pr.s.run(ctx, []string{"sh", "-c", killer, "perimeter", strings.TrimPrefix(string(sig), "SIG"), strconv.Itoa(pr.pid)}, nil)
	if err != nil {
		return pr.s.fail(ctx, op, err)
	}
	return nil
}

// kill delivers sig for the adapter itself (timeout, ctx), with a context of
// its own.
func (pr *process) kill(sig sandbox.Signal) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pr.send(ctx, sig, signals[sig])
}
