package local

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// uidLockDir holds one lock file per uid range in use, host-wide: a provider
// holds an flock on its sandboxes' ranges while they live, so two processes
// never hand out the same range, and a crashed process's locks go with it.
// The directory must belong to root and be closed to others (0700); its
// parent must not be writable by others either. Anything else (a symbolic
// link, another owner, a looser mode) is refused rather than used.
var uidLockDir = "/run/perimeter/uids"

// legacyUIDLockDir is where providers of earlier versions kept their locks.
// A lock file there that root owns is honoured (never created), so that
// both versions running on one host never share a range.
var legacyUIDLockDir = "/run/lock"

// openUIDLockDir makes (if missing) and opens the lock directory, checking
// it and its parent.
func openUIDLockDir() (int, error) {
	dir := filepath.Clean(uidLockDir)
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return -1, fmt.Errorf("uid range locks: %w", err)
	}
	pfd, err := unix.Open(parent, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("uid range locks: open %s: %w", parent, err)
	}
	defer unix.Close(pfd)
	if err := checkRootDir(pfd, parent, 0o022); err != nil {
		return -1, err
	}
	base := filepath.Base(dir)
	if err := unix.Mkdirat(pfd, base, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, fmt.Errorf("uid range locks: make %s: %w", dir, err)
	}
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("uid range locks: open %s (a symbolic link is refused): %w", dir, err)
	}
	if err := checkRootDir(fd, dir, 0o077); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// checkRootDir checks that the open directory fd belongs to root and has
// none of the permission bits in forbidden.
func checkRootDir(fd int, name string, forbidden uint32) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("uid range locks: %s: %w", name, err)
	}
	if st.Uid != 0 || st.Mode&forbidden != 0 {
		return fmt.Errorf("uid range locks: %s must belong to root and not be writable by others (mode %#o, owner %d): refused", name, st.Mode&0o7777, st.Uid)
	}
	return nil
}

// allocUIDRange takes the first free range, in order, so that the lock files
// stay as few as the sandboxes that ever ran at once.
func allocUIDRange() (uidRange, error) {
	if os.Getuid() != 0 {
		return uidRange{base: os.Getuid()}, nil
	}
	dfd, err := openUIDLockDir()
	if err != nil {
		return uidRange{}, err
	}
	defer unix.Close(dfd)
	for slot := 0; slot < uidRangeSlots; slot++ {
		name := strconv.Itoa(slot) + ".lock"
		fd, err := unix.Openat(dfd, name, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return uidRange{}, fmt.Errorf("uid range lock %s: %w", filepath.Join(uidLockDir, name), err)
		}
		f := os.NewFile(uintptr(fd), filepath.Join(uidLockDir, name))
		if unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) != nil {
			f.Close()
			continue
		}
		if legacy, ok := lockLegacySlot(slot); ok {
			return uidRange{base: uidRangeStart + slot*uidRangeSize, lock: f, legacy: legacy}, nil
		}
		f.Close()
	}
	return uidRange{}, errors.New("every uid range is in use")
}

// lockLegacySlot locks slot's lock file of earlier versions if one exists
// and belongs to root; ok is false when another process holds it.
func lockLegacySlot(slot int) (f *os.File, ok bool) {
	p := filepath.Join(legacyUIDLockDir, "perimeter-uid-"+strconv.Itoa(slot)+".lock")
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, true // none (or not a plain file): nothing to honour
	}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Uid != 0 || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, true
	}
	if unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) != nil {
		unix.Close(fd)
		return nil, false
	}
	return os.NewFile(uintptr(fd), p), true
}
