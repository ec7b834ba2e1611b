//go:build linux

// Package procgroup signals a command's process group, or a process found
// in /proc, without the risk of signalling strangers.
//
// A process group's id is its leader's pid. Once the leader has been reaped
// and no other member is left, the kernel may give that id to any new
// process, and kill(-pgid) then reaches whatever process group took it: on
// a shared host, as root, anything. A Leader keeps its process unreaped (a
// zombie keeps its pid, and so the group's id) until Reap, and sends nothing
// after Reap.
package procgroup

import (
	"errors"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// The si_code of a child that ended by a signal (<linux/signal.h>,
// CLD_KILLED and CLD_DUMPED; CLD_EXITED is 1).
const (
	cldKilled = 2
	cldDumped = 3
)

// Leader is a started command that leads its own process group
// (SysProcAttr.Setpgid).
type Leader struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once the leader has exited, unreaped
	code   int32         // the exit's siginfo si_code (CLD_*), set before exited closes

	mu     sync.Mutex
	reaped bool
}

// Watch starts watching cmd, which has been started and not waited for,
// and is the leader of its own process group. From here on cmd must be
// waited for only through Reap.
func Watch(cmd *exec.Cmd) *Leader {
	l := &Leader{cmd: cmd, exited: make(chan struct{})}
	go func() {
		defer close(l.exited)
		var info unix.Siginfo
		for {
			err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
			if err != unix.EINTR {
				break
			}
		}
		l.code = info.Code
	}()
	return l
}

// Exited is closed once the leader has exited (other members of its group
// may live on). The leader stays unreaped until Reap.
func (l *Leader) Exited() <-chan struct{} { return l.exited }

// Signaled reports whether the leader was ended by a signal. It is
// meaningful once Exited is closed.
func (l *Leader) Signaled() bool {
	<-l.exited
	return l.code == cldKilled || l.code == cldDumped
}

// Signal sends sig to the leader's process group. After Reap it sends
// nothing and returns os.ErrProcessDone; a group whose members have all
// gone is not an error.
func (l *Leader) Signal(sig syscall.Signal) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.reaped {
		return os.ErrProcessDone
	}
	err := syscall.Kill(-l.cmd.Process.Pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// Reap waits for the leader to exit, then reaps it and returns what
// cmd.Wait returns. Signal sends nothing from the moment Reap has been
// called and the leader has exited.
func (l *Leader) Reap() error {
	<-l.exited
	l.mu.Lock()
	l.reaped = true
	l.mu.Unlock()
	return l.cmd.Wait()
}

// KillIf sends SIGKILL to process pid if match, which reads what it needs
// about pid (from /proc), reports true. The process is pinned (a pidfd)
// before match looks at it, and the signal goes to the pinned process: if
// pid was given to another process meanwhile, what match read was not the
// pinned process's and nothing is sent. It reports whether it sent the
// signal.
func KillIf(pid int, match func() bool) bool {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return false
	}
	if err != nil {
		// No pidfds (before Linux 5.3, or a seccomp filter refuses
		// them): the plain kill, and its race, rather than none.
		return match() && syscall.Kill(pid, syscall.SIGKILL) == nil
	}
	defer unix.Close(fd)
	if !match() {
		return false
	}
	return unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) == nil
}
