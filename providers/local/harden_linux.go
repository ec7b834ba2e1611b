package local

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// This file holds the hardening applied, inside a sandbox, to the agent's
// spawner thread: every command is forked from that thread and inherits its
// credentials, Landlock domain, seccomp filter and no_new_privs bit. The
// calls below act on the calling thread only (the Go runtime's all-threads
// syscalls are unavailable when cgo is linked in, as under -race), which is
// why the spawner is a locked OS thread that never runs anything else.

// landlockABI returns the kernel's Landlock ABI version, or 0 without
// Landlock.
func landlockABI() int {
	v, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	if errno != 0 {
		return 0
	}
	return int(v)
}

// landlockRulesetAttr is struct landlock_ruleset_attr up to the scoped field
// (ABI 6); older kernels get the shorter prefix they know.
type landlockRulesetAttr struct {
	handledFS  uint64
	handledNet uint64
	scoped     uint64
}

// Landlock filesystem rights by the ABI that introduced them.
const (
	llFSv1 = unix.LANDLOCK_ACCESS_FS_EXECUTE | unix.LANDLOCK_ACCESS_FS_WRITE_FILE |
		unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_READ_DIR |
		unix.LANDLOCK_ACCESS_FS_REMOVE_DIR | unix.LANDLOCK_ACCESS_FS_REMOVE_FILE |
		unix.LANDLOCK_ACCESS_FS_MAKE_CHAR | unix.LANDLOCK_ACCESS_FS_MAKE_DIR |
		unix.LANDLOCK_ACCESS_FS_MAKE_REG | unix.LANDLOCK_ACCESS_FS_MAKE_SOCK |
		unix.LANDLOCK_ACCESS_FS_MAKE_FIFO | unix.LANDLOCK_ACCESS_FS_MAKE_BLOCK |
		unix.LANDLOCK_ACCESS_FS_MAKE_SYM
	llFSRefer    = unix.LANDLOCK_ACCESS_FS_REFER    // ABI 2
	llFSTruncate = unix.LANDLOCK_ACCESS_FS_TRUNCATE // ABI 3
	llFSIoctlDev = 1 << 15                          // ABI 5: LANDLOCK_ACCESS_FS_IOCTL_DEV
	llReadOnly   = unix.LANDLOCK_ACCESS_FS_EXECUTE | unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_READ_DIR

	llScopeAbstractUnix = 1 << 0 // ABI 6
	llScopeSignal       = 1 << 1 // ABI 6
)

// applyLandlock confines the calling thread's filesystem access: read and
// execute everywhere in the sandbox's root, write only beneath rw. With ABI 6
// it also scopes signals and abstract Unix sockets to the sandbox's commands,
// so they cannot signal the agent. It returns the ABI it used.
func applyLandlock(rw []string) (int, error) {
	abi := landlockABI()
	if abi < 1 {
		return 0, fmt.Errorf("landlock: not available")
	}
	handled := uint64(llFSv1)
	if abi >= 2 {
		handled |= llFSRefer
	}
	if abi >= 3 {
		handled |= llFSTruncate
	}
	if abi >= 5 {
		handled |= llFSIoctlDev
	}
	attr := landlockRulesetAttr{handledFS: handled}
	size := unsafe.Sizeof(attr)
	if abi >= 6 {
		attr.scoped = llScopeAbstractUnix | llScopeSignal
	} else {
		size = 16
	}
	fd, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, uintptr(unsafe.Pointer(&attr)), size, 0)
	if errno != 0 {
		return 0, fmt.Errorf("landlock: create ruleset: %w", errno)
	}
	defer unix.Close(int(fd))
	add := func(path string, access uint64) error {
		pfd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("landlock: %s: %w", path, err)
		}
		defer unix.Close(pfd)
		var st unix.Stat_t
		if err := unix.Fstat(pfd, &st); err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			access &= unix.LANDLOCK_ACCESS_FS_EXECUTE | unix.LANDLOCK_ACCESS_FS_WRITE_FILE |
				unix.LANDLOCK_ACCESS_FS_READ_FILE | llFSTruncate | llFSIoctlDev
		}
		rule := unix.LandlockPathBeneathAttr{Allowed_access: access & handled, Parent_fd: int32(pfd)}
		_, _, errno := unix.Syscall6(unix.SYS_LANDLOCK_ADD_RULE, fd, unix.LANDLOCK_RULE_PATH_BENEATH,
			uintptr(unsafe.Pointer(&rule)), 0, 0, 0)
		if errno != 0 {
			return fmt.Errorf("landlock: add rule for %s: %w", path, errno)
		}
		return nil
	}
	if err := add("/", llReadOnly); err != nil {
		return 0, err
	}
	for _, p := range rw {
		if err := add(p, handled); err != nil {
			return 0, err
		}
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return 0, fmt.Errorf("no_new_privs: %w", err)
	}
	if _, _, errno := unix.Syscall(unix.SYS_LANDLOCK_RESTRICT_SELF, fd, 0, 0); errno != 0 {
		return 0, fmt.Errorf("landlock: restrict self: %w", errno)
	}
	return abi, nil
}

// applySeccomp installs the filter of sandboxes with namespaces (see
// filter_linux.go) on the calling thread.
func applySeccomp() error { return installFilter(policyL2) }

// dropCapabilities empties the calling thread's bounding, ambient,
// inheritable, permitted and effective sets and locks the securebits so that
// executing a program as uid 0 grants nothing back.
func dropCapabilities() error {
	last := 40
	if b, err := readSmallFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		fmt.Sscanf(string(b), "%d", &last)
	}
	for c := 0; c <= last; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && err != unix.EINVAL {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	const secbits = 1<<0 | 1<<1 | 1<<2 | 1<<3 | 1<<6 | 1<<7 // NOROOT, NO_SETUID_FIXUP, NO_CAP_AMBIENT_RAISE, each locked
	if err := unix.Prctl(unix.PR_SET_SECUREBITS, secbits, 0, 0, 0); err != nil {
		return fmt.Errorf("set securebits: %w", err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	return nil
}
