package local

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// probeCacheDir remembers, host-wide, that the namespace probe succeeded, so
// that a short-lived program (a CLI invocation) need not start a probe
// process each time. Only root uses it. Like uidLockDir, it must belong to
// root with mode 0700 and its parent must not be writable by others; a
// symbolic link or a looser directory is refused and the probe runs.
//
// An entry is an empty file named by a hash of everything the probe's
// answer depends on: the boot, the kernel, the program's file, the
// caller's ids, capabilities, seccomp and security labels, its namespaces
// and the sysctls that bound namespace creation. Anything different is
// another key, so a changed host probes again. Only success is remembered:
// a failure is probed again each time, so that a host that gains
// namespaces uses them; a stale success (a change the key does not see)
// fails closed, as Create then cannot start the sandbox.
var probeCacheDir = "/run/perimeter/probe"

// maxProbeCacheEntries bounds the directory (each rebuilt program is a new
// key); past it, the old entries are removed.
const maxProbeCacheEntries = 64

// probeCacheKey returns the cache key of this process, or "" when the cache
// does not apply (not root) or an input cannot be read.
func probeCacheKey() string {
	if os.Getuid() != 0 {
		return ""
	}
	h := sha256.New()
	add := func(name, v string) { fmt.Fprintf(h, "%s=%q\n", name, v) }
	read := func(path string, optional bool) bool {
		b, err := os.ReadFile(path)
		switch {
		case err == nil:
			add(path, string(b))
		case optional:
			// Absent, or no security module: that state is the input.
			add(path, "unreadable: "+err.Error())
		default:
			return false
		}
		return true
	}
	for _, p := range []string{"/proc/sys/kernel/random/boot_id", "/proc/sys/kernel/osrelease", "/proc/sys/kernel/version",
		"/proc/sys/user/max_user_namespaces", "/proc/sys/user/max_mnt_namespaces", "/proc/sys/user/max_pid_namespaces",
		"/proc/sys/user/max_net_namespaces", "/proc/sys/user/max_ipc_namespaces", "/proc/sys/user/max_uts_namespaces",
		"/proc/self/uid_map", "/proc/self/gid_map", "/proc/self/cgroup"} {
		if !read(p, false) {
			return ""
		}
	}
	for _, p := range []string{"/proc/sys/kernel/unprivileged_userns_clone", "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
		"/proc/self/attr/current"} {
		if !read(p, true) {
			return ""
		}
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(status), "\n") {
		for _, f := range []string{"Uid:", "Gid:", "Cap", "NoNewPrivs:", "Seccomp:"} {
			if strings.HasPrefix(line, f) {
				add("status", line)
			}
		}
	}
	for _, ns := range []string{"user", "mnt", "pid", "net", "ipc", "uts", "cgroup"} {
		l, err := os.Readlink("/proc/self/ns/" + ns)
		if err != nil {
			return ""
		}
		add("ns", l)
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &st); err != nil {
		return ""
	}
	add("exe", fmt.Sprint(st.Dev, st.Ino, st.Size, st.Mtim.Nano(), st.Ctim.Nano()))
	return hex.EncodeToString(h.Sum(nil))
}

// openProbeCacheDir makes (if missing) and opens the cache directory,
// checking it and its parent as openUIDLockDir does.
func openProbeCacheDir(dir string) (int, error) {
	dir = filepath.Clean(dir)
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return -1, err
	}
	pfd, err := unix.Open(parent, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(pfd)
	if err := checkRootDir(pfd, parent, 0o022); err != nil {
		return -1, err
	}
	base := filepath.Base(dir)
	if err := unix.Mkdirat(pfd, base, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, err
	}
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := checkRootDir(fd, dir, 0o077); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// probeCacheHit reports whether a success is recorded under key in dir: a
// regular file of root's, closed to others, not a link.
func probeCacheHit(dir, key string) bool {
	dfd, err := openProbeCacheDir(dir)
	if err != nil {
		return false
	}
	defer unix.Close(dfd)
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, key, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return false
	}
	return st.Mode&unix.S_IFMT == unix.S_IFREG && st.Uid == 0 && st.Mode&0o077 == 0
}

// probeCacheStore records a success under key in dir, best effort.
func probeCacheStore(dir, key string) {
	dfd, err := openProbeCacheDir(dir)
	if err != nil {
		return
	}
	defer unix.Close(dfd)
	// Names come from the path, removals go through the checked descriptor.
	if entries, err := os.ReadDir(dir); err == nil && len(entries) >= maxProbeCacheEntries {
		for _, e := range entries {
			unix.Unlinkat(dfd, e.Name(), 0)
		}
	}
	tmp := key + ".tmp" + strconv.Itoa(os.Getpid())
	fd, err := unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return
	}
	unix.Close(fd)
	if unix.Renameat(dfd, tmp, dfd, key) != nil {
		unix.Unlinkat(dfd, tmp, 0)
	}
}
