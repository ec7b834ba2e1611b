package local

import (
	"errors"
	"io/fs"
	"os"
	"path"

	"golang.org/x/sys/unix"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// The sandbox's mounts (/dev/null, /dev/pts, /tmp, /workspace, the masks
// over /proc and /etc) live in its own mount namespace. The files API works
// from the host's, where the kernel does not refuse to unlink or rename a
// mount point of another namespace but detaches the mount: the files
// methods therefore refuse to remove, rename or replace one themselves.

// isMountRoot reports whether the final component of rel (not followed if
// it is a symbolic link) is the root of a mount.
func (f fsRoot) isMountRoot(rel string) (bool, error) {
	if rel == "." {
		return true, nil
	}
	var mounted bool
	err := f.as(func() error {
		dir, err := f.r.OpenFile(path.Dir(rel), os.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return err
		}
		defer dir.Close()
		mounted, err = statxMountRoot(int(dir.Fd()), path.Base(rel))
		return err
	})
	return mounted, err
}

func statxMountRoot(dirfd int, name string) (bool, error) {
	var stx unix.Statx_t
	if err := unix.Statx(dirfd, name, unix.AT_SYMLINK_NOFOLLOW|unix.AT_NO_AUTOMOUNT, unix.STATX_TYPE, &stx); err != nil {
		return false, &fs.PathError{Op: "statx", Path: name, Err: err}
	}
	return stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 && stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, nil
}

// mountIn returns the first mount point at or below rel ("" if none),
// without following symbolic links.
func (f fsRoot) mountIn(rel string) (string, error) {
	if m, err := f.isMountRoot(rel); err != nil || m {
		if m {
			return rel, nil
		}
		return "", err
	}
	var found string
	err := f.as(func() error {
		d, err := f.r.OpenFile(rel, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return nil // not a directory (or a link): nothing below
		}
		defer d.Close()
		found, err = mountBelow(int(d.Fd()), rel, 0)
		return err
	})
	return found, err
}

// mountBelow walks the directory dirfd (named name) for mount points.
func mountBelow(dirfd int, name string, depth int) (string, error) {
	if depth > 4096 {
		return "", &fs.PathError{Op: "walk", Path: name, Err: unix.ELOOP}
	}
	fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	d := os.NewFile(uintptr(fd), name)
	defer d.Close()
	for {
		ents, err := d.ReadDir(256)
		for _, e := range ents {
			m, serr := statxMountRoot(fd, e.Name())
			if serr != nil {
				if errors.Is(serr, fs.ErrNotExist) {
					continue
				}
				return "", serr
			}
			if m {
				return path.Join(name, e.Name()), nil
			}
			if e.IsDir() {
				sub, oerr := unix.Openat(fd, e.Name(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
				if oerr != nil {
					continue
				}
				found, werr := mountBelow(sub, path.Join(name, e.Name()), depth+1)
				unix.Close(sub)
				if werr != nil || found != "" {
					return found, werr
				}
			}
		}
		if err != nil {
			return "", nil // io.EOF, or the directory went away
		}
	}
}

// refuseMount fails with ErrPermissionDenied if rel is a mount point of
// the sandbox, or (with below) has one under it.
func (s *Sandbox) refuseMount(op, name, rel string, below bool) error {
	var m string
	var err error
	if below {
		m, err = s.root.mountIn(rel)
	} else if ok, e := s.root.isMountRoot(rel); ok {
		m = rel
	} else {
		err = e
	}
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // nothing there: the operation reports it
		}
		return s.fileErr(op, err)
	}
	if m != "" {
		return sandbox.Errorf(Name, s.id, op, sandbox.ErrPermissionDenied, "%s",
			"/"+m+" is a mount point of the sandbox (under "+name+"): the files API does not remove, rename or replace mounts")
	}
	return nil
}
