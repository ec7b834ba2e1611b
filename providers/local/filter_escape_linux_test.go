package local

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// Escape tests of the seccomp filter and of L1's Landlock rules, made with
// real system calls from commands inside sandboxes at L3 (or L2) and L1.
// Each failure says what got through.

// filterSandboxes returns a namespaced sandbox and an L1 sandbox, both with
// the given network policy.
func filterSandboxes(t *testing.T, netw *sandbox.NetworkPolicy) map[string]testSandbox {
	t.Helper()
	spec := func() *sandbox.Spec { return &sandbox.Spec{Network: netw} }
	ns := create(t, newIsolated(t), spec())
	return map[string]testSandbox{ns.Isolation().Level.String(): ns, "L1": create(t, newL1(t), spec())}
}

// python runs a Python program inside sb and returns its stdout; the
// program must exit 0.
func python(t *testing.T, sb testSandbox, program string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := sandbox.Run(ctx, portable(sb), &sandbox.Cmd{Args: []string{"python3", "-c", program}}, nil)
	require.NoError(t, err)
	require.True(t, res.Status.Success(), "the probe failed (%v): %s", res.Status, res.Stderr)
	return strings.TrimSpace(string(res.Stdout))
}

// socketFamilies are address families outside the allow-list, with the
// reason each matters.
var socketFamilies = []struct {
	num       int
	name, why string
}{
	{40, "AF_VSOCK", "vsock reaches the hypervisor"},
	{38, "AF_ALG", "the kernel's crypto API is attack surface"},
	{17, "AF_PACKET", "raw frames on the host's interfaces"},
	{30, "AF_TIPC", "a cluster transport outside network isolation"},
	{21, "AF_RDS", "a transport with a history of kernel bugs"},
	{41, "AF_KCM", "a multiplexer with a history of kernel bugs"},
	{42, "AF_QIPCRTR", "a transport to modem firmware"},
	{43, "AF_SMC", "a transport outside the proxy"},
	{44, "AF_XDP", "raw frames on the host's interfaces"},
	{45, "AF_MCTP", "a management transport"},
	{29, "AF_CAN", "a bus outside network isolation"},
	{31, "AF_BLUETOOTH", "radios"},
}

func TestEscapeSocketFamilies(t *testing.T) {
	var prog strings.Builder
	prog.WriteString("import socket\nfor f, n in [")
	for _, f := range socketFamilies {
		fmt.Fprintf(&prog, "(%d, %q), ", f.num, f.name)
	}
	prog.WriteString(`]:
    for t in (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_RAW, socket.SOCK_SEQPACKET):
        try:
            socket.socket(f, t, 0).close()
            print(n, t)
        except OSError:
            pass
`)
	for level, sb := range filterSandboxes(t, nil) {
		out := python(t, sb, prog.String())
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) != 2 {
				continue
			}
			for _, fam := range socketFamilies {
				if fam.name == f[0] {
					t.Errorf("%s: socket(%s, type %s) succeeded inside the sandbox: %s", level, fam.name, f[1], fam.why)
				}
			}
		}
	}
}

func TestEscapeNetlinkAtL1(t *testing.T) {
	ctx := context.Background()
	sbs := filterSandboxes(t, nil)
	// At L1 a routing socket would list the host's interfaces, addresses
	// and routes.
	const prog = "import socket\ntry:\n    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close()\n    print('open')\nexcept OSError as e:\n    print(e.errno)"
	if out := python(t, sbs["L1"], prog); out == "open" {
		t.Error("L1: socket(AF_NETLINK, NETLINK_ROUTE) succeeded: the host's interfaces, addresses and routes are readable")
	}
	// glibc's getaddrinfo asks netlink which address families are
	// configured (AI_ADDRCONFIG) and falls back when it is refused.
	st, out, errs := sh(t, sbs["L1"], "getent ahosts localhost")
	assert.True(t, st.Success() && strings.Contains(out, "127.0.0.1"), "L1: name resolution without netlink: %v %q %q", st, out, errs)
	// With a network namespace, routing sockets see only the sandbox's
	// own interfaces: they are allowed (getifaddrs, ip, Go's
	// net.Interfaces need them).
	for level, sb := range sbs {
		if level == "L1" {
			continue
		}
		st, out, errs := sh(t, sb, "ip -o link")
		require.True(t, st.Success(), "%s: ip -o link: %s", level, errs)
		assert.Equal(t, 1, strings.Count(strings.TrimSpace(out), "\n")+1, "%s: the sandbox sees interfaces other than its loopback: %s", level, out)
		res, err := sandbox.Run(ctx, portable(sb), &sandbox.Cmd{Args: []string{"python3", "-c", "import socket; socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4)"}}, nil)
		require.NoError(t, err)
		assert.False(t, res.Status.Success(), "%s: socket(AF_NETLINK, NETLINK_SOCK_DIAG) succeeded: only NETLINK_ROUTE is allowed", level)
	}
}

// int80Unshare returns a static x86-64 ELF executable that calls unshare(0)
// through the 32-bit ABI (int 0x80, which the kernel serves to 64-bit
// processes too, with AUDIT_ARCH_I386) and exits with its result: 0 where the
// call passes the seccomp filter. Its 138 bytes are an ELF header, one
// program header and this code:
//
//	mov eax, 310   ; __NR_unshare of i386
//	xor ebx, ebx   ; flags 0: a no-op that succeeds when allowed
//	int 0x80
//	mov edi, eax   ; exit status: the result
//	mov eax, 60    ; __NR_exit of x86-64
//	syscall
func int80Unshare() []byte {
	code := []byte{
		0xb8, 0x36, 0x01, 0x00, 0x00,
		0x31, 0xdb,
		0xcd, 0x80,
		0x89, 0xc7,
		0xb8, 0x3c, 0x00, 0x00, 0x00,
		0x0f, 0x05,
	}
	const base, ehsize, phsize = 0x400000, 64, 56
	size := uint64(ehsize + phsize + len(code))
	var b bytes.Buffer
	le := binary.LittleEndian
	b.Write([]byte{0x7f, 'E', 'L', 'F', 2 /* 64-bit */, 1 /* little-endian */, 1 /* version */, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	binary.Write(&b, le, struct {
		Type, Machine              uint16
		Version                    uint32
		Entry, Phoff, Shoff        uint64
		Flags                      uint32
		Ehsize, Phentsize, Phnum   uint16
		Shentsize, Shnum, Shstrndx uint16
	}{2 /* ET_EXEC */, 62 /* EM_X86_64 */, 1, base + ehsize + phsize, ehsize, 0, 0, ehsize, phsize, 1, 0, 0, 0})
	binary.Write(&b, le, struct {
		Type, Flags                                uint32
		Offset, Vaddr, Paddr, Filesz, Memsz, Align uint64
	}{1 /* PT_LOAD */, 5 /* R+X */, 0, base, base, size, size, 0x1000})
	b.Write(code)
	return b.Bytes()
}

func TestEscapeForeignABI(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skipf("the live probe is x86-64 code; on %s the emulator tests (TestFilterKillsForeignABIs) cover foreign ABIs", runtime.GOARCH)
	}
	ctx := context.Background()
	elf := int80Unshare()
	// The host must serve the call (unshare(0) succeeds, exit 0) for the
	// test to mean anything.
	probe := filepath.Join(t.TempDir(), "int80-unshare")
	require.NoError(t, os.WriteFile(probe, elf, 0o755))
	if out, err := exec.Command(probe).CombinedOutput(); err != nil {
		t.Skipf("this kernel does not serve the 32-bit int 0x80 ABI (IA32 emulation off or unsupported: the probe ended with %v %s), so no command can use it; TestFilterKillsForeignABIs covers the filter", err, out)
	}
	for level, sb := range filterSandboxes(t, nil) {
		require.NoError(t, sb.WriteFile(ctx, "int80-unshare", bytes.NewReader(elf), 0o755))
		res, err := sandbox.Run(ctx, portable(sb), &sandbox.Cmd{Args: []string{"./int80-unshare"}}, nil)
		require.NoError(t, err)
		switch {
		case res.Status.Success():
			t.Errorf("%s: a 32-bit (int 0x80) unshare(0) succeeded inside the sandbox: system calls through a foreign ABI bypass the seccomp filter", level)
		case res.Status.Signal != "SIGSYS":
			t.Errorf("%s: the 32-bit unshare ended with %v, not killed by the filter (SIGSYS)", level, res.Status)
		}
	}
}

func TestEscapeNamespaceClone(t *testing.T) {
	// clone(2) through libc's syscall(): the child, if any, exits at once.
	const prog = `import ctypes, errno, os, platform
libc = ctypes.CDLL(None, use_errno=True)
nr = {'x86_64': 56, 'aarch64': 220}[platform.machine()]
for name, flags in [('CLONE_NEWUSER', 0x10000000), ('CLONE_NEWUSER|CLONE_NEWNS', 0x10020000),
                    ('CLONE_NEWUSER|CLONE_NEWNET', 0x50000000), ('CLONE_NEWUSER|CLONE_NEWPID', 0x30000000),
                    ('CLONE_NEWUSER|CLONE_NEWIPC', 0x18000000), ('CLONE_NEWUSER|CLONE_NEWUTS', 0x14000000),
                    ('CLONE_NEWUSER|CLONE_NEWCGROUP', 0x12000000)]:
    pid = libc.syscall(nr, ctypes.c_ulong(flags | 17), None, None, None, None)
    if pid == 0:
        os._exit(0)
    if pid > 0:
        os.waitpid(pid, 0)
        print(name, 'created')
    else:
        print(name, errno.errorcode[ctypes.get_errno()])
for call, nr, args in [('unshare(CLONE_NEWUSER)', {'x86_64': 272, 'aarch64': 97}, (0x10000000,)),
                       ('setns(CLONE_NEWUSER)', {'x86_64': 308, 'aarch64': 268}, (0, 0x10000000))]:
    r = libc.syscall(nr[platform.machine()], *args)
    print(call, 'succeeded' if r == 0 else errno.errorcode[ctypes.get_errno()])
`
	for level, sb := range filterSandboxes(t, nil) {
		out := python(t, sb, prog)
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			require.Len(t, f, 2, out)
			switch f[1] {
			case "EPERM":
			case "created", "succeeded":
				t.Errorf("%s: %s succeeded inside the sandbox: a nested namespace", level, f[0])
			default:
				t.Errorf("%s: %s passed the seccomp filter and failed only with %s (refused twice means the filter's EPERM first)", level, f[0], f[1])
			}
		}
		if level != "L1" {
			// The second refusal: no user namespace may be made inside.
			_, out, _ := sh(t, sb, "cat /proc/sys/user/max_user_namespaces")
			assert.Equal(t, "0", strings.TrimSpace(out), "%s: user.max_user_namespaces inside the sandbox", level)
		}
	}
}

// countingListener accepts and counts connections until closed.
func countingListener(t *testing.T, network, addr string) (port int, accepted *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen(network, addr)
	require.NoError(t, err)
	accepted = new(atomic.Int64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().(*net.TCPAddr).Port, accepted
}

func TestEscapeMPTCP(t *testing.T) {
	port, accepted := countingListener(t, "tcp", "127.0.0.1:0")
	allow := &sandbox.NetworkPolicy{Mode: sandbox.NetworkAllowlist, Allow: []string{"allowed.perimeter.invalid"}}
	prog := fmt.Sprintf(`import socket
for fam, host in ((socket.AF_INET, '127.0.0.1'), (socket.AF_INET6, '::1')):
    try:
        s = socket.socket(fam, socket.SOCK_STREAM, 262)
    except OSError as e:
        print(fam, 'refused', e.errno)
        continue
    s.settimeout(20)
    try:
        s.connect((host, %d))
        print(fam, 'connected')
    except OSError as e:
        print(fam, 'created', e.errno)
    s.close()
`, port)
	for _, netw := range []*sandbox.NetworkPolicy{nil, allow} {
		for level, sb := range filterSandboxes(t, netw) {
			out := python(t, sb, prog)
			for _, line := range strings.Split(out, "\n") {
				f := strings.Fields(line)
				require.GreaterOrEqual(t, len(f), 2, out)
				if f[1] != "refused" {
					t.Errorf("%s network %s: socket(family %s, SOCK_STREAM, IPPROTO_MPTCP) was %s inside the sandbox: Multipath TCP is outside the protocol allow-list", level, sb.Isolation().Network, f[0], f[1])
				}
			}
		}
	}
	if n := accepted.Load(); n > 0 {
		t.Errorf("Multipath TCP from a sandbox reached a host listener the network policy refuses (%d connections)", n)
	}
}

func TestEscapeL1HostIPC(t *testing.T) {
	sb := create(t, newL1(t), nil)
	// System V IPC: without an IPC namespace, these are the host's.
	const prog = `import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
for name, call, remove in [('shmget', lambda: libc.shmget(0, 4096, 0o1600), lambda i: libc.shmctl(i, 0, None)),
                           ('msgget', lambda: libc.msgget(0, 0o1600), lambda i: libc.msgctl(i, 0, None)),
                           ('semget', lambda: libc.semget(0, 1, 0o1600), lambda i: libc.semctl(i, 0, 0)),
                           ('shmat', lambda: libc.shmat(0, None, 0), lambda a: None)]:
    r = call()
    if r != -1:
        remove(r)  # IPC_RMID (an attachment ends with the process): leave nothing on the host
        print(name, 'succeeded')
    else:
        print(name, errno.errorcode[ctypes.get_errno()])
`
	for _, line := range strings.Split(python(t, sb, prog), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[1] != "EPERM" {
			t.Errorf("L1: %s reached the host's System V IPC (%s)", f[0], f[1])
		}
	}

	// /dev/shm is the host's too.
	var rnd [6]byte
	rand.Read(rnd[:])
	name := "/dev/shm/perimeter-l1-test-" + hex.EncodeToString(rnd[:])
	require.NoError(t, os.WriteFile(name, []byte("host-shm-secret"), 0o644))
	t.Cleanup(func() { os.Remove(name) })
	for what, script := range map[string]string{
		"reading a host file in /dev/shm": "cat " + name,
		"listing /dev/shm":                "ls /dev/shm",
		"writing to /dev/shm":             "echo x > /dev/shm/perimeter-l1-escape-" + hex.EncodeToString(rnd[:]),
	} {
		st, out, errs := sh(t, sb, script)
		if st.Success() {
			t.Errorf("L1: %s got through: `%s` exited 0 with stdout %q stderr %q", what, script, out, errs)
		}
	}
	_, err := os.Stat("/dev/shm/perimeter-l1-escape-" + hex.EncodeToString(rnd[:]))
	assert.True(t, errors.Is(err, os.ErrNotExist), "a file appeared in the host's /dev/shm")

	// What commands still need from /dev works.
	st, out, errs := sh(t, sb, "echo a > /dev/null && head -c 4 /dev/urandom | wc -c && echo b > /dev/stdout && echo c | cat /dev/stdin")
	require.True(t, st.Success(), "L1 /dev: %s", errs)
	assert.Equal(t, "4\nb\nc\n", out)

	// The agent's socket: no command can make a Unix socket to reach it.
	res, err := sandbox.Run(context.Background(), portable(sb), &sandbox.Cmd{Args: []string{"python3", "-c", "import socket; socket.socket(socket.AF_UNIX).close()"}}, nil)
	require.NoError(t, err)
	assert.False(t, res.Status.Success(), "L1: socket(AF_UNIX) succeeded: the agent's socket is reachable by path")

	info, err := sb.Info(context.Background())
	require.NoError(t, err)
	for _, says := range []string{"process list and command lines", "network details", "System V IPC", "/dev/shm", "agent's socket"} {
		assert.Contains(t, info.Isolation, says, "Info.Isolation at L1 does not say what commands can see or what guards them")
	}
}
