package local

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fsRoot is an os.Root whose operations run, for an isolated sandbox made by
// root, with the credentials of the sandbox's root user: on a locked thread,
// the effective (and so filesystem) uid and gid become the sandbox's, the
// supplementary groups are dropped, and with the effective uid no longer 0
// the thread holds no capability at all. The file methods then have exactly
// the sandbox's own permissions: they cannot read what its commands cannot
// (the host's /etc/shadow behind a symbolic link, the agent's /proc entries,
// real kernel addresses), and what they create belongs to the sandbox, even
// on filesystems mounted inside its user namespace.
type fsRoot struct {
	r   *os.Root
	uid int // -1: run as this process
}

// as runs fn with the sandbox's credentials. The changes are made with raw
// system calls, which (unlike the syscall package's wrappers) affect this
// thread only, and undone before the thread is released.
func (f fsRoot) as(fn func() error) error {
	if f.uid < 0 {
		return fn()
	}
	runtime.LockOSThread()
	groups, err := unix.Getgroups()
	if err != nil {
		runtime.UnlockOSThread()
		return &fs.PathError{Op: "getgroups", Err: err}
	}
	egid := os.Getegid()
	// On a failure to restore, the thread stays locked to this goroutine
	// with less privilege, never more, and is discarded when it ends.
	restore := func() bool {
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 0, ^uintptr(0)); e != 0 {
			return false
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, ^uintptr(0), uintptr(egid), ^uintptr(0)); e != 0 {
			return false
		}
		return setgroupsThread(groups) == nil
	}
	fail := func(op string, e error) error {
		if restore() {
			runtime.UnlockOSThread()
		}
		return &fs.PathError{Op: op, Err: e}
	}
	if err := setgroupsThread(nil); err != nil {
		return fail("setgroups", err)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, ^uintptr(0), uintptr(f.uid), ^uintptr(0)); e != 0 {
		return fail("setresgid", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(f.uid), ^uintptr(0)); e != 0 {
		return fail("setresuid", e)
	}
	defer func() {
		if restore() {
			runtime.UnlockOSThread()
		}
	}()
	return fn()
}

// setgroupsThread sets this thread's supplementary groups.
func setgroupsThread(groups []int) error {
	gids := make([]uint32, len(groups))
	for i, g := range groups {
		gids[i] = uint32(g)
	}
	var p unsafe.Pointer
	if len(gids) > 0 {
		p = unsafe.Pointer(&gids[0])
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(gids)), uintptr(p), 0); e != 0 {
		return e
	}
	return nil
}

func (f fsRoot) Close() error { return f.r.Close() }

func (f fsRoot) OpenFile(name string, flag int, perm fs.FileMode) (file *os.File, err error) {
	err = f.as(func() error { file, err = f.r.OpenFile(name, flag, perm); return err })
	return file, err
}

func (f fsRoot) Open(name string) (*os.File, error) { return f.OpenFile(name, os.O_RDONLY, 0) }

func (f fsRoot) Lstat(name string) (fi fs.FileInfo, err error) {
	err = f.as(func() error { fi, err = f.r.Lstat(name); return err })
	return fi, err
}

func (f fsRoot) Stat(name string) (fi fs.FileInfo, err error) {
	err = f.as(func() error { fi, err = f.r.Stat(name); return err })
	return fi, err
}

func (f fsRoot) Rename(from, to string) error {
	return f.as(func() error { return f.r.Rename(from, to) })
}

func (f fsRoot) Remove(name string) error {
	return f.as(func() error { return f.r.Remove(name) })
}

func (f fsRoot) RemoveAll(name string) error {
	return f.as(func() error { return f.r.RemoveAll(name) })
}

func (f fsRoot) MkdirAll(name string, perm fs.FileMode) error {
	return f.as(func() error { return f.r.MkdirAll(name, perm) })
}

func (f fsRoot) Mkdir(name string, perm fs.FileMode) error {
	return f.as(func() error { return f.r.Mkdir(name, perm) })
}

func (f fsRoot) Chmod(name string, perm fs.FileMode) error {
	return f.as(func() error { return f.r.Chmod(name, perm) })
}

// maxProcFile bounds what ReadFile reads of one /proc file.
const maxProcFile = 16 << 20

// isProcFS reports whether f is on a proc filesystem.
func isProcFS(f *os.File) bool {
	var st unix.Statfs_t
	return unix.Fstatfs(int(f.Fd()), &st) == nil && st.Type == unix.PROC_SUPER_MAGIC
}

// readProc reads the /proc file f whole with the sandbox's credentials. A
// provider that is not root cannot take them: its user owns the sandbox's
// user namespace and so holds every capability in it, which would show it
// what the sandbox's commands cannot see; it refuses instead.
func (s *Sandbox) readProc(f *os.File) ([]byte, error) {
	if s.iso != nil && s.iso.l1 == nil && s.root.uid < 0 {
		return nil, &fs.PathError{Op: "read", Path: f.Name(), Err: fmt.Errorf("%w: the files API reads /proc only when the provider runs as root (run cat in the sandbox instead)", fs.ErrPermission)}
	}
	var b []byte
	err := s.root.as(func() error {
		var err error
		b, err = io.ReadAll(io.LimitReader(f, maxProcFile+1))
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(b) > maxProcFile {
		return nil, &fs.PathError{Op: "read", Path: f.Name(), Err: fmt.Errorf("%w: larger than %d bytes", unix.EFBIG, maxProcFile)}
	}
	return b, nil
}
