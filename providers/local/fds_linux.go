package local

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// closeInheritedFDs closes every descriptor from first up that this process
// inherited without close-on-exec: descriptors a host program left
// inheritable would otherwise reach the sandbox (a root-only file, a socket,
// a log). It runs first thing in a sandbox's init. Descriptors the Go
// runtime may already have opened for itself carry FD_CLOEXEC and are kept.
func closeInheritedFDs(first int) error {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		// No /proc: mark everything close-on-exec, so at least no command
		// inherits it.
		return unix.CloseRange(uint(first), ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	}
	names, err := d.Readdirnames(-1)
	self := int(d.Fd())
	d.Close()
	if err != nil {
		return err
	}
	for _, n := range names {
		fd, err := strconv.Atoi(n)
		if err != nil || fd < first || fd == self {
			continue
		}
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC != 0 {
			continue
		}
		unix.Close(fd)
	}
	return nil
}

// cloexecAll marks every descriptor from 3 up close-on-exec: the agent runs
// it before each command starts, so that nothing but the command's own
// standard streams crosses the exec, whatever the agent holds.
func cloexecAll() {
	unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
}
