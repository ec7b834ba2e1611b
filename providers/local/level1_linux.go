package local

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/perimeter-sdk/perimeter/internal/procgroup"
)

// L1: where namespaces are unavailable, the agent runs as a plain host
// process (as an unprivileged uid when the provider is root) and every
// command is confined by Landlock (reads limited to the system directories
// and a few device nodes, writes to the workspace and a private tmp), the L1
// seccomp filter (filter_linux.go: no System V IPC or message queues, no
// Unix or netlink sockets, IP sockets by network mode), Landlock TCP rules
// (allowlist mode: connect only to the proxy's port) and cgroups or rlimits.
// There is no pid, mount, IPC or network namespace: commands see the host's
// process list and command lines, its root directory layout and, through
// /proc/net, its network details; the agent's socket is a file in the host's
// filesystem that only the refusal of socket(AF_UNIX) keeps commands from.

// l1Config is the part of initConfig only L1 uses.
type l1Config struct {
	Workspace string `json:"workspace"`
	Tmp       string `json:"tmp"`
	Network   string `json:"network"`    // "none", "proxy" or "host"
	ProxyPort int    `json:"proxy_port"` // the host proxy, in proxy mode
}

// l1ReadDirs are what commands may read and execute at L1. /dev is not
// among them: its /dev/shm and /dev/mqueue are the host's.
var l1ReadDirs = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/proc", "/opt"}

// l1WriteDevices are the device nodes commands may read and write at L1, and
// all they reach in /dev (whose symbolic links, such as /dev/stdout and
// /dev/fd, lead into /proc).
var l1WriteDevices = []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/tty", "/dev/ptmx", "/dev/pts", "/dev/random", "/dev/urandom"}

// runInitL1 is a sandbox's init at L1.
func runInitL1() error {
	cfgFile := os.NewFile(fdConfig, "config")
	var cfg initConfig
	if err := json.NewDecoder(cfgFile).Decode(&cfg); err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	cfgFile.Close()
	reserved := startReserve() // made while the rest is set up
	if cfg.L1 == nil {
		return fmt.Errorf("no L1 configuration")
	}
	if err := unix.Fchdir(fdControl); err != nil {
		return fmt.Errorf("enter control directory: %w", err)
	}
	ln, err := net.Listen("unix", agentSocket)
	if err != nil {
		return fmt.Errorf("listen on the agent socket: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	unix.Close(fdControl)
	if err := os.Chdir(cfg.L1.Workspace); err != nil {
		return err
	}
	if cfg.RlimitNPROC > 0 {
		unix.Setrlimit(unix.RLIMIT_NPROC, &unix.Rlimit{Cur: cfg.RlimitNPROC, Max: cfg.RlimitNPROC})
	}
	// Orphans of commands become the agent's children, so that Terminate
	// can find and kill every one of them.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("become a subreaper: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("set not dumpable: %w", err)
	}
	a := newAgent(ln, false)
	a.rlimitAS = cfg.RlimitAS
	a.l1 = cfg.L1
	hr, err := a.startSpawner()
	if err != nil {
		return err
	}
	<-reserved
	report(hr)
	a.serve()
	return nil
}

// hardenL1 is the spawner thread's hardening at L1.
func hardenL1(c *l1Config) (initReport, error) {
	var rep initReport
	// As an unprivileged uid there is nothing to drop but the bounding set,
	// which no_new_privs makes moot; as a privileged one, drop everything.
	var hdr = unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err == nil && (data[0].Effective != 0 || data[1].Effective != 0) {
		if err := dropCapabilities(); err != nil {
			return rep, err
		}
	}
	rep.CapsDropped = true
	abi := landlockABI()
	if abi < 1 {
		return rep, fmt.Errorf("landlock: not available")
	}
	var rules []llRule
	for _, d := range l1ReadDirs {
		rules = append(rules, llRule{path: d, access: llReadOnly})
	}
	for _, d := range l1WriteDevices {
		rules = append(rules, llRule{path: d, access: llAllFS})
	}
	rules = append(rules, llRule{path: c.Workspace, access: llAllFS}, llRule{path: c.Tmp, access: llAllFS})
	var ports []uint64
	netHandled := uint64(0)
	switch c.Network {
	case "none":
		if abi >= 4 {
			netHandled = unix.LANDLOCK_ACCESS_NET_BIND_TCP | unix.LANDLOCK_ACCESS_NET_CONNECT_TCP
		}
	case "proxy":
		if abi < 4 {
			return rep, fmt.Errorf("landlock ABI %d has no TCP rules: the allowlist cannot be enforced without namespaces", abi)
		}
		netHandled = unix.LANDLOCK_ACCESS_NET_BIND_TCP | unix.LANDLOCK_ACCESS_NET_CONNECT_TCP
		ports = []uint64{uint64(c.ProxyPort)}
	}
	if err := restrictLandlock(abi, rules, netHandled, ports); err != nil {
		return rep, err
	}
	rep.LandlockABI, rep.NoNewPrivs = abi, true
	if err := applySeccompL1(c.Network); err != nil {
		return rep, err
	}
	rep.Seccomp = true
	return rep, nil
}

type llRule struct {
	path   string
	access uint64
}

const llAllFS = ^uint64(0)

type landlockNetPortAttr struct {
	allowed uint64
	port    uint64
}

// restrictLandlock applies rules to the calling thread; paths that do not
// exist are skipped. netHandled TCP rights are denied except connecting to
// ports.
func restrictLandlock(abi int, rules []llRule, netHandled uint64, ports []uint64) error {
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
	attr := landlockRulesetAttr{handledFS: handled, handledNet: netHandled}
	size := unsafe.Sizeof(attr)
	if abi >= 6 {
		attr.scoped = llScopeAbstractUnix | llScopeSignal
	} else {
		size = 16
	}
	fd, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, uintptr(unsafe.Pointer(&attr)), size, 0)
	if errno != 0 {
		return fmt.Errorf("landlock: create ruleset: %w", errno)
	}
	defer unix.Close(int(fd))
	for _, r := range rules {
		pfd, err := unix.Open(r.path, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			continue // absent on this host
		}
		access := r.access & handled
		var st unix.Stat_t
		if unix.Fstat(pfd, &st) == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			access &= unix.LANDLOCK_ACCESS_FS_EXECUTE | unix.LANDLOCK_ACCESS_FS_WRITE_FILE |
				unix.LANDLOCK_ACCESS_FS_READ_FILE | llFSTruncate | llFSIoctlDev
		}
		rule := unix.LandlockPathBeneathAttr{Allowed_access: access, Parent_fd: int32(pfd)}
		_, _, errno := unix.Syscall6(unix.SYS_LANDLOCK_ADD_RULE, fd, unix.LANDLOCK_RULE_PATH_BENEATH, uintptr(unsafe.Pointer(&rule)), 0, 0, 0)
		unix.Close(pfd)
		if errno != 0 {
			return fmt.Errorf("landlock: add rule for %s: %w", r.path, errno)
		}
	}
	for _, port := range ports {
		rule := landlockNetPortAttr{allowed: unix.LANDLOCK_ACCESS_NET_CONNECT_TCP, port: port}
		_, _, errno := unix.Syscall6(unix.SYS_LANDLOCK_ADD_RULE, fd, 2 /* LANDLOCK_RULE_NET_PORT */, uintptr(unsafe.Pointer(&rule)), 0, 0, 0)
		if errno != 0 {
			return fmt.Errorf("landlock: allow port %d: %w", port, errno)
		}
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	if _, _, errno := unix.Syscall(unix.SYS_LANDLOCK_RESTRICT_SELF, fd, 0, 0); errno != 0 {
		return fmt.Errorf("landlock: restrict self: %w", errno)
	}
	return nil
}

// applySeccompL1 installs the L1 filter for the network mode (see
// filter_linux.go) on the calling thread.
func applySeccompL1(network string) error { return installFilter(policyL1(network)) }

// killDescendants kills every child of the agent (a subreaper, so orphans
// are its children too) until none is left or the deadline passes.
func killDescendants(deadline time.Time) {
	me := strconv.Itoa(os.Getpid())
	for time.Now().Before(deadline) {
		found := false
		procs, _ := os.ReadDir("/proc")
		for _, p := range procs {
			pid, err := strconv.Atoi(p.Name())
			if err != nil {
				continue
			}
			if procgroup.KillIf(pid, func() bool {
				stat, err := os.ReadFile(filepath.Join("/proc", p.Name(), "stat"))
				if err != nil {
					return false
				}
				i := strings.LastIndexByte(string(stat), ')')
				if i < 0 {
					return false
				}
				f := strings.Fields(string(stat[i+1:]))
				return len(f) > 1 && f[1] == me && f[0] != "Z"
			}) {
				found = true
			}
		}
		if !found {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}
