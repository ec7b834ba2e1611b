package sshbox

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

// Start runs cmd in one SSH session under execScript and returns once the
// wrapper has reported the command's process group.
func (s *Sandbox) Start(ctx context.Context, cmd *driver.Cmd) (driver.Process, error) {
	if strings.Contains(cmd.Args[0], "=") {
		// env would read it as a variable, not a program.
		return nil, sandbox.Errorf(Name, s.meta.ID, "start", sandbox.ErrNotSupported, "a program name containing '=' (%q)", cmd.Args[0])
	}
	dir := s.meta.Workdir
	if cmd.Dir != "" {
		dir = cmd.Dir
		if !path.IsAbs(dir) {
			dir = path.Join(s.meta.Workdir, dir)
		}
	}
	env := map[string]string{}
	for k, v := range s.meta.Env {
		env[k] = v
	}
	for k, v := range cmd.Env {
		env[k] = v
	}
	delete(env, "PERIMETER_SANDBOX")
	args := []string{"env"}
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range env {
			if !yield(k) {
				return
			}
		}
	}) {
		args = append(args, k+"="+env[k])
	}
	header := "2"
	if cmd.TTY != nil {
		header = "1"
	}
	args = append(args, "PERIMETER_SANDBOX="+s.meta.ID, "/bin/sh", "-c", execScript, "perimeter-ssh", s.root, dir, header)
	args = append(args, cmd.Args...)
	line := "exec"
	for _, a := range args {
		line += " " + quote(a)
	}

	s.p.ctlOnce.Do(func() { go s.p.ctl.prepare(context.WithoutCancel(ctx)) })
	sess, release, err := s.p.session(ctx)
	if err != nil {
		return nil, s.err("start", err)
	}
	pr := &process{s: s, sess: sess, release: release, tty: cmd.TTY != nil, done: make(chan struct{})}
	fail := func(err error) (driver.Process, error) {
		sess.Close()
		release()
		return nil, err
	}
	if cmd.TTY != nil {
		if err := sess.RequestPty(cmd.TTY.Term, cmd.TTY.Rows, cmd.TTY.Cols, ssh.TerminalModes{}); err != nil {
			return fail(sandbox.NewError(Name, s.meta.ID, "start", sandbox.ErrUnavailable, fmt.Errorf("requesting a PTY: %w", err)))
		}
	}
	stdin, err1 := sess.StdinPipe()
	stdout, err2 := sess.StdoutPipe()
	stderr, err3 := sess.StderrPipe()
	if err := errors.Join(err1, err2, err3); err != nil {
		return fail(sandbox.NewError(Name, s.meta.ID, "start", sandbox.ErrUnavailable, err))
	}
	if err := sess.Start(line); err != nil {
		return fail(sandbox.NewError(Name, s.meta.ID, "start", sandbox.ErrUnavailable, err))
	}

	// The header line comes first on the header stream.
	hdrStream := stderr
	if cmd.TTY != nil {
		hdrStream = stdout
	}
	hdr := bufio.NewReaderSize(hdrStream, 4096)
	type result struct {
		line string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		l, err := hdr.ReadString('\n')
		got <- result{strings.TrimRight(l, "\r\n"), err}
	}()
	var h result
	select {
	case h = <-got:
	case <-ctx.Done():
		sess.Close()
		<-got
		return fail(ctx.Err())
	}
	switch {
	case strings.HasPrefix(h.line, "perimeter-pgid "):
		pr.pgid, err = strconv.Atoi(strings.TrimPrefix(h.line, "perimeter-pgid "))
		if err != nil || pr.pgid <= 1 {
			return fail(sandbox.Errorf(Name, s.meta.ID, "start", sandbox.ErrUnavailable, "the wrapper reported %q", h.line))
		}
	case h.line == "perimeter-gone":
		return fail(sandbox.Errorf(Name, s.meta.ID, "start", sandbox.ErrTerminated, "sandbox %s is terminated", s.meta.ID))
	case h.line == "perimeter-nodir":
		if _, err := s.p.sftp.Lstat(s.root); err != nil {
			return fail(sandbox.Errorf(Name, s.meta.ID, "start", sandbox.ErrTerminated, "sandbox %s is terminated", s.meta.ID))
		}
		return fail(sandbox.Errorf(Name, s.meta.ID, "start", sandbox.ErrNotFound, "Cmd.Dir %s: no such directory", dir))
	default:
		rest, _ := io.ReadAll(io.LimitReader(hdr, 4096))
		return fail(sandbox.Errorf(Name, s.meta.ID, "start", sandbox.ErrUnavailable,
			"the remote wrapper did not start (is /bin/sh POSIX and env on PATH?): %q %v", h.line+string(rest), h.err))
	}

	// The command runs: copy its output, feed its input, watch ctx and the
	// timeout, and collect its status.
	var copies sync.WaitGroup
	copyOut := func(w io.Writer, r io.Reader) {
		if w == nil {
			w = io.Discard
		}
		copies.Add(1)
		go func() {
			defer copies.Done()
			io.Copy(w, r)
			io.Copy(io.Discard, r) // after a writer error, keep the channel flowing
		}()
	}
	if cmd.TTY != nil {
		copyOut(cmd.Stdout, hdr)
		copyOut(io.Discard, stderr)
	} else {
		copyOut(cmd.Stdout, stdout)
		copyOut(cmd.Stderr, hdr)
	}
	if cmd.Stdin != nil {
		// Not waited for: a reader that never ends must not hold Wait.
		go func() {
			io.Copy(stdin, cmd.Stdin)
			stdin.Close()
		}()
	} else if cmd.TTY == nil {
		stdin.Close()
	}
	var timer *time.Timer
	if cmd.Timeout > 0 {
		timer = time.AfterFunc(cmd.Timeout, func() { pr.kill(&pr.timedOut) })
	}
	stopWatch := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			pr.mu.Lock()
			pr.ctxErr = ctx.Err()
			pr.mu.Unlock()
			pr.kill(nil)
		case <-stopWatch:
		}
	}()
	go func() {
		werr := sess.Wait()
		copies.Wait()
		if timer != nil {
			timer.Stop()
		}
		close(stopWatch)
		sess.Close()
		release()
		pr.finish(werr)
	}()
	return pr, nil
}

// process is a command started by Start.
type process struct {
	s       *Sandbox
	sess    *ssh.Session
	release func()
	pgid    int
	tty     bool
	done    chan struct{}

	mu       sync.Mutex
	killed   bool
	timedOut bool
	ctxErr   error
	status   driver.ExitStatus
	err      error
}

// kill sends SIGKILL to the process group, once, recording why in flag.
func (pr *process) kill(flag *bool) {
	pr.mu.Lock()
	if flag != nil {
		*flag = true
	}
	if pr.killed {
		pr.mu.Unlock()
		return
	}
	pr.killed = true
	pr.mu.Unlock()
	select {
	case <-pr.done:
		return
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := pr.s.p.ctl.signal(ctx, "KILL", pr.pgid); err != nil && !errors.Is(err, errNoProcess) {
		// If the group has not ended meanwhile, closing the session is all
		// that is left to do.
		select {
		case <-pr.done:
		default:
			pr.sess.Close()
		}
	}
}

func (pr *process) finish(werr error) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	var exit *ssh.ExitError
	var missing *ssh.ExitMissingError
	switch {
	case werr == nil:
		pr.status = driver.ExitStatus{Code: 0}
	case errors.As(werr, &exit) && exit.Signal() != "":
		pr.status = driver.ExitStatus{Code: -1, Signal: driver.Signal("SIG" + exit.Signal())}
	case errors.As(werr, &exit):
		pr.status = driver.ExitStatus{Code: exit.ExitStatus()}
	case errors.As(werr, &missing) && pr.killed:
		pr.status = driver.ExitStatus{Code: -1, Signal: driver.SIGKILL}
	default:
		pr.err = sandbox.NewError(Name, pr.s.meta.ID, "wait", sandbox.ErrUnavailable,
			fmt.Errorf("the SSH session ended without an exit status (connection lost?): %w", werr))
	}
	if pr.timedOut {
		pr.status.TimedOut = true
	} else if pr.ctxErr != nil && pr.killed {
		pr.err = pr.ctxErr
	}
	close(pr.done)
}

// Wait waits for the command and its output.
func (pr *process) Wait(ctx context.Context) (driver.ExitStatus, error) {
	select {
	case <-pr.done:
	case <-ctx.Done():
		return driver.ExitStatus{}, ctx.Err()
	}
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return pr.status, pr.err
}

// Signal sends sig to the command's process group; after exit it does
// nothing.
func (pr *process) Signal(ctx context.Context, sig driver.Signal) error {
	select {
	case <-pr.done:
		return nil
	default:
	}
	name := strings.TrimPrefix(string(sig), "SIG")
	if err := pr.s.p.ctl.signal(ctx, name, pr.pgid); err != nil {
		select {
		case <-pr.done:
			return nil
		default:
		}
		if errors.Is(err, errNoProcess) {
			return nil // exited, but its session has not closed yet
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return sandbox.NewError(Name, pr.s.meta.ID, "signal", sandbox.ErrUnavailable, err)
	}
	return nil
}

// Resize sends SSH's window-change for a command on a terminal.
func (pr *process) Resize(ctx context.Context, rows, cols int) error {
	if !pr.tty {
		return sandbox.Errorf(Name, pr.s.meta.ID, "resize", sandbox.ErrInvalidArgument, "the command has no terminal")
	}
	if err := pr.sess.WindowChange(rows, cols); err != nil {
		return sandbox.NewError(Name, pr.s.meta.ID, "resize", sandbox.ErrUnavailable, err)
	}
	return nil
}

// As sets a **ssh.Session target.
func (pr *process) As(target any) bool {
	if t, ok := target.(**ssh.Session); ok {
		*t = pr.sess
		return true
	}
	return false
}

var (
	_ driver.Process = (*process)(nil)
	_ driver.Resizer = (*process)(nil)
)
