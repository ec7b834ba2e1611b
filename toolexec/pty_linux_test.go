//go:build linux

package toolexec_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/perimeter-sdk/perimeter/internal/procgroup"
	"github.com/perimeter-sdk/perimeter/providers/local"
	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
	"github.com/perimeter-sdk/perimeter/toolexec/toolexectest"
)

// ptySandbox is a TEST-ONLY stand-in for a provider with Capabilities.PTY:
// it wraps a local sandbox (files, and commands without a TTY) and runs
// commands that ask for a TTY on a real pseudo-terminal on the host, in the
// sandbox's workspace, with a clean environment. It exists so that the bash
// tool's PTY path also runs against a second terminal implementation (the
// isolated local provider's own PTY runs in TestBatteryLocal).
type ptySandbox struct {
	*local.Sandbox
}

func (s *ptySandbox) Capabilities() sandbox.Capabilities {
	c := s.Sandbox.Capabilities()
	c.PTY = true
	return c
}

func (s *ptySandbox) Start(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error) {
	if cmd.TTY == nil {
		return s.Sandbox.Start(ctx, cmd)
	}
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		master.Close()
		return nil, err
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		master.Close()
		return nil, err
	}
	slave, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, err
	}
	unix.IoctlSetWinsize(int(slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: uint16(cmd.TTY.Rows), Col: uint16(cmd.TTY.Cols)})
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + s.Workspace(), "TERM=" + cmd.TTY.Term}
	for k, v := range cmd.Env {
		env = append(env, k+"="+v)
	}
	c := exec.Command(cmd.Args[0], cmd.Args[1:]...)
	c.Dir, c.Env = s.Workspace(), env
	c.Stdin, c.Stdout, c.Stderr = slave, slave, slave
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := c.Start(); err != nil {
		master.Close()
		slave.Close()
		return nil, err
	}
	slave.Close()
	// Signals go through a Leader, which holds the session's group id (the
	// leader unreaped) until it is reaped and signals nothing after: a
	// kill(-pid) after Wait could reach any process group that took the id.
	leader := procgroup.Watch(c)
	p := &ptyProcess{leader: leader, master: master, done: make(chan struct{})}
	var copies sync.WaitGroup
	copies.Add(1)
	go func() { // output: ends when the terminal closes
		defer copies.Done()
		if cmd.Stdout != nil {
			io.Copy(cmd.Stdout, master)
		} else {
			io.Copy(io.Discard, master)
		}
	}()
	if cmd.Stdin != nil {
		go func() { // input: ends when the caller's reader ends or the terminal closes
			io.Copy(master, cmd.Stdin)
		}()
	}
	go func() {
		select {
		case <-leader.Exited():
		case <-ctx.Done():
			leader.Signal(syscall.SIGKILL)
			<-leader.Exited()
			p.err = ctx.Err()
		}
		leader.Signal(syscall.SIGKILL) // the rest of the session
		leader.Reap()
		master.Close()
		copies.Wait()
		if ws, ok := c.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			p.status = sandbox.ExitStatus{Code: -1, Signal: sandbox.Signal(unix.SignalName(ws.Signal()))}
		} else {
			p.status = sandbox.ExitStatus{Code: c.ProcessState.ExitCode()}
		}
		close(p.done)
	}()
	return p, nil
}

type ptyProcess struct {
	leader *procgroup.Leader
	master *os.File
	done   chan struct{}
	status sandbox.ExitStatus
	err    error
}

func (p *ptyProcess) As(any) bool { return false }

func (p *ptyProcess) Wait(ctx context.Context) (sandbox.ExitStatus, error) {
	select {
	case <-p.done:
		return p.status, p.err
	case <-ctx.Done():
		return sandbox.ExitStatus{}, ctx.Err()
	}
}

func (p *ptyProcess) Signal(ctx context.Context, sig sandbox.Signal) error {
	n := unix.SignalNum(string(sig))
	if n == 0 {
		return errors.New(fmt.Sprint("unknown signal ", sig))
	}
	err := p.leader.Signal(n)
	if errors.Is(err, os.ErrProcessDone) {
		return nil
	}
	return err
}

// TestBatteryOnPTY runs the battery with the bash tool on a pseudo-terminal.
func TestBatteryOnPTY(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the tools' battery runs once, on the isolated local provider (TestBatteryLocal); this variant runs without -short")
	}
	if _, err := os.Stat("/dev/ptmx"); err != nil {
		t.Skip("no /dev/ptmx on this host: the PTY path cannot be exercised")
	}
	toolexectest.Run(t, func(t *testing.T) *sandbox.Sandbox {
		return newWrappedSandbox(t, &local.Options{Root: t.TempDir(), Unisolated: true},
			func(s *local.Sandbox) driver.Sandbox { return &ptySandbox{s} })
	}, nil)
}

// noStdinSandbox is a TEST-ONLY stand-in for a provider that can neither
// feed stdin nor give a terminal: it declares both false (the portable layer
// then refuses them), so the bash tool falls back to its stateless
// emulation.
type noStdinSandbox struct {
	*local.Sandbox
}

func (s *noStdinSandbox) Capabilities() sandbox.Capabilities {
	c := s.Sandbox.Capabilities()
	c.Stdin, c.PTY = false, false
	return c
}

// TestBatteryWithoutStdin runs the battery on a sandbox without stdin or
// PTY, where bash state persists through a state file.
func TestBatteryWithoutStdin(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the tools' battery runs once, on the isolated local provider (TestBatteryLocal); this variant runs without -short")
	}
	toolexectest.Run(t, func(t *testing.T) *sandbox.Sandbox {
		return newWrappedSandbox(t, &local.Options{Root: t.TempDir(), Unisolated: true},
			func(s *local.Sandbox) driver.Sandbox { return &noStdinSandbox{s} })
	}, nil)
}
