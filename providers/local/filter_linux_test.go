package local

import (
	"encoding/binary"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"testing"

	"github.com/elastic/go-seccomp-bpf/arch"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// These tests run the assembled seccomp filter in golang.org/x/net/bpf's
// emulator on hand-made seccomp_data, for each ABI a command could use, and
// check the action for each case. The live tests in
// filter_escape_linux_test.go check the same rules against the kernel.

// emulated is a filter loaded into the emulator, as the kernel gets it: the
// instructions are assembled to raw BPF and decoded again.
type emulated struct {
	vm *bpf.VM
}

func emulate(t *testing.T, goarch string, p filterPolicy) *emulated {
	t.Helper()
	insts, err := assembleFilter(testFilterArch(t, goarch), p)
	require.NoError(t, err)
	raw, err := bpf.Assemble(insts)
	require.NoError(t, err)
	require.LessOrEqual(t, len(raw), 4096, "BPF_MAXINSNS")
	decoded, ok := bpf.Disassemble(raw)
	require.True(t, ok, "the raw filter does not decode")
	vm, err := bpf.NewVM(decoded)
	require.NoError(t, err)
	return &emulated{vm: vm}
}

// testFilterArch returns goarch's filterArch: the native one as the
// provider builds it, the other from go-seccomp-bpf's tables, so that both
// architectures' filters run in the emulator on either host.
func testFilterArch(t *testing.T, goarch string) filterArch {
	t.Helper()
	if goarch == runtime.GOARCH {
		a, err := nativeFilterArch()
		require.NoError(t, err)
		return a
	}
	switch goarch {
	case "amd64":
		return filterArch{audit: uint32(arch.X86_64.ID), x32: true, nr: arch.X86_64.SyscallNames}
	case "arm64":
		return filterArch{audit: uint32(arch.AARCH64.ID), nr: arch.AARCH64.SyscallNames}
	}
	t.Fatalf("no filter architecture for %s", goarch)
	return filterArch{}
}

// TestSyscallNumbers checks the provider's own table of system call numbers
// (from golang.org/x/sys/unix) against go-seccomp-bpf's for this
// architecture, and that it holds exactly the calls the filter names.
func TestSyscallNumbers(t *testing.T) {
	var info *arch.Info
	switch runtime.GOARCH {
	case "amd64":
		info = arch.X86_64
	case "arm64":
		info = arch.AARCH64
	default:
		t.Skipf("the filter supports amd64 and arm64, not %s", runtime.GOARCH)
	}
	a, err := nativeFilterArch()
	require.NoError(t, err)
	require.Equal(t, uint32(info.ID), a.audit, "AUDIT_ARCH")
	for name, nr := range a.nr {
		want, ok := info.SyscallNames[name]
		if !ok {
			t.Errorf("%s: go-seccomp-bpf's %s table has no such system call", name, info.Name)
			continue
		}
		if nr != want {
			t.Errorf("%s is %d in the provider's table and %d in go-seccomp-bpf's %s table", name, nr, want, info.Name)
		}
	}
	named := slices.Concat(deniedSyscalls, ipcSyscalls, []string{"clone", "clone3", "socket", "socketpair"})
	slices.Sort(named)
	require.Equal(t, slices.Compact(named), slices.Sorted(maps.Keys(a.nr)),
		"the table should hold exactly the system calls the filter names")
}

// run returns the filter's action for a system call. The emulator loads
// 32-bit words big-endian (network order) where the kernel loads them in
// host order; every load of the filter is an aligned 32-bit word, so writing
// each word of seccomp_data big-endian gives the kernel's result.
func (e *emulated) run(t *testing.T, audit, nr uint32, args ...uint64) uint32 {
	t.Helper()
	var data [64]byte
	binary.BigEndian.PutUint32(data[offNr:], nr)
	binary.BigEndian.PutUint32(data[offArch:], audit)
	for i, v := range args {
		binary.BigEndian.PutUint32(data[offArgs+8*i:], uint32(v))       // low word (little-endian layout)
		binary.BigEndian.PutUint32(data[offArgs+8*i+4:], uint32(v>>32)) // high word
	}
	out, err := e.vm.Run(data[:])
	require.NoError(t, err)
	return uint32(out)
}

func action(v uint32) string {
	switch {
	case v == retAllow:
		return "allow"
	case v == retKillProcess:
		return "kill"
	case v&0xffff0000 == retErrno:
		return "errno " + unix.ErrnoName(unix.Errno(v&0xffff))
	}
	return fmt.Sprintf("%#x", v)
}

var (
	allow       = "allow"
	kill        = "kill"
	eperm       = "errno EPERM"
	enosys      = "errno ENOSYS"
	eafnosupp   = "errno EAFNOSUPPORT"
	eprotonosup = "errno EPROTONOSUPPORT"
)

// filterLevels are the policies of each level and network mode.
var filterLevels = map[string]filterPolicy{
	"L2/L3":    policyL2,
	"L1 none":  policyL1("none"),
	"L1 proxy": policyL1("proxy"),
	"L1 host":  policyL1("host"),
}

func TestFilterKillsForeignABIs(t *testing.T) {
	i386 := uint32(arch.I386.ID)
	for level, p := range filterLevels {
		amd64 := emulate(t, "amd64", p)
		x86 := uint32(arch.X86_64.ID)
		nr := func(info *arch.Info, name string) uint32 {
			n, ok := info.SyscallNames[name]
			require.True(t, ok, "%s has no %s", info.Name, name)
			return uint32(n)
		}
		for _, name := range []string{"unshare", "socket", "keyctl", "ptrace", "getpid", "mount"} {
			if got := action(amd64.run(t, i386, nr(arch.I386, name))); got != kill {
				t.Errorf("%s: the 32-bit (int 0x80) %s was %s inside the sandbox, not killed: foreign-ABI calls bypass the filter", level, name, got)
			}
			x32 := nr(arch.X32, name) | x32SyscallBit
			if got := action(amd64.run(t, x86, x32)); got != kill {
				t.Errorf("%s: the x32 %s (nr %#x) was %s, not killed", level, name, x32, got)
			}
			if got := action(amd64.run(t, uint32(arch.AARCH64.ID), nr(arch.AARCH64, name))); got != kill {
				t.Errorf("%s: an aarch64 %s reached an x86-64 filter and was %s", level, name, got)
			}
		}
		// A number just below the x32 bit is a native (unknown) call: the
		// kernel answers ENOSYS, the filter lets it through.
		if got := action(amd64.run(t, x86, x32SyscallBit-1)); got != allow {
			t.Errorf("%s: native nr %#x: %s", level, x32SyscallBit-1, got)
		}

		arm := emulate(t, "arm64", p)
		a64 := uint32(arch.AARCH64.ID)
		if got := action(arm.run(t, a64, nr(arch.AARCH64, "getpid"))); got != allow {
			t.Errorf("%s: aarch64 getpid: %s", level, got)
		}
		if got := action(arm.run(t, a64, nr(arch.AARCH64, "unshare"))); got != eperm {
			t.Errorf("%s: aarch64 unshare: %s", level, got)
		}
		for _, foreign := range []uint32{uint32(arch.ARM.ID), x86, i386} {
			if got := action(arm.run(t, foreign, nr(arch.AARCH64, "getpid"))); got != kill {
				t.Errorf("%s: a system call of audit arch %#x reached the aarch64 filter and was %s, not killed", level, foreign, got)
			}
		}
	}
}

// forEachArch runs f with each native architecture's filter for p. The
// numbers f calls with come from go-seccomp-bpf's full tables, not from the
// table the filter was built with, so a wrong number in either shows.
func forEachArch(t *testing.T, p filterPolicy, f func(e *emulated, audit uint32, nr func(string) uint32)) {
	for goarch, info := range map[string]*arch.Info{"amd64": arch.X86_64, "arm64": arch.AARCH64} {
		a := testFilterArch(t, goarch)
		e := emulate(t, goarch, p)
		f(e, a.audit, func(name string) uint32 {
			n, ok := info.SyscallNames[name]
			require.True(t, ok, "%s has no %s", goarch, name)
			return uint32(n)
		})
	}
}

func TestFilterDeniedSyscalls(t *testing.T) {
	for level, p := range filterLevels {
		forEachArch(t, p, func(e *emulated, audit uint32, nr func(string) uint32) {
			for _, name := range deniedSyscalls {
				if got := action(e.run(t, audit, nr(name))); got != eperm {
					t.Errorf("%s (%#x): %s was %s, not refused with EPERM", level, audit, name, got)
				}
			}
			for _, name := range ipcSyscalls {
				want := allow // the sandbox's own IPC namespace
				if p.denyIPC {
					want = eperm // the host's IPC objects
				}
				if got := action(e.run(t, audit, nr(name))); got != want {
					t.Errorf("%s (%#x): %s was %s, want %s", level, audit, name, got, want)
				}
			}
			for _, name := range []string{"read", "write", "openat", "execve", "wait4", "getpid", "mmap"} {
				if got := action(e.run(t, audit, nr(name))); got != allow {
					t.Errorf("%s (%#x): %s was %s", level, audit, name, got)
				}
			}
		})
	}
	if !policyL1("none").denyIPC || policyL2.denyIPC {
		t.Error("System V IPC must be refused at L1 (the host's) and allowed at L2/L3 (the sandbox's IPC namespace)")
	}
}

func TestFilterNamespaceFlags(t *testing.T) {
	flags := map[string]uint64{
		"CLONE_NEWUSER": unix.CLONE_NEWUSER, "CLONE_NEWNS": unix.CLONE_NEWNS, "CLONE_NEWPID": unix.CLONE_NEWPID,
		"CLONE_NEWNET": unix.CLONE_NEWNET, "CLONE_NEWUTS": unix.CLONE_NEWUTS, "CLONE_NEWIPC": unix.CLONE_NEWIPC,
		"CLONE_NEWCGROUP": unix.CLONE_NEWCGROUP,
	}
	const thread = unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_THREAD |
		unix.CLONE_SYSVSEM | unix.CLONE_SETTLS | unix.CLONE_PARENT_SETTID | unix.CLONE_CHILD_CLEARTID
	for level, p := range filterLevels {
		forEachArch(t, p, func(e *emulated, audit uint32, nr func(string) uint32) {
			for name, f := range flags {
				for _, combo := range []uint64{f, f | uint64(unix.SIGCHLD), f | thread, f | unix.CLONE_NEWUSER, f | 0xffffffff00000000} {
					if got := action(e.run(t, audit, nr("clone"), combo)); got != eperm {
						t.Errorf("%s (%#x): clone(%s, flags %#x) was %s, not refused: a nested namespace", level, audit, name, combo, got)
					}
				}
				for _, call := range []string{"unshare", "setns"} {
					arg := []uint64{f}
					if call == "setns" {
						arg = []uint64{3, f}
					}
					if got := action(e.run(t, audit, nr(call), arg...)); got != eperm {
						t.Errorf("%s (%#x): %s(%s) was %s, not refused", level, audit, call, name, got)
					}
				}
			}
			for _, ok := range []uint64{uint64(unix.SIGCHLD), thread, unix.CLONE_VFORK | unix.CLONE_VM | uint64(unix.SIGCHLD),
				uint64(unix.CLONE_NEWTIME) /* the exit signal's bits in clone, not a namespace */} {
				if got := action(e.run(t, audit, nr("clone"), ok)); got != allow {
					t.Errorf("%s (%#x): clone(%#x) without namespace flags was %s", level, audit, ok, got)
				}
			}
			if got := action(e.run(t, audit, nr("clone3"))); got != enosys {
				t.Errorf("%s (%#x): clone3 was %s, not ENOSYS", level, audit, got)
			}
		})
	}
}

func TestFilterSocketAllowList(t *testing.T) {
	const (
		sockFlags     = unix.SOCK_CLOEXEC | unix.SOCK_NONBLOCK
		ipprotoMPTCP  = 262
		ipprotoSCTP   = unix.IPPROTO_SCTP
		ipprotoUDPLit = unix.IPPROTO_UDPLITE
		highBits      = uint64(1) << 32
	)
	type sock struct {
		what           string
		domain, typ    uint64
		proto          uint64
		l2, none, prox string // L2/L3, L1 none, L1 proxy
		host           string // L1 host
	}
	cases := []sock{
		{"AF_VSOCK stream", unix.AF_VSOCK, unix.SOCK_STREAM, 0, eafnosupp, eafnosupp, eafnosupp, eafnosupp},
		{"AF_VSOCK dgram", unix.AF_VSOCK, unix.SOCK_DGRAM, 0, eafnosupp, eafnosupp, eafnosupp, eafnosupp},
		{"AF_VSOCK with high bits set", highBits | unix.AF_VSOCK, unix.SOCK_STREAM, 0, eafnosupp, eafnosupp, eafnosupp, eafnosupp},
		{"AF_ALG", unix.AF_ALG, unix.SOCK_SEQPACKET, 0, eafnosupp, eafnosupp, eafnosupp, eafnosupp},
		{"AF_PACKET", unix.AF_PACKET, unix.SOCK_RAW, 0x300, eafnosupp, eafnosupp, eafnosupp, eafnosupp},
		{"AF_TIPC", unix.AF_TIPC, unix.SOCK_RDM, 0, eafnosupp, eafnosupp, eafnosupp, eafnosupp},
		{"AF_RDS", unix.AF_RDS, unix.SOCK_SEQPACKET, 0, eafnosupp, eafnosupp, eafnosupp, eafnosupp},
		{"AF_KEY", unix.AF_KEY, unix.SOCK_RAW, 2, eafnosupp, eafnosupp, eafnosupp, eafnosupp},
		{"AF_XDP", unix.AF_XDP, unix.SOCK_RAW, 0, eafnosupp, eafnosupp, eafnosupp, eafnosupp},
		{"AF_BLUETOOTH", unix.AF_BLUETOOTH, unix.SOCK_STREAM, 0, eafnosupp, eafnosupp, eafnosupp, eafnosupp},
		{"AF_UNIX", unix.AF_UNIX, unix.SOCK_STREAM | sockFlags, 0, allow, eperm, eperm, eperm},
		{"AF_NETLINK route", unix.AF_NETLINK, unix.SOCK_RAW | unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE, allow, eafnosupp, eafnosupp, eafnosupp},
		{"AF_NETLINK sock_diag", unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_SOCK_DIAG, eprotonosup, eafnosupp, eafnosupp, eafnosupp},
		{"AF_NETLINK uevent", unix.AF_NETLINK, unix.SOCK_DGRAM, unix.NETLINK_KOBJECT_UEVENT, eprotonosup, eafnosupp, eafnosupp, eafnosupp},
		{"TCP", unix.AF_INET, unix.SOCK_STREAM, 0, allow, eperm, allow, allow},
		{"TCP explicit", unix.AF_INET6, unix.SOCK_STREAM | sockFlags, unix.IPPROTO_TCP, allow, eperm, allow, allow},
		{"UDP", unix.AF_INET, unix.SOCK_DGRAM | unix.SOCK_CLOEXEC, 0, allow, eperm, eperm, allow},
		{"UDP6 explicit", unix.AF_INET6, unix.SOCK_DGRAM, unix.IPPROTO_UDP, allow, eperm, eperm, allow},
		{"ping", unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_ICMP, allow, eperm, eperm, allow},
		{"ping6", unix.AF_INET6, unix.SOCK_DGRAM, unix.IPPROTO_ICMPV6, allow, eperm, eperm, allow},
		{"MPTCP", unix.AF_INET, unix.SOCK_STREAM, ipprotoMPTCP, eprotonosup, eperm, eprotonosup, eprotonosup},
		{"MPTCP6", unix.AF_INET6, unix.SOCK_STREAM | sockFlags, ipprotoMPTCP, eprotonosup, eperm, eprotonosup, eprotonosup},
		{"MPTCP with high bits set", unix.AF_INET, unix.SOCK_STREAM, highBits | ipprotoMPTCP, eprotonosup, eperm, eprotonosup, eprotonosup},
		{"SCTP", unix.AF_INET, unix.SOCK_SEQPACKET, ipprotoSCTP, eperm, eperm, eperm, eperm},
		{"SCTP stream", unix.AF_INET, unix.SOCK_STREAM, ipprotoSCTP, eprotonosup, eperm, eprotonosup, eprotonosup},
		{"UDP-Lite", unix.AF_INET, unix.SOCK_DGRAM, ipprotoUDPLit, eprotonosup, eperm, eperm, eprotonosup},
		{"raw IP", unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP, eperm, eperm, eperm, eperm},
		{"SOCK_PACKET", unix.AF_INET, unix.SOCK_PACKET, 0, eperm, eperm, eperm, eperm},
	}
	for _, c := range cases {
		for level, want := range map[string]string{"L2/L3": c.l2, "L1 none": c.none, "L1 proxy": c.prox, "L1 host": c.host} {
			forEachArch(t, filterLevels[level], func(e *emulated, audit uint32, nr func(string) uint32) {
				if got := action(e.run(t, audit, nr("socket"), c.domain, c.typ, c.proto)); got != want {
					t.Errorf("%s (%#x): socket(%s: %#x, %#x, %d) was %s, want %s", level, audit, c.what, c.domain, c.typ, c.proto, got, want)
				}
			})
		}
	}
	for level, p := range filterLevels {
		forEachArch(t, p, func(e *emulated, audit uint32, nr func(string) uint32) {
			if got := action(e.run(t, audit, nr("socketpair"), unix.AF_UNIX, unix.SOCK_STREAM)); got != allow {
				t.Errorf("%s: socketpair(AF_UNIX) was %s", level, got)
			}
			if got := action(e.run(t, audit, nr("socketpair"), unix.AF_TIPC, unix.SOCK_STREAM)); got != eafnosupp {
				t.Errorf("%s: socketpair(AF_TIPC) was %s", level, got)
			}
		})
	}
}

func TestFilterUnknownSyscall(t *testing.T) {
	a := testFilterArch(t, "amd64")
	a.nr = map[string]int{"getpid": 39}
	_, err := assembleFilter(a, policyL2)
	require.ErrorContains(t, err, "unknown on this architecture")
}
