package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
	"github.com/perimeter-sdk/perimeter/sandbox/driver/driverutil"
)

// streamOptions is one exec's streams.
type streamOptions struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	tty            bool
	sizes          remotecommand.TerminalSizeQueue
}

// stream runs argv in the sandbox's container through the pods/exec
// subresource (WebSocket, falling back to SPDY) and returns its exit code.
// err is for failing to run it, not for a non-zero exit.
func (s *Sandbox) stream(ctx context.Context, argv []string, o streamOptions) (int, error) {
	podName, container := s.target()
	req := s.p.podRequest(podName, "exec").
		VersionedParams(&corev1.PodExecOptions{
			Container: container,
			Command:   argv,
			Stdin:     o.stdin != nil,
			Stdout:    o.stdout != nil,
			Stderr:    o.stderr != nil && !o.tty,
			TTY:       o.tty,
		}, s.p.codecs.params)
	spdyExec, err := remotecommand.NewSPDYExecutor(s.p.config, http.MethodPost, req.URL())
	if err != nil {
		return 0, sandbox.NewError(name, s.id, "exec", sandbox.ErrInvalidArgument, err)
	}
	wsExec, err := remotecommand.NewWebSocketExecutor(s.p.config, http.MethodGet, req.URL().String())
	if err != nil {
		return 0, sandbox.NewError(name, s.id, "exec", sandbox.ErrInvalidArgument, err)
	}
	ex, err := remotecommand.NewFallbackExecutor(wsExec, spdyExec, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return 0, sandbox.NewError(name, s.id, "exec", sandbox.ErrInvalidArgument, err)
	}
	so := remotecommand.StreamOptions{Stdin: o.stdin, Stdout: o.stdout, Stderr: o.stderr, Tty: o.tty}
	if o.tty {
		so.Stderr = nil // a terminal has one output stream
		so.TerminalSizeQueue = o.sizes
	}
	err = ex.StreamWithContext(ctx, so)
	if err == nil {
		return 0, nil
	}
	var ce utilexec.CodeExitError
	if errors.As(err, &ce) {
		return ce.Code, nil
	}
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	return 0, s.execErr(ctx, err)
}

// execErr gives a failed exec its kind: a pod that is gone is ErrNotFound.
func (s *Sandbox) execErr(ctx context.Context, err error) error {
	if _, _, gerr := s.p.primary(ctx, s.id); gerr != nil {
		return s.p.apiErr(s.id, "exec", gerr)
	}
	return s.p.apiErr(s.id, "exec", err)
}

// exec runs argv with optional streams.
func (s *Sandbox) exec(ctx context.Context, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	return s.stream(ctx, argv, streamOptions{stdin: stdin, stdout: stdout, stderr: stderr})
}

// run runs argv and fails on a non-zero exit.
func (s *Sandbox) run(ctx context.Context, argv []string, stdin io.Reader, op string) (string, error) {
	var out, errOut strings.Builder
	code, err := s.exec(ctx, argv, stdin, &out, &errOut)
	if err != nil {
		return "", err
	}
	if code != 0 {
		return "", sandbox.Errorf(name, s.id, op, sandbox.ErrUnavailable, "%s: exit status %d: %s", argv[0], code, strings.TrimSpace(errOut.String()))
	}
	return out.String(), nil
}

// procDir holds one file per started command, with its PID, for signals.
const procDir = "/tmp/.perimeter-procs"

// wrapper records its own PID, changes to the command's directory, and runs
// the command (with its environment) as its child, then exits with the
// child's status (128+N for a signal). The command is a child, not exec'd
// in the wrapper's place, for two reasons: a command that is the exec
// session's first process may see its standard input end early (measured
// with containerd 1.6: a 64 MiB upload stopped after a few 32 KiB reads,
// with no error on either side), and a child runs as its own process, even
// when its name is a shell builtin. The wrapper traps the signals a
// terminal sends its whole process group, so that it outlives a command
// that survives them; the child starts with the default dispositions.
// With a terminal of a requested size (t is "ROWS COLS", else 0), the
// wrapper waits until the terminal has a size before it starts the command:
// the first size travels on the exec stream's resize channel and may arrive
// after the process started (GNU stty size then prints "0 0", busybox's
// prints nothing and fails). If none has arrived after 10 s the wrapper sets
// the size itself; the stream's, when it comes, is the same.
// Arguments: the PID file, the directory, t, the number of VAR=value words,
// those words, argv.
const wrapper = `f=$1; d=$2; t=$3; n=$4; shift 4
mkdir -p ` + procDir + ` 2>/dev/null; echo $$ > "$f"
cd -- "$d" || exit 126
if [ "$t" != 0 ]; then
  i=0
  while :; do
    case "$(stty size 2>/dev/null)" in [1-9]*" "[1-9]*) break ;; esac
    if [ $i -ge 200 ]; then stty rows "${t% *}" cols "${t#* }" 2>/dev/null; break; fi
    sleep 0.05; i=$((i+1))
  done
fi
trap : INT QUIT HUP TERM
if [ "$n" -gt 0 ]; then (echo run >> "$f"; exec env -- "$@"); else (echo run >> "$f"; exec "$@"); fi
exit $?`

// treeScript sends a signal to the descendants of a wrapper (the command
// and everything it started), found through /proc, waiting for the command
// to exist first. For SIGKILL it stops them first, so none can fork away.
// Arguments: the PID file, the signal name, how many tenths of a second to
// wait for the PID file and the command.
//
// The wrapper's PID is the file's first line; its subshell adds a second
// once its signal dispositions are the command's (a subshell resets the
// wrapper's traps as it starts; a signal arriving before that reset runs
// the wrapper's trap in the subshell and is lost, and the command never
// sees it), so nothing is sent before the second line.
const treeScript = `f=$1; sig=$2; n=$3
i=0
while :; do
  root=; run=
  { read -r root; read -r run; } < "$f" 2>/dev/null
  [ -n "$run" ] && break
  [ -n "$root" ] && [ ! -d "/proc/$root" ] && exit 0
  [ $i -ge "$n" ] && exit 3
  sleep 0.1; i=$((i+1))
done
walk() {
  all=""
  for st in /proc/[0-9]*/stat; do
    read -r l < "$st" 2>/dev/null || continue
    p=${st#/proc/}; p=${p%/stat}
    r=${l##*) }
    set -- $r
    all="$all $p:$2"
  done
  tree=""; front=$root
  while [ -n "$front" ]; do
    next=""
    for e in $all; do
      c=${e%%:*}; pp=${e#*:}
      for x in $front; do [ "$pp" = "$x" ] && next="$next $c"; done
    done
    tree="$tree $next"; front=$next
  done
}
found() { case $tree in *[0-9]*) return 0;; esac; return 1; }
walk
until found; do
  [ -d /proc/$root ] || exit 0
  [ $i -ge "$n" ] && exit 3
  sleep 0.1; i=$((i+1)); walk
done
if [ "$sig" = KILL ]; then
  kill -STOP $tree 2>/dev/null
  walk; kill -STOP $tree 2>/dev/null
  walk; kill -STOP $tree 2>/dev/null
  kill -KILL $tree 2>/dev/null
else
  kill -$sig $tree 2>/dev/null
fi
exit 0`

// signalTree sends sig to the tree of the command whose PID file is pidFile.
func (s *Sandbox) signalTree(ctx context.Context, pidFile string, sig string, waitTenths int) error {
	var errOut strings.Builder
	code, err := s.exec(ctx, []string{"sh", "-c", treeScript, "perimeter", pidFile, sig, strconv.Itoa(waitTenths)}, nil, nil, &errOut)
	if err != nil {
		return err
	}
	if code != 0 && code != 3 {
		return sandbox.Errorf(name, s.id, "signal", sandbox.ErrUnavailable, "signalling the process tree: exit status %d: %s", code, strings.TrimSpace(errOut.String()))
	}
	return nil
}

// signalNumbers maps the contract's signals to their Linux numbers.
var signalNumbers = map[sandbox.Signal]int{
	sandbox.SIGHUP: 1, sandbox.SIGINT: 2, sandbox.SIGQUIT: 3, sandbox.SIGKILL: 9,
	sandbox.SIGUSR1: 10, sandbox.SIGUSR2: 12, sandbox.SIGTERM: 15,
}

// Start runs cmd through the wrapper on an exec stream.
func (s *Sandbox) Start(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error) {
	if s.expired() {
		return nil, sandbox.Errorf(name, s.id, "start", sandbox.ErrTerminated, "sandbox expired at %s", s.expires.Format(time.RFC3339))
	}
	dir := s.workdir
	if cmd.Dir != "" {
		// The wrapper's cd would fail only once the command runs: check
		// first, so that Start reports a missing directory.
		dir = s.abs(cmd.Dir)
		if err := s.fs().ProbeDir(ctx, dir); err != nil {
			return nil, s.fileErr("start", err)
		}
	}
	env := mergeEnv(s.env, cmd.Env)
	if cmd.TTY != nil {
		env["TERM"] = cmd.TTY.Term
	}
	if len(env) > 0 && strings.Contains(cmd.Args[0], "=") {
		return nil, sandbox.Errorf(name, s.id, "start", sandbox.ErrInvalidArgument, "argv[0] %q contains '=', which env(1) would take for a variable", cmd.Args[0])
	}
	keys := sortedKeys(env)
	pidFile := procDir + "/" + newID()[len("perimeter-"):]
	sized := "0"
	if cmd.TTY != nil && cmd.TTY.Rows > 0 && cmd.TTY.Cols > 0 {
		sized = fmt.Sprintf("%d %d", cmd.TTY.Rows, cmd.TTY.Cols)
	}
	argv := []string{"sh", "-c", wrapper, "perimeter", pidFile, dir, sized, strconv.Itoa(len(keys))}
	for _, k := range keys {
		argv = append(argv, k+"="+env[k])
	}
	argv = append(argv, cmd.Args...)

	pr := &Process{s: s, pidFile: pidFile, done: make(chan struct{})}
	o := streamOptions{stdin: cmd.Stdin, stdout: cmd.Stdout, stderr: cmd.Stderr, tty: cmd.TTY != nil}
	if o.stdout == nil {
		o.stdout = io.Discard
	}
	if o.stderr == nil && !o.tty {
		o.stderr = io.Discard
	}
	if o.tty {
		pr.sizes = &sizeQueue{ch: make(chan remotecommand.TerminalSize), done: pr.done,
			first: &remotecommand.TerminalSize{Width: uint16(cmd.TTY.Cols), Height: uint16(cmd.TTY.Rows)}}
		o.sizes = pr.sizes
		if o.stdin == nil {
			// A terminal's input stays open until the command ends.
			o.stdin = &blockReader{done: pr.done}
		}
	}
	// The stream lives until the command ends or is killed; the caller's
	// ctx ends it through killTree.
	sctx, scancel := context.WithCancel(context.WithoutCancel(ctx))
	pr.cancelStream = scancel
	go func() {
		code, err := s.stream(sctx, argv, o)
		pr.finish(code, err)
	}()
	go pr.watch(ctx, cmd.Timeout)
	return pr, nil
}

// mergeEnv merges the sandbox's and the command's environment.
func mergeEnv(a, b map[string]string) map[string]string {
	m := make(map[string]string, len(a)+len(b)+1)
	for k, v := range a {
		m[k] = v
	}
	for k, v := range b {
		m[k] = v
	}
	return m
}

// Process is a command started on an exec stream.
type Process struct {
	s            *Sandbox
	pidFile      string
	sizes        *sizeQueue
	cancelStream context.CancelFunc
	done         chan struct{}

	mu       sync.Mutex
	status   sandbox.ExitStatus
	err      error
	timedOut bool
	ctxErr   error
	sent     sandbox.Signal
}

// finish records how the stream ended.
func (p *Process) finish(code int, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.status = sandbox.ExitStatus{Code: code}
	if code > 128 {
		// The runtime reports a signalled exec as 128+N: name the signal
		// when it is the one the provider sent.
		for sig, n := range signalNumbers {
			if code == 128+n && (sig == p.sent || (sig == sandbox.SIGKILL && (p.timedOut || p.ctxErr != nil))) {
				p.status = sandbox.ExitStatus{Code: -1, Signal: sig}
			}
		}
	}
	p.status.TimedOut = p.timedOut
	switch {
	case p.ctxErr != nil:
		p.err = p.ctxErr
	case err != nil && errors.Is(err, context.Canceled):
		p.err = sandbox.Errorf(name, p.s.id, "wait", sandbox.ErrUnavailable, "the exec stream was closed before the command ended")
	default:
		p.err = err
	}
	close(p.done)
}

// watch kills the tree when ctx ends or the timeout passes.
func (p *Process) watch(ctx context.Context, timeout time.Duration) {
	ctxErr, timedOut := driverutil.AwaitEnd(ctx, p.done, timeout)
	if ctxErr == nil && !timedOut {
		return
	}
	p.mu.Lock()
	p.ctxErr, p.timedOut = ctxErr, timedOut
	p.mu.Unlock()
	kctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.s.signalTree(kctx, p.pidFile, "KILL", 100); err != nil {
		// The pod may be gone; end the stream regardless.
		p.cancelStream()
		return
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		// The runtime did not report the exit: close the stream.
		p.cancelStream()
	}
}

// Wait waits for the command and its output.
func (p *Process) Wait(ctx context.Context) (sandbox.ExitStatus, error) {
	select {
	case <-p.done:
	case <-ctx.Done():
		return sandbox.ExitStatus{}, ctx.Err()
	}
	p.cancelStream()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status, p.err
}

// Signal sends sig to the command and its descendants through a shell
// script in the container, which finds them under /proc.
func (p *Process) Signal(ctx context.Context, sig sandbox.Signal) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if _, ok := signalNumbers[sig]; !ok {
		return sandbox.Errorf(name, p.s.id, "signal", sandbox.ErrInvalidArgument, "unknown signal %q", sig)
	}
	p.mu.Lock()
	p.sent = sig
	p.mu.Unlock()
	return p.s.signalTree(ctx, p.pidFile, strings.TrimPrefix(string(sig), "SIG"), 100)
}

// Resize changes the terminal's size.
func (p *Process) Resize(ctx context.Context, rows, cols int) error {
	if p.sizes == nil {
		return sandbox.Errorf(name, p.s.id, "resize", sandbox.ErrNotSupported, "the process has no terminal")
	}
	select {
	case p.sizes.ch <- remotecommand.TerminalSize{Width: uint16(cols), Height: uint16(rows)}:
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	// The size travels on a channel of its own, unordered with stdin: wait
	// until the terminal has it, so that what the caller writes next meets
	// the new size.
	var errOut strings.Builder
	code, err := p.s.exec(ctx, []string{"sh", "-c", resizeScript, "perimeter", p.pidFile, fmt.Sprintf("%d %d", rows, cols)}, nil, nil, &errOut)
	switch {
	case err != nil:
		return err
	case code == 3:
		return sandbox.Errorf(name, p.s.id, "resize", sandbox.ErrUnavailable, "the terminal did not take the size %dx%d within 10s", rows, cols)
	case code != 0:
		return sandbox.Errorf(name, p.s.id, "resize", sandbox.ErrUnavailable, "checking the terminal size: exit status %d: %s", code, strings.TrimSpace(errOut.String()))
	}
	return nil
}

// resizeScript waits until the terminal of a wrapper has a size. It exits 0
// once it has (or the command has ended), 3 after 10 seconds. Arguments:
// the PID file, "ROWS COLS".
const resizeScript = `f=$1; want=$2; i=0
while :; do
  if [ -s "$f" ]; then
    read root < "$f"
    [ -d /proc/$root ] || exit 0
    [ "$(stty -F /proc/$root/fd/0 size 2>/dev/null)" = "$want" ] && exit 0
  fi
  [ $i -ge 200 ] && exit 3
  sleep 0.05; i=$((i+1))
done`

// As sets nothing: the process has no native type.
func (p *Process) As(any) bool { return false }

// sizeQueue hands terminal sizes to the exec stream: the first size, then
// each Resize, which returns once the stream has taken it.
type sizeQueue struct {
	first *remotecommand.TerminalSize // read by Next only
	ch    chan remotecommand.TerminalSize
	done  chan struct{}
}

func (q *sizeQueue) Next() *remotecommand.TerminalSize {
	if sz := q.first; sz != nil {
		q.first = nil
		return sz
	}
	select {
	case sz := <-q.ch:
		return &sz
	case <-q.done:
		return nil
	}
}

// blockReader blocks until done, then reads EOF.
type blockReader struct{ done chan struct{} }

func (b *blockReader) Read([]byte) (int, error) {
	<-b.done
	return 0, io.EOF
}
