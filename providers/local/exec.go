package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/perimeter-sdk/perimeter/internal/procgroup"
	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
	"github.com/perimeter-sdk/perimeter/sandbox/driver/driverutil"
)

// defaultPath is the PATH commands get unless the spec or command sets one.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// outputGrace is how long, once the command itself has exited, its output
// pipes may stay idle before copying stops: a background process that still
// holds them does not keep Wait waiting. Output already written is never
// dropped, however slowly the caller's writer takes it.
const outputGrace = 500 * time.Millisecond

// outputCopier copies a command's output pipes until EOF or, once the command
// has exited, until a pipe has been idle for outputGrace.
type outputCopier struct {
	exited atomic.Bool
	files  []*os.File
	wg     sync.WaitGroup
}

// copy copies f to write in a new goroutine.
func (o *outputCopier) copy(f *os.File, write func([]byte)) {
	o.files = append(o.files, f)
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		b := make([]byte, 32<<10)
		for {
			if o.exited.Load() {
				f.SetReadDeadline(time.Now().Add(outputGrace))
			}
			n, err := f.Read(b)
			if n > 0 {
				write(b[:n])
			}
			if err != nil {
				return
			}
		}
	}()
}

// exit records that the command has exited and waits for the copies to end.
// A pipe that cannot take a deadline is closed after outputGrace instead.
func (o *outputCopier) exit() {
	o.exited.Store(true)
	for _, f := range o.files {
		if f.SetReadDeadline(time.Now().Add(outputGrace)) != nil {
			t := time.AfterFunc(outputGrace, func() { f.Close() })
			defer t.Stop()
		}
	}
	o.wg.Wait()
}

type process struct {
	sb     *Sandbox
	cmd    *exec.Cmd
	leader *procgroup.Leader // signals the command's group while its id is ours

	done   chan struct{} // closed when the command has been waited for
	status sandbox.ExitStatus
	err    error

	output outputCopier

	mu       sync.Mutex
	timedOut bool
	exited   bool
}

// closeFiles closes every file of fs.
func closeFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// Start runs cmd as a host process in its own process group, with the
// workspace directory (or cmd.Dir inside it) as its working directory.
func (s *Sandbox) Start(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error) {
	const op = "exec"
	if err := s.live(ctx, op); err != nil {
		return nil, err
	}
	dirName := cmd.Dir
	if dirName == "" {
		dirName = "."
	}
	rel, err := s.rel(op, dirName)
	if err != nil {
		return nil, err
	}
	fi, err := s.root.Stat(rel)
	if err != nil {
		return nil, sandbox.NewError(Name, s.id, op, kindOf(err), fmt.Errorf("working directory %q: %w", cmd.Dir, err))
	}
	if !fi.IsDir() {
		return nil, sandbox.Errorf(Name, s.id, op, sandbox.ErrInvalidArgument,
			"working directory %q is not a directory", cmd.Dir)
	}
	if s.iso != nil {
		dir, home := "/"+rel, workspaceDir
		if rel == "." {
			dir = "/"
		}
		if s.iso.l1 != nil {
			dir, home = filepath.Join(s.ws, filepath.FromSlash(rel)), s.ws
		}
		s.mu.Lock()
		var extra map[string]string
		if cmd.TTY != nil {
			extra = map[string]string{"TERM": cmd.TTY.Term}
		}
		env := environ(home, s.iso.env, s.meta.Env, extra, cmd.Env)
		s.mu.Unlock()
		return s.startIsolatedCmd(ctx, cmd, dir, env)
	}
	dir := filepath.Join(s.ws, filepath.FromSlash(rel))

	s.mu.Lock()
	env := environ(s.ws, s.meta.Env, cmd.Env)
	s.mu.Unlock()

	stdout, stderr := writerOr(cmd.Stdout), writerOr(cmd.Stderr)
	prog, code, lookErr := lookPath(cmd.Args[0], dir, envValue(env, "PATH"))
	if lookErr != nil {
		// As a shell does: not found is 127, not executable 126.
		fmt.Fprintf(stderr, "perimeter: %s: %v\n", cmd.Args[0], lookErr)
		return exitedProcess(code), nil
	}

	// Output goes through pipes of our own rather than os/exec's copying,
	// whose WaitDelay would drop what a slow writer has not taken yet.
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, sandbox.NewError(Name, s.id, op, kindOf(err), err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		closeFiles([]*os.File{outR, outW})
		return nil, sandbox.NewError(Name, s.id, op, kindOf(err), err)
	}
	defer closeFiles([]*os.File{outW, errW}) // the child has its own copies once started
	path, args := prog, cmd.Args
	if env := defaultSignalEnv(); env != "" && !strings.Contains(prog, "=") {
		// This process ignores a signal, and an ignored disposition survives
		// exec: the command would never see it. env resets them (the
		// program's argv[0] is then its path).
		path, args = env, append([]string{"env", "--default-signal", prog}, cmd.Args[1:]...)
	}
	c := &exec.Cmd{
		Path:   path,
		Args:   args,
		Dir:    dir,
		Env:    env,
		Stdout: outW,
		Stderr: errW,
		SysProcAttr: &syscall.SysProcAttr{
			Setpgid:   true,
			Pdeathsig: syscall.SIGKILL,
		},
	}
	var stdinW *os.File
	if cmd.Stdin != nil {
		r, w, err := os.Pipe()
		if err != nil {
			closeFiles([]*os.File{outR, errR})
			return nil, sandbox.NewError(Name, s.id, op, kindOf(err), err)
		}
		c.Stdin = r
		stdinW = w
		defer r.Close() // the child has its own copy once started
	}

	s.mu.Lock()
	if s.terminated {
		s.mu.Unlock()
		if stdinW != nil {
			stdinW.Close()
		}
		closeFiles([]*os.File{outR, errR})
		return nil, sandbox.NewError(Name, s.id, op, sandbox.ErrTerminated, nil)
	}
	// Descriptors the host program left inheritable must not reach the
	// command: mark them close-on-exec (os/exec passes only c's own).
	cloexecAll()
	if err := c.Start(); err != nil {
		s.mu.Unlock()
		if stdinW != nil {
			stdinW.Close()
		}
		closeFiles([]*os.File{outR, errR})
		var pe *fs.PathError
		if code, ok := driverutil.ShellExitCode(err); ok && code == 126 && errors.As(err, &pe) {
			fmt.Fprintf(stderr, "perimeter: %s: %v\n", cmd.Args[0], err)
			return exitedProcess(126), nil
		}
		return nil, sandbox.NewError(Name, s.id, op, kindOf(err), err)
	}
	pr := &process{sb: s, cmd: c, leader: procgroup.Watch(c), done: make(chan struct{})}
	s.procs[pr] = struct{}{}
	s.mu.Unlock()
	pr.output.copy(outR, func(b []byte) { stdout.Write(b) })
	pr.output.copy(errR, func(b []byte) { stderr.Write(b) })

	if stdinW != nil {
		go feedStdin(stdinW, cmd.Stdin, pr.done)
	}
	go pr.wait(ctx, cmd.Timeout)
	return pr, nil
}

// feedStdin copies r to the command's stdin and closes it at EOF, or when the
// command is done (so a copy blocked on a full pipe ends). The goroutine ends
// when r's Read returns after that.
func feedStdin(w *os.File, r io.Reader, done <-chan struct{}) {
	var once sync.Once
	closeW := func() { once.Do(func() { w.Close() }) }
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-done:
			closeW()
		case <-stop:
		}
	}()
	io.Copy(w, r)
	closeW()
}

// wait waits for the command, enforcing ctx and timeout, and records how it
// ended. The command is reaped last, once nothing signals its group any
// more: until then its group's id cannot be another's.
func (pr *process) wait(ctx context.Context, timeout time.Duration) {
	waited := pr.leader.Exited()

	var timer <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		timer = t.C
	}
	var ctxErr error
	select {
	case <-waited:
	case <-ctx.Done():
		ctxErr = ctx.Err()
		pr.kill()
		<-waited
	case <-timer:
		pr.mu.Lock()
		pr.timedOut = true
		pr.mu.Unlock()
		pr.kill()
		<-waited
	}
	if ctxErr == nil && pr.leader.Signaled() {
		// The leader died of a signal; take its group with it so nothing
		// started by a killed command outlives it.
		pr.kill()
	}
	pr.output.exit()
	closeFiles(pr.output.files)
	pr.mu.Lock()
	pr.exited = true
	pr.mu.Unlock()
	pr.sb.mu.Lock()
	delete(pr.sb.procs, pr)
	pr.sb.mu.Unlock()
	err := pr.leader.Reap()
	pr.status = statusOf(pr.cmd.ProcessState, err)
	pr.status.TimedOut = pr.timedOut
	pr.err = ctxErr
	if ctxErr != nil || pr.timedOut {
		pr.status.Code = -1
		if pr.status.Signal == "" {
			pr.status.Signal = sandbox.SIGKILL
		}
	}
	close(pr.done)
}

func statusOf(ps *os.ProcessState, err error) sandbox.ExitStatus {
	if ps == nil {
		return sandbox.ExitStatus{Code: -1}
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok {
		return driverutil.ExitStatusOf(ws)
	}
	return sandbox.ExitStatus{Code: ps.ExitCode()}
}

// kill sends SIGKILL to the command's whole process group, unless the
// command has been reaped.
func (pr *process) kill() {
	pr.leader.Signal(unix.SIGKILL)
}

// Wait waits for the command and the copying of its output.
func (pr *process) Wait(ctx context.Context) (sandbox.ExitStatus, error) {
	select {
	case <-pr.done:
		return pr.status, pr.err
	case <-ctx.Done():
		return sandbox.ExitStatus{}, ctx.Err()
	}
}

// Signal sends sig to the command's process group.
func (pr *process) Signal(ctx context.Context, sig sandbox.Signal) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	n, known := driverutil.SignalNumber(sig)
	num := unix.Signal(n)
	if !known {
		return sandbox.Errorf(Name, pr.sb.id, "signal", sandbox.ErrInvalidArgument, "unknown signal %q", sig)
	}
	pr.mu.Lock()
	exited := pr.exited
	pr.mu.Unlock()
	if exited {
		return nil
	}
	if err := pr.leader.Signal(num); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return sandbox.NewError(Name, pr.sb.id, "signal", kindOf(err), err)
	}
	return nil
}

// exitedProcess is a command that could not be started, reported as a shell
// would report it.
func exitedProcess(code int) *finished {
	return &finished{status: sandbox.ExitStatus{Code: code}}
}

type finished struct{ status sandbox.ExitStatus }

func (f *finished) Wait(ctx context.Context) (sandbox.ExitStatus, error) { return f.status, nil }
func (f *finished) Signal(ctx context.Context, sig sandbox.Signal) error { return nil }
func (f *finished) As(any) bool                                          { return false }

// As reports false: a local process has no native type to expose.
func (pr *process) As(any) bool { return false }

func writerOr(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// environ builds a command's environment: PATH, HOME and LANG, then the
// spec's, then the command's variables. Nothing is inherited from the host.
func environ(home string, layers ...map[string]string) []string {
	env := map[string]string{"PATH": defaultPath, "HOME": home, "LANG": "C.UTF-8"}
	for _, l := range layers {
		for k, v := range l {
			env[k] = v
		}
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

func envValue(env []string, key string) string {
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}

// lookPath finds prog as a shell would, using the command's PATH rather than
// this process's. It returns the exit code a shell would give on failure.
func lookPath(prog, dir, pathEnv string) (string, int, error) {
	if strings.Contains(prog, "/") {
		p := prog
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if err := executable(p); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return "", 127, errors.New("no such file or directory")
			}
			return "", 126, err
		}
		return p, 0, nil
	}
	denied := false
	for _, d := range filepath.SplitList(pathEnv) {
		if d == "" {
			d = "."
		}
		if !filepath.IsAbs(d) {
			d = filepath.Join(dir, d)
		}
		p := filepath.Join(d, prog)
		err := executable(p)
		if err == nil {
			return p, 0, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			denied = true
		}
	}
	if denied {
		return "", 126, errors.New("permission denied")
	}
	return "", 127, errors.New("command not found")
}

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return errors.New("is a directory")
	}
	if fi.Mode()&0o111 == 0 {
		return fs.ErrPermission
	}
	return nil
}

// defaultSignalEnv returns the path of an env(1) that takes --default-signal
// when this process ignores a signal a command may be sent (a host started
// under nohup ignores SIGHUP), and "" when nothing is ignored or no such env
// exists. Unisolated commands are plain children of this process and would
// inherit the ignored dispositions; isolated ones start from the sandbox's
// init, which ignores none.
var defaultSignalEnv = sync.OnceValue(func() string {
	ignored := false
	for _, sig := range []os.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPIPE, syscall.SIGALRM, syscall.SIGTSTP,
		syscall.SIGTTIN, syscall.SIGTTOU} {
		ignored = ignored || signal.Ignored(sig)
	}
	if !ignored {
		return ""
	}
	for _, env := range []string{"/usr/bin/env", "/bin/env"} {
		if exec.Command(env, "--default-signal", "true").Run() == nil {
			return env
		}
	}
	return ""
})
