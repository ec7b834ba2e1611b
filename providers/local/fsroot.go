package local

import (
	"io/fs"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// fsRoot is an os.Root whose operations run, for an isolated sandbox made by
// root, with the filesystem credentials of the sandbox's root user
// (setfsuid/setfsgid on a locked thread). The file methods then have exactly
// the sandbox's own permissions: they cannot read what its commands cannot
// (the host's /etc/shadow behind a symbolic link, say), and what they create
// belongs to the sandbox, even on filesystems mounted inside its user
// namespace, where a host-root file could not be created at all.
type fsRoot struct {
	r   *os.Root
	uid int // -1: run as this process
}

// as runs fn with the sandbox's filesystem credentials.
func (f fsRoot) as(fn func() error) error {
	if f.uid < 0 {
		return fn()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// setfsuid reports the previous value, not errors: check by asking
	// again. On failure the thread is left locked (and so discarded).
	unix.Setfsgid(f.uid)
	unix.Setfsuid(f.uid)
	if prev, _ := unix.SetfsuidRetUid(f.uid); prev != f.uid {
		unix.Setfsuid(0)
		unix.Setfsgid(0)
		return &fs.PathError{Op: "setfsuid", Path: "", Err: unix.EPERM}
	}
	defer func() {
		unix.Setfsuid(os.Geteuid())
		unix.Setfsgid(os.Getegid())
	}()
	return fn()
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
