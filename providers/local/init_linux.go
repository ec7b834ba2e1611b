package local

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// initEnv marks a process started by the provider to become a sandbox's init.
const initEnv = "PERIMETER_LOCAL_INIT"

// File descriptors the provider passes to a sandbox's init.
const (
	fdConfig    = 3 // read end of a pipe carrying the initConfig as JSON
	fdReady     = 4 // write end of a pipe; init writes an initReport
	fdWorkspace = 5 // the workspace directory
	fdControl   = 6 // the control directory, where init creates agent.sock
	fdNet       = 7 // the directory holding proxy.sock (allowlist mode)
	fdRootFS    = 8 // the caller's root filesystem directory (image mode)
)

func init() {
	// A sandbox's init is this very binary, started again with initEnv set.
	// Taking over here, before main, means any program that imports the
	// package can host isolated sandboxes, with or without calling Init.
	Init()
}

// Init turns the process into a sandbox's init when the provider started it
// for that purpose, and returns at once otherwise. The package calls it from
// its own init function, so calling it at the top of main is optional; it is
// documented so that a program can make the hand-over explicit:
//
//	func main() {
//		local.Init()
//		...
//	}
func Init() {
	mode := os.Getenv(initEnv)
	if mode == "" || (mode != "l1" && os.Getpid() != 1) {
		return
	}
	os.Unsetenv(initEnv)
	if mode == "l1" || mode == "sandbox" {
		// Only descriptors 0-2 and the provider's 3-8 are meant for the
		// init; anything else the host left inheritable goes now.
		closeInheritedFDs(fdRootFS + 1)
	}
	switch mode {
	case "probe":
		// Reaching here in fresh namespaces is the answer; the provider
		// reads it here rather than wait for the kernel to tear them down.
		os.Stdout.WriteString(probeOK)
		os.Exit(0)
	case "l1":
		if err := runInitL1(); err != nil {
			report(initReport{Error: err.Error()})
			os.Exit(1)
		}
		os.Exit(0)
	case "sandbox":
		if err := runInit(); err != nil {
			report(initReport{Error: err.Error()})
			os.Exit(1)
		}
		os.Exit(0)
	default:
		os.Exit(2)
	}
}

// initConfig is what the provider tells a sandbox's init.
type initConfig struct {
	Hostname string `json:"hostname"`
	NetNS    bool   `json:"netns"`
	Proxy    bool   `json:"proxy"`
	RootFS   bool   `json:"rootfs"`    // mount fdRootFS as an overlay lower layer
	TmpBytes int64  `json:"tmp_bytes"` // size of the writable tmpfs layers; 0 means half of RAM
	// BootID is the sandbox's own /proc/sys/kernel/random/boot_id.
	BootID string `json:"boot_id,omitempty"`
	// WorkspaceBytes, if not zero, makes /workspace a tmpfs of this size
	// instead of the host's workspace directory (Resources.Disk).
	WorkspaceBytes int64 `json:"workspace_bytes,omitempty"`
	// Paths, by descriptor slot, that init must clone a mount of itself
	// (when the host could not pass a mount: an unprivileged provider).
	Paths map[int]string `json:"paths,omitempty"`
	// Rlimits are applied to commands when no cgroup is available.
	RlimitNPROC uint64 `json:"rlimit_nproc,omitempty"`
	RlimitAS    uint64 `json:"rlimit_as,omitempty"`
	// L1 is set for a sandbox without namespaces.
	L1 *l1Config `json:"l1,omitempty"`
}

// initReport is what a sandbox's init answers once ready, or on failure.
type initReport struct {
	Error       string `json:"error,omitempty"`
	LandlockABI int    `json:"landlock_abi"`
	Seccomp     bool   `json:"seccomp"`
	NoNewPrivs  bool   `json:"no_new_privs"`
	CapsDropped bool   `json:"caps_dropped"`
	NoUserNS    bool   `json:"no_nested_userns"`
}

func report(r initReport) {
	f := os.NewFile(fdReady, "ready")
	json.NewEncoder(f).Encode(r)
	f.Close()
}

// runInit builds the sandbox's root, becomes its agent and serves until
// killed.
func runInit() error {
	cfgFile := os.NewFile(fdConfig, "config")
	var cfg initConfig
	if err := json.NewDecoder(cfgFile).Decode(&cfg); err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	cfgFile.Close()
	reserved := startReserve() // made while the rest is set up

	ln, err := buildRoot(&cfg)
	if err != nil {
		return err
	}
	for _, fd := range []int{fdWorkspace, fdControl, fdNet, fdRootFS} {
		unix.Close(fd)
	}
	if cfg.Hostname != "" {
		unix.Sethostname([]byte(cfg.Hostname))
	}
	if cfg.NetNS {
		if err := loopbackUp(); err != nil {
			return fmt.Errorf("bring up lo: %w", err)
		}
	}
	var rep initReport
	// Nested user namespaces are refused twice: by the seccomp filter
	// (clone with a namespace flag, unshare, setns) and by this limit, which
	// is per user namespace and ours to set. A limit that did not take is a
	// failure.
	if err := forbidNestedUserNS(); err != nil {
		return err
	}
	rep.NoUserNS = true
	if cfg.RlimitNPROC > 0 {
		unix.Setrlimit(unix.RLIMIT_NPROC, &unix.Rlimit{Cur: cfg.RlimitNPROC, Max: cfg.RlimitNPROC})
	}
	// Commands run as the same uid as the agent; without this, they could
	// open /proc/1/fd and /proc/1/root.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("set not dumpable: %w", err)
	}
	a := newAgent(ln, cfg.Proxy)
	a.rlimitAS = cfg.RlimitAS
	hr, err := a.startSpawner()
	if err != nil {
		return err
	}
	<-reserved
	rep.LandlockABI, rep.Seccomp, rep.NoNewPrivs, rep.CapsDropped = hr.LandlockABI, hr.Seccomp, hr.NoNewPrivs, hr.CapsDropped
	report(rep)
	a.serve()
	return nil
}

// forbidNestedUserNS sets user.max_user_namespaces to 0 in the sandbox's
// user namespace and checks that it reads back as 0.
func forbidNestedUserNS() error {
	const sysctl = "/proc/sys/user/max_user_namespaces"
	if err := os.WriteFile(sysctl, []byte("0"), 0); err != nil {
		return fmt.Errorf("forbid nested user namespaces: %w", err)
	}
	b, err := os.ReadFile(sysctl)
	if err != nil {
		return fmt.Errorf("forbid nested user namespaces: %w", err)
	}
	if v := string(b); v != "0\n" {
		return fmt.Errorf("forbid nested user namespaces: %s reads %q after writing 0", sysctl, v)
	}
	return nil
}

// hostDirs are bound read-only from the host into the default root.
var hostDirs = []string{"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc"}

// maskedFiles are hidden behind /dev/null in the default root; maskedDirs
// behind an empty read-only tmpfs.
var (
	maskedFiles = []string{"etc/shadow", "etc/shadow-", "etc/gshadow", "etc/gshadow-", "etc/sudoers", "etc/security/opasswd"}
	maskedDirs  = []string{"etc/ssh", "etc/sudoers.d", "etc/ssl/private"}
)

// buildRoot makes the sandbox's root filesystem and pivots into it. It
// returns the agent's listener, created in the control directory before the
// host's filesystem goes out of reach.
func buildRoot(cfg *initConfig) (net.Listener, error) {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return nil, fmt.Errorf("make / private: %w", err)
	}
	for slot, p := range cfg.Paths {
		fd, err := unix.OpenTree(unix.AT_FDCWD, p, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
		if err != nil {
			return nil, fmt.Errorf("clone a mount of %s: %w", p, err)
		}
		if err := unix.Dup3(fd, slot, 0); err != nil {
			return nil, err
		}
		unix.Close(fd)
	}
	// Scratch space: a tmpfs over /tmp in this mount namespace only.
	tmpOpt := "mode=0755"
	if cfg.TmpBytes > 0 {
		tmpOpt += ",size=" + strconv.FormatInt(cfg.TmpBytes, 10)
	}
	const scratch = "/tmp"
	if err := unix.Mount("tmpfs", scratch, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, tmpOpt); err != nil {
		return nil, fmt.Errorf("mount scratch tmpfs: %w", err)
	}
	r := filepath.Join(scratch, "root")
	if err := os.Mkdir(r, 0o755); err != nil {
		return nil, err
	}
	if cfg.RootFS {
		lower := filepath.Join(scratch, "lower")
		for _, d := range []string{lower, scratch + "/upper", scratch + "/work"} {
			if err := os.Mkdir(d, 0o755); err != nil {
				return nil, err
			}
		}
		if err := attach(fdRootFS, lower); err != nil {
			return nil, fmt.Errorf("bind rootfs: %w", err)
		}
		opts := "lowerdir=" + lower + ",upperdir=" + scratch + "/upper,workdir=" + scratch + "/work"
		if err := unix.Mount("overlay", r, "overlay", 0, opts+",userxattr"); err != nil {
			if err2 := unix.Mount("overlay", r, "overlay", 0, opts); err2 != nil {
				return nil, fmt.Errorf("mount overlay root: %w", err)
			}
		}
	} else {
		if err := unix.Mount(r, r, "", unix.MS_BIND, ""); err != nil {
			return nil, fmt.Errorf("bind root: %w", err)
		}
		for _, d := range hostDirs {
			if err := bindHost(r, d); err != nil {
				return nil, err
			}
		}
		for _, f := range maskedFiles {
			if fi, err := os.Lstat(filepath.Join(r, f)); err == nil && fi.Mode().IsRegular() {
				if err := unix.Mount("/dev/null", filepath.Join(r, f), "", unix.MS_BIND, ""); err != nil {
					return nil, fmt.Errorf("mask %s: %w", f, err)
				}
			}
		}
		for _, d := range maskedDirs {
			if fi, err := os.Lstat(filepath.Join(r, d)); err == nil && fi.IsDir() {
				if err := unix.Mount("tmpfs", filepath.Join(r, d), "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=4k,mode=0755"); err != nil {
					return nil, fmt.Errorf("mask %s: %w", d, err)
				}
			}
		}
	}
	mk := func(p string, mode os.FileMode) error {
		if err := os.MkdirAll(filepath.Join(r, p), mode); err != nil {
			return fmt.Errorf("make %s: %w", p, err)
		}
		return nil
	}
	// /workspace: the host's workspace directory, read-write.
	if err := mk("workspace", 0o755); err != nil {
		return nil, err
	}
	if cfg.WorkspaceBytes > 0 {
		if err := unix.Mount("tmpfs", filepath.Join(r, "workspace"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"+sizeOpt(cfg.WorkspaceBytes)); err != nil {
			return nil, fmt.Errorf("mount the workspace tmpfs: %w", err)
		}
	} else {
		if err := attach(fdWorkspace, filepath.Join(r, "workspace")); err != nil {
			return nil, fmt.Errorf("bind workspace: %w", err)
		}
		setattr(filepath.Join(r, "workspace"), unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV)
	}
	// /tmp: private.
	if err := mk("tmp", 0o1777); err != nil {
		return nil, err
	}
	if err := unix.Mount("tmpfs", filepath.Join(r, "tmp"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"+sizeOpt(cfg.TmpBytes)); err != nil {
		return nil, fmt.Errorf("mount /tmp: %w", err)
	}
	// /proc: this pid namespace's.
	if err := mk("proc", 0o555); err != nil {
		return nil, err
	}
	if err := unix.Mount("proc", filepath.Join(r, "proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return nil, fmt.Errorf("mount /proc: %w", err)
	}
	if err := maskProc(scratch, filepath.Join(r, "proc"), cfg.BootID); err != nil {
		return nil, err
	}
	if err := buildDev(r); err != nil {
		return nil, err
	}
	if cfg.Proxy {
		if err := mk("run/perimeter", 0o755); err != nil {
			return nil, err
		}
		if err := attach(fdNet, filepath.Join(r, "run/perimeter")); err != nil {
			return nil, fmt.Errorf("bind proxy socket directory: %w", err)
		}
		setattr(filepath.Join(r, "run/perimeter"), unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC)
	}

	// The agent's socket, in the control directory on the host.
	if err := unix.Fchdir(fdControl); err != nil {
		return nil, fmt.Errorf("enter control directory: %w", err)
	}
	ln, err := net.Listen("unix", agentSocket)
	if err != nil {
		return nil, fmt.Errorf("listen on the agent socket: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)

	if err := os.Chdir(r); err != nil {
		return nil, err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return nil, fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return nil, fmt.Errorf("detach the host's root: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return nil, err
	}
	if !cfg.RootFS {
		// The root itself (a directory of mount points) is read-only.
		// The root itself (a tmpfs of mount points) is read-only: only the
		// root mount, the mounts on it keep their own flags.
		if err := unix.MountSetattr(unix.AT_FDCWD, "/", 0, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}); err != nil {
			return nil, fmt.Errorf("make / read-only: %w", err)
		}
	}
	return ln, nil
}

const agentSocket = "agent.sock"

// attach mounts the detached mount fd (from open_tree) at target.
func attach(fd int, target string) error {
	return unix.MoveMount(fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH)
}

func sizeOpt(n int64) string {
	if n <= 0 {
		return ""
	}
	return ",size=" + strconv.FormatInt(n, 10)
}

// setattr changes the attributes of the mount at path and every mount below
// it.
func setattr(path string, attr uint64) error {
	return unix.MountSetattr(unix.AT_FDCWD, path, unix.AT_RECURSIVE, &unix.MountAttr{Attr_set: attr})
}

// bindHost binds the host's /d into r read-only, or copies it as a symbolic
// link (merged-/usr systems link /bin to usr/bin).
func bindHost(r, d string) error {
	src := "/" + d
	fi, err := os.Lstat(src)
	if err != nil {
		return nil // absent on this host
	}
	dst := filepath.Join(r, d)
	if fi.Mode()&os.ModeSymlink != 0 {
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		return os.Symlink(target, dst)
	}
	if !fi.IsDir() {
		return nil
	}
	if err := os.Mkdir(dst, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", src, err)
	}
	if err := setattr(dst, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV); err != nil {
		return fmt.Errorf("make %s read-only: %w", src, err)
	}
	return nil
}

// buildDev makes a minimal /dev: null, zero, full, random, urandom and tty
// bound from the host, a private devpts, /dev/shm and the usual links.
func buildDev(r string) error {
	dev := filepath.Join(r, "dev")
	if err := os.Mkdir(dev, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755,size=64k"); err != nil {
		return fmt.Errorf("mount /dev: %w", err)
	}
	for _, n := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		p := filepath.Join(dev, n)
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		f.Close()
		if err := unix.Mount("/dev/"+n, p, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind /dev/%s: %w", n, err)
		}
	}
	for _, d := range []string{"pts", "shm"} {
		if err := os.Mkdir(filepath.Join(dev, d), 0o755); err != nil {
			return err
		}
	}
	if err := unix.Mount("devpts", filepath.Join(dev, "pts"), "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"); err != nil {
		return fmt.Errorf("mount /dev/pts: %w", err)
	}
	if err := unix.Mount("tmpfs", filepath.Join(dev, "shm"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777,size=64m"); err != nil {
		return fmt.Errorf("mount /dev/shm: %w", err)
	}
	links := map[string]string{
		"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
		"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(dev, name)); err != nil {
			return err
		}
	}
	return nil
}

// loopbackUp brings up lo in the sandbox's network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

func readSmallFile(p string) ([]byte, error) { return os.ReadFile(p) }

var _ = syscall.SIGCHLD
