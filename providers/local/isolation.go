package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Level is how strongly a sandbox is isolated from its host. Higher levels
// include everything the lower ones enforce.
type Level int

// Isolation levels.
const (
	// LevelNone (L0): plain host processes in a workspace directory. Only
	// with Options.AllowUnisolated.
	LevelNone Level = 0
	// LevelLandlock (L1): where namespaces are unavailable, commands run as
	// host processes of an unprivileged uid (as root: the sandbox's own),
	// confined by Landlock (reads: system directories and a few device
	// nodes, not /dev/shm; writes: the workspace and a private tmp; TCP:
	// nothing, or the proxy's port), seccomp (the L2 filter without System
	// V IPC, Unix or netlink sockets, and IP sockets by network mode),
	// no_new_privs, and cgroups or rlimits. No pid, mount, IPC or network
	// namespace: commands see the host's processes and their command lines,
	// its directory layout and its network details in /proc, and only the
	// seccomp filter keeps them from the agent's Unix socket.
	LevelLandlock Level = 1
	// LevelNamespaces (L2): user, mount, pid, ipc, uts and network
	// namespaces, a pivot_root into a minimal root, no capabilities,
	// no_new_privs, seccomp and Landlock; resource limits through rlimits.
	LevelNamespaces Level = 2
	// LevelFull (L3): L2 with resource limits and kill through cgroups.
	LevelFull Level = 3
)

// String returns "L0".."L3".
func (l Level) String() string { return "L" + strconv.Itoa(int(l)) }

// Isolation reports which layers separate a sandbox from its host. Every
// field is what was checked or set up, not what was asked for.
type Isolation struct {
	Level Level `json:"level"`
	// Namespaces the sandbox's processes run in.
	UserNS  bool `json:"user_ns"`
	MountNS bool `json:"mount_ns"`
	PIDNS   bool `json:"pid_ns"`
	NetNS   bool `json:"net_ns"`
	UTSNS   bool `json:"uts_ns"`
	IPCNS   bool `json:"ipc_ns"`
	// UIDBase is the host uid that is uid 0 inside the sandbox.
	UIDBase int `json:"uid_base,omitempty"`
	// LandlockABI is the Landlock ABI applied to commands; 0 if none.
	LandlockABI int  `json:"landlock_abi"`
	Seccomp     bool `json:"seccomp"`
	NoNewPrivs  bool `json:"no_new_privs"`
	CapsDropped bool `json:"caps_dropped"`
	// Cgroup is "v2", "v1" (v1 controllers, including hybrid hosts) or "none".
	Cgroup string `json:"cgroup"`
	// Rlimits reports that resource limits are rlimits (no cgroup).
	Rlimits bool `json:"rlimits"`
	// RootFS is "host" (host directories read-only), "image" (a caller's
	// rootfs as an overlay's lower layer) or "none" (the host's filesystem).
	RootFS string `json:"rootfs"`
	// Network is "none" (loopback only), "proxy" (an allowlist through the
	// host's proxy) or "host" (not isolated).
	Network string `json:"network"`
}

// String describes the isolation in one line, for Info.Isolation.
func (i Isolation) String() string {
	if i.Level == LevelNone {
		return "L0 none: commands run as plain host processes of the calling user in their own process group; only the file methods are confined, to the workspace; network: open (the host's, NOT isolated)"
	}
	var ns []string
	for _, n := range []struct {
		on   bool
		name string
	}{{i.UserNS, "user"}, {i.MountNS, "mount"}, {i.PIDNS, "pid"}, {i.NetNS, "net"}, {i.UTSNS, "uts"}, {i.IPCNS, "ipc"}} {
		if n.on {
			ns = append(ns, n.name)
		}
	}
	var b strings.Builder
	if i.Level == LevelLandlock {
		fmt.Fprintf(&b, "%s no namespaces (host processes of uid %d; visible to commands: the host's process list and command lines, directory layout, System V IPC objects (listed in /proc, calls refused) and network details (/proc/net); /dev/shm closed; the agent's socket guarded only by the seccomp refusal of Unix sockets) rootfs=%s network=%s", i.Level, i.UIDBase, i.RootFS, i.Network)
	} else {
		fmt.Fprintf(&b, "%s namespaces(%s) uid0=host:%d rootfs=%s network=%s", i.Level, strings.Join(ns, ","), i.UIDBase, i.RootFS, i.Network)
	}
	if i.Network == "host" {
		b.WriteString(" (network NOT isolated)")
	}
	fmt.Fprintf(&b, " landlock=abi%d seccomp=%t no_new_privs=%t caps=dropped:%t cgroup=%s", i.LandlockABI, i.Seccomp, i.NoNewPrivs, i.CapsDropped, i.Cgroup)
	if i.Rlimits {
		b.WriteString(" limits=rlimits")
	}
	return b.String()
}

// HostSupport is what this host offers the provider, probed once per process.
type HostSupport struct {
	// Namespaces is nil when user, mount, pid, net, uts and ipc namespaces
	// can be created; otherwise the reason they cannot.
	Namespaces  error
	LandlockABI int
	Seccomp     bool
	// Cgroup is "v2", "v1" or "none"; CgroupErr says why it is "none".
	Cgroup    string
	CgroupErr error
}

// MaxLevel is the highest level the host supports.
func (h HostSupport) MaxLevel() Level {
	switch {
	case !h.Seccomp:
		return LevelNone
	case h.Namespaces != nil && h.LandlockABI > 0:
		return LevelLandlock
	case h.Namespaces != nil:
		return LevelNone
	case h.Cgroup == "none" || h.LandlockABI == 0:
		return LevelNamespaces
	default:
		return LevelFull
	}
}

// missing names the layers between the host's support and level want.
func (h HostSupport) missing(want Level) string {
	var m []string
	if h.LandlockABI == 0 && want >= LevelLandlock {
		m = append(m, "landlock")
	}
	if h.Namespaces != nil && want >= LevelNamespaces {
		m = append(m, "namespaces ("+h.Namespaces.Error()+")")
	}
	if !h.Seccomp {
		m = append(m, "seccomp")
	}
	if want >= LevelFull && h.Cgroup == "none" {
		m = append(m, fmt.Sprintf("cgroups (%v)", h.CgroupErr))
	}
	return strings.Join(m, ", ")
}

var (
	probeOnce sync.Once
	probed    HostSupport
)

// Probe returns what this host supports. It runs its checks once per process
// and caches them. The namespace check starts a short-lived process in
// fresh namespaces; as root, its success is also remembered host-wide (see
// probeCacheDir), so later processes of the same program skip it.
func Probe() HostSupport {
	probeOnce.Do(func() { probed = probe() })
	return probed
}

func probe() HostSupport {
	h := HostSupport{LandlockABI: landlockABI()}
	if _, err := unix.PrctlRetInt(unix.PR_GET_SECCOMP, 0, 0, 0, 0); err == nil {
		h.Seccomp = true
	}
	h.Namespaces = probeNamespaces()
	h.Cgroup, h.CgroupErr = probeCgroup()
	return h
}

// probeOK is what the probe process prints once it runs in its namespaces.
const probeOK = "perimeter-probe-ok"

func probeNamespaces() error {
	key := probeCacheKey()
	if key != "" && probeCacheHit(probeCacheDir, key) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	cmd := exec.CommandContext(ctx, "/proc/self/exe")
	cmd.Args = []string{"perimeter-local-probe"}
	cmd.Env = []string{initEnv + "=probe"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: nsFlags(true),
		Pdeathsig:  syscall.SIGKILL,
	}
	setIDMaps(cmd.SysProcAttr, probeUIDBase())
	out, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		return err
	}
	if err := cmd.Start(); err != nil {
		cancel()
		return err
	}
	// The probe's output ends when it exits, before the kernel has torn
	// down its namespaces, which can take longer than all the rest: a
	// probe that said it ran is reaped in the background.
	got, _ := io.ReadAll(io.LimitReader(out, 64))
	if string(got) == probeOK {
		go func() {
			cmd.Wait()
			cancel()
		}()
		if key != "" {
			probeCacheStore(probeCacheDir, key)
		}
		return nil
	}
	err = cmd.Wait()
	cancel()
	if err == nil {
		err = fmt.Errorf("the probe process exited without running (output %q); does the program call local.Init before doing anything else?", got)
	}
	if stderr.Len() > 0 {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return fmt.Errorf("the probe process failed (%v); does the program call local.Init before doing anything else?", err)
	}
	return err
}

func probeUIDBase() int {
	if os.Getuid() == 0 {
		return uidRangeStart
	}
	return os.Getuid()
}

// nsFlags are the namespaces of a sandbox.
func nsFlags(netns bool) uintptr {
	f := uintptr(unix.CLONE_NEWUSER | unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC)
	if netns {
		f |= unix.CLONE_NEWNET
	}
	return f
}

// As root, each sandbox's ids 0..65535 map to its own range of host ids from
// uidRangeStart up, so that root inside is an unprivileged, unnamed uid
// outside. As another user, the sandbox's uid 0 is that user.
const (
	uidRangeStart = 1 << 30
	uidRangeSize  = 65536
	uidRangeSlots = 1 << 14
)

func setIDMaps(sys *syscall.SysProcAttr, base int) {
	// Become the namespace's uid 0 before the exec, so that the exec keeps
	// the namespace's capabilities.
	sys.Credential = &syscall.Credential{Uid: 0, Gid: 0, NoSetGroups: true}
	if os.Getuid() == 0 {
		sys.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: base, Size: uidRangeSize}}
		sys.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: base, Size: uidRangeSize}}
		return
	}
	sys.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}}
	sys.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}}
	sys.GidMappingsEnableSetgroups = false
}
