package cloudflare

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
	"github.com/perimeter-sdk/perimeter/sandbox/driver/driverutil"
)

// wrapperScript runs a command for Start. setsid(1) has already made the
// shell the leader of a new session and process group, so the command's
// whole tree can be signalled with kill -- -PGID; the shell reports its pid
// on the first line of stdout, which the adapter removes. Traps keep the
// shell alive for signals meant for the command, so the shell reports the
// command's status (128+n for a signal). env(1) gives "not found" 127 and
// "not executable" 126, as the contract asks, and applies Cmd.Env over the
// session's environment; stdin is empty.
const wrapperScript = `trap : HUP INT QUIT TERM USR1 USR2
echo "perimeter-pid $$"
env "$@" </dev/null
c=$?
exit $c`

const pidPrefix = "perimeter-pid "

// killGrace bounds how long a killed command's stream may take to end.
const killGrace = 30 * time.Second

// Start runs cmd through the bridge's exec (an SSE stream) and returns once
// the command has reported its pid. See the package documentation for how
// Cmd fields are carried.
func (s *Sandbox) Start(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error) {
	const op = "exec"
	if err := s.checkLive(op); err != nil {
		return nil, err
	}
	if strings.Contains(cmd.Args[0], "=") {
		return nil, sandbox.Errorf(providerName, s.id, op, sandbox.ErrInvalidArgument,
			"Args[0] %q contains '=': commands run through env(1), which would read it as a variable", cmd.Args[0])
	}
	dir := s.workdir
	if cmd.Dir != "" {
		d, err := sandbox.CleanName(s.workdir, cmd.Dir)
		if err != nil {
			return nil, sandbox.NewError(providerName, s.id, op, sandbox.ErrInvalidArgument, err)
		}
		if !inWorkspace(d) {
			return nil, sandbox.Errorf(providerName, s.id, op, sandbox.ErrNotSupported,
				"Cmd.Dir %q: the bridge runs commands under /workspace only", cmd.Dir)
		}
		dir = d
	}
	if cmd.TTY != nil {
		return s.startPTY(ctx, cmd, dir)
	}

	argv := []string{"setsid", "-w", "sh", "-c", wrapperScript, "perimeter", "--"}
	argv = append(argv, envArgs(cmd.Env)...)
	argv = append(argv, cmd.Args...)

	p := &process{s: s, started: make(chan struct{}), done: make(chan struct{})}
	p.head.limit = 4 << 10
	stdout := &pidWriter{p: p, w: cmd.Stdout}
	stderr := io.Writer(&p.head)
	if cmd.Stderr != nil {
		stderr = io.MultiWriter(cmd.Stderr, &p.head)
	}
	streamCtx, cancelStream := context.WithCancel(context.WithoutCancel(ctx))
	p.cancelStream = cancelStream
	go func() {
		defer cancelStream()
		code, err := s.execSession(streamCtx, op, argv, dir, stdout, stderr)
		p.finish(code, err)
	}()

	select {
	case <-p.started:
	case <-p.done:
		if p.pid == 0 {
			if p.err != nil {
				return nil, p.err
			}
			return nil, sandbox.Errorf(providerName, s.id, op, sandbox.ErrUnavailable,
				"the command wrapper did not start (exit %d): %s; the container needs sh, env and setsid (util-linux)",
				p.code, strings.TrimSpace(p.head.String()))
		}
	case <-ctx.Done():
		// The watcher kills the command if its pid arrives later.
		go p.watch(ctx, 0)
		return nil, ctx.Err()
	}
	go p.watch(ctx, cmd.Timeout)
	return p, nil
}

// execSession runs argv on the sandbox's session, recreating the session
// once if the bridge no longer has it (sessions do not survive a sleeping
// container).
func (s *Sandbox) execSession(ctx context.Context, op string, argv []string, dir string, stdout, stderr io.Writer) (int, error) {
	o := &ExecOptions{Session: s.session, Cwd: dir}
	code, err := s.p.c.Exec(ctx, s.id, argv, o, stdout, stderr)
	if err != nil && s.session != "" && isCode(err, CodeSessionError) {
		if s.sessionEnv == nil && s.workdir == Workspace {
			return 0, sandbox.NewError(providerName, s.id, op, sandbox.ErrNotFound,
				fmt.Errorf("the sandbox's bridge session is gone (its container slept and lost its state): %w", err))
		}
		if _, cerr := s.p.c.CreateSession(ctx, s.id, s.session, s.workdir, s.sessionEnv); cerr != nil && !isCode(cerr, CodeSessionError) {
			return 0, wrap(s.id, op, cerr)
		}
		code, err = s.p.c.Exec(ctx, s.id, argv, o, stdout, stderr)
	}
	if err != nil {
		return 0, wrap(s.id, op, err)
	}
	return code, nil
}

// envArgs renders env as sorted K=V arguments for env(1).
func envArgs(env map[string]string) []string {
	keys := slices.Sorted(maps.Keys(env))
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k + "=" + env[k]
	}
	return out
}

// process is a command started through the exec route.
type process struct {
	s            *Sandbox
	cancelStream context.CancelFunc
	head         capWriter // the first bytes of stderr, for start-up failures

	started chan struct{} // closed when pid is known
	pid     int

	mu       sync.Mutex
	sent     sandbox.Signal // the last signal this process sent
	timedOut bool
	ctxErr   error

	done   chan struct{}
	code   int
	err    error
	status sandbox.ExitStatus
}

var _ driver.Process = (*process)(nil)

// As reports false: a bridge command has no native type.
func (p *process) As(any) bool { return false }

func (p *process) setPID(pid int) {
	p.pid = pid
	close(p.started)
}

// finish records the stream's end. A command this process killed (timeout
// or Start's ctx) has the kill's status whatever the stream ended with.
func (p *process) finish(code int, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.code = code
	switch {
	case p.timedOut:
		p.status = sandbox.ExitStatus{Code: -1, Signal: sandbox.SIGKILL, TimedOut: true}
	case p.ctxErr != nil:
		p.status = sandbox.ExitStatus{Code: -1, Signal: sandbox.SIGKILL}
		p.err = p.ctxErr
	case err != nil:
		p.err = err
	default:
		p.status = sandbox.ExitStatus{Code: code}
		if p.sent != "" && code == 128+signalNumber(p.sent) {
			p.status = sandbox.ExitStatus{Code: -1, Signal: p.sent}
		}
	}
	close(p.done)
}

// watch enforces Start's ctx and the timeout until the command ends.
func (p *process) watch(ctx context.Context, timeout time.Duration) {
	ctxErr, timedOut := driverutil.AwaitEnd(ctx, p.done, timeout)
	if ctxErr == nil && !timedOut {
		return
	}
	p.mu.Lock()
	p.ctxErr, p.timedOut = ctxErr, timedOut
	p.mu.Unlock()
	select {
	case <-p.started:
	case <-p.done:
		return
	}
	kctx, cancel := context.WithTimeout(context.Background(), killGrace)
	defer cancel()
	p.kill(kctx, "KILL")
	select {
	case <-p.done:
	case <-kctx.Done():
		p.cancelStream()
	}
}

// kill sends sig (a name without "SIG") to the command's process group.
func (p *process) kill(ctx context.Context, sig string) error {
	r, err := p.s.sh(ctx, `kill -s "$1" -- "-$2" 2>/dev/null || kill -s "$1" "$2" 2>/dev/null || true`, sig, strconv.Itoa(p.pid))
	if err != nil {
		return wrap(p.s.id, "signal", err)
	}
	if r.code != 0 {
		return shellError(p.s.id, "signal", r)
	}
	return nil
}

// Wait waits for the stream's exit event. A command killed by a signal
// this process sent reports Code -1 and the signal; otherwise a signal
// shows as the shell reports it (128+n).
func (p *process) Wait(ctx context.Context) (sandbox.ExitStatus, error) {
	select {
	case <-p.done:
	case <-ctx.Done():
		return sandbox.ExitStatus{}, ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status, p.err
}

// Signal sends sig to the command's process group (kill -s through exec).
func (p *process) Signal(ctx context.Context, sig sandbox.Signal) error {
	name := strings.TrimPrefix(string(sig), "SIG")
	select {
	case <-p.done:
		return nil
	default:
	}
	p.mu.Lock()
	p.sent = sig
	p.mu.Unlock()
	return p.kill(ctx, name)
}

func signalNumber(sig sandbox.Signal) int {
	switch sig {
	case sandbox.SIGHUP:
		return int(syscall.SIGHUP)
	case sandbox.SIGINT:
		return int(syscall.SIGINT)
	case sandbox.SIGQUIT:
		return int(syscall.SIGQUIT)
	case sandbox.SIGKILL:
		return int(syscall.SIGKILL)
	case sandbox.SIGUSR1:
		return int(syscall.SIGUSR1)
	case sandbox.SIGUSR2:
		return int(syscall.SIGUSR2)
	case sandbox.SIGTERM:
		return int(syscall.SIGTERM)
	}
	return 0
}

// pidWriter takes the wrapper's first stdout line (its pid) and passes the
// rest on.
type pidWriter struct {
	p    *process
	w    io.Writer
	line []byte
	seen bool
}

func (w *pidWriter) Write(b []byte) (int, error) {
	n := len(b)
	if !w.seen {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			w.line = append(w.line, b...)
			if len(w.line) > 64 {
				return 0, errors.New("the command wrapper's first line is not its pid")
			}
			return n, nil
		}
		w.line = append(w.line, b[:i]...)
		b = b[i+1:]
		pid, err := strconv.Atoi(strings.TrimPrefix(string(w.line), pidPrefix))
		if !strings.HasPrefix(string(w.line), pidPrefix) || err != nil || pid <= 0 {
			return 0, fmt.Errorf("the command wrapper's first line %q is not its pid", w.line)
		}
		w.seen = true
		w.p.setPID(pid)
	}
	if len(b) > 0 && w.w != nil {
		if _, err := w.w.Write(b); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// capWriter keeps the first limit bytes written to it.
type capWriter struct {
	mu    sync.Mutex
	limit int
	buf   bytes.Buffer
}

func (c *capWriter) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.limit - c.buf.Len(); room > 0 {
		c.buf.Write(b[:min(room, len(b))])
	}
	return len(b), nil
}

func (c *capWriter) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}
