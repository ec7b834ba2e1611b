package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// Regression tests for the host boundary: descriptors, /proc, the files
// API, limits and cleanup. Each failure says what got through.

// eachLevel runs fn against a provider at every level this host reaches:
// L3 (the default), L2, L1 and L0.
func eachLevel(t *testing.T, fn func(t *testing.T, p *sandbox.Provider)) {
	t.Helper()
	eachAgentLevel(t, fn)
	t.Run("L0", func(t *testing.T) {
		p, err := New(&Options{Root: t.TempDir(), Unisolated: true})
		require.NoError(t, err)
		t.Cleanup(func() { p.Close() })
		fn(t, p)
	})
}

// eachAgentLevel runs fn at the levels where a sandbox has an agent: L3,
// L2 and L1.
func eachAgentLevel(t *testing.T, fn func(t *testing.T, p *sandbox.Provider)) {
	t.Helper()
	t.Run("L3", func(t *testing.T) {
		if Probe().MaxLevel() < LevelFull {
			t.Skipf("this host reaches only %v (no writable cgroup)", Probe().MaxLevel())
		}
		fn(t, newIsolated(t))
	})
	t.Run("L2", func(t *testing.T) {
		p, err := New(&Options{Root: t.TempDir(), Level: LevelNamespaces})
		require.NoError(t, err)
		t.Cleanup(func() { p.Close() })
		fn(t, p)
	})
	t.Run("L1", func(t *testing.T) { fn(t, newL1(t)) })
}

// fdIdentity is how /proc shows what a descriptor refers to.
func fdIdentity(t *testing.T, fd int) string {
	t.Helper()
	s, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	require.NoError(t, err)
	return s
}

// TestHostDescriptorsDoNotReachCommands holds inheritable (non-CLOEXEC)
// host descriptors, a root-only file, a socket and a pipe, while sandboxes
// list their commands' descriptors and the host lists the init's.
func TestHostDescriptorsDoNotReachCommands(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "host-secret-fd-probe")
	require.NoError(t, os.WriteFile(secret, []byte("host secret"), 0o600))
	fileFD, err := unix.Open(secret, unix.O_RDONLY, 0) // no O_CLOEXEC
	require.NoError(t, err)
	var pipe [2]int
	require.NoError(t, unix.Pipe2(pipe[:], 0))
	sock, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	require.NoError(t, err)
	held := []int{fileFD, pipe[0], pipe[1], sock[0], sock[1]}
	t.Cleanup(func() {
		for _, fd := range held {
			unix.Close(fd)
		}
	})
	ids := map[string]string{}
	for _, fd := range held {
		ids[fdIdentity(t, fd)] = fmt.Sprintf("host fd %d (%s)", fd, fdIdentity(t, fd))
	}
	// A command prints what each of its descriptors refers to, and reads
	// every one it can.
	script := `for f in /proc/self/fd/*; do l=$(readlink $f); echo "$f $l"; ` +
		`case "$l" in *host-secret*) cat $f;; esac; done; true`
	eachLevel(t, func(t *testing.T, p *sandbox.Provider) {
		ctx := context.Background()
		sb := create(t, p, nil)
		st, out, errs := sh(t, sb, script)
		require.True(t, st.Success(), errs)
		for id, what := range ids {
			if strings.Contains(out, id) {
				t.Errorf("%s reached a sandboxed command:\n%s", what, out)
			}
		}
		if strings.Contains(out, "host secret") {
			t.Errorf("a command read the root-only host file through an inherited descriptor:\n%s", out)
		}
		// The init (the agent) must not hold them either.
		if sb.d.iso != nil {
			pid := sb.d.iso.init.Process.Pid
			entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
			require.NoError(t, err)
			for _, e := range entries {
				link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
				if err != nil {
					continue
				}
				if what, ok := ids[link]; ok {
					t.Errorf("the sandbox's init holds %s as its fd %s", what, e.Name())
				}
			}
		}
		_ = ctx
	})
}

var _ = sandbox.ErrNotFound

// TestInternalAddressesEmbeddedInIPv6 checks the proxy's internal-address
// test on IPv6 forms that carry an IPv4 address to a translator or tunnel.
func TestInternalAddressesEmbeddedInIPv6(t *testing.T) {
	for _, c := range []struct {
		addr     string
		internal bool
	}{
		{"127.0.0.1", true},
		{"10.1.2.3", true},
		{"169.254.169.254", true},
		{"8.8.8.8", false},
		{"::ffff:127.0.0.1", true},           // IPv4-mapped
		{"::ffff:169.254.169.254", true},     // IPv4-mapped metadata
		{"64:ff9b::7f00:1", true},            // NAT64 of 127.0.0.1
		{"64:ff9b::a9fe:a9fe", true},         // NAT64 of 169.254.169.254
		{"64:ff9b::c0a8:101", true},          // NAT64 of 192.168.1.1
		{"64:ff9b::808:808", false},          // NAT64 of 8.8.8.8
		{"64:ff9b:1::808:808", true},         // local-use NAT64 prefix
		{"2002:7f00:1::1", true},             // 6to4 of 127.0.0.1
		{"2002:a00:1::", true},               // 6to4 of 10.0.0.1
		{"2002:808:808::1", false},           // 6to4 of 8.8.8.8
		{"::7f00:1", true},                   // IPv4-compatible 127.0.0.1
		{"::a9fe:a9fe", true},                // IPv4-compatible metadata
		{"::ffff:0:7f00:1", true},            // SIIT 127.0.0.1
		{"::ffff:0:a00:1", true},             // SIIT 10.0.0.1
		{"2001:0:808:808::80ff:fffe", true},  // Teredo, client 127.0.0.1 inverted
		{"2001:0:a00:1::f7f7:f7f7", true},    // Teredo, server 10.0.0.1
		{"2001:0:808:808::f7f7:f7f7", false}, // Teredo, server and client 8.8.8.8
		{"fec0::1", true},                    // site-local
		{"fd00::1", true},                    // unique local
		{"2606:4700:4700::1111", false},      // public
	} {
		got := internal(netip.MustParseAddr(c.addr))
		if got != c.internal {
			if c.internal {
				t.Errorf("%s got through the proxy's internal-address check (it reaches an internal IPv4 address)", c.addr)
			} else {
				t.Errorf("%s, a public address, is refused as internal", c.addr)
			}
		}
	}
}

// TestUIDLocksRefuseSymlinksAndLooseDirectories plants a symbolic link where
// a uid-range lock file goes, and tries a lock directory that is a link or
// open to others: root must not create a file through the link, and must
// refuse the directories.
func TestUIDLocksRefuseSymlinksAndLooseDirectories(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("uid ranges (and their locks) are used only when the provider runs as root")
	}
	base := t.TempDir()
	oldDir, oldLegacy := uidLockDir, legacyUIDLockDir
	t.Cleanup(func() { uidLockDir, legacyUIDLockDir = oldDir, oldLegacy })
	legacyUIDLockDir = filepath.Join(base, "legacy")

	// A link planted at the first slot's lock file.
	uidLockDir = filepath.Join(base, "uids")
	require.NoError(t, os.Mkdir(uidLockDir, 0o700))
	target := filepath.Join(base, "created-through-the-link")
	require.NoError(t, os.Symlink(target, filepath.Join(uidLockDir, "0.lock")))
	r, err := allocUIDRange()
	if err == nil {
		r.free()
	}
	if _, serr := os.Lstat(target); serr == nil {
		t.Errorf("root created %s through a symbolic link planted as a uid lock file", target)
	}
	require.Error(t, err, "a symbolic link as a lock file was accepted")

	// The lock directory itself a link to a directory others control.
	elsewhere := filepath.Join(base, "elsewhere")
	require.NoError(t, os.Mkdir(elsewhere, 0o700))
	uidLockDir = filepath.Join(base, "link")
	require.NoError(t, os.Symlink(elsewhere, uidLockDir))
	r, err = allocUIDRange()
	if err == nil {
		r.free()
		t.Errorf("a symbolic link as the uid lock directory was used")
	}
	if entries, _ := os.ReadDir(elsewhere); len(entries) > 0 {
		t.Errorf("lock files were made through a linked lock directory: %v", entries)
	}

	// A lock directory others may write to.
	uidLockDir = filepath.Join(base, "open")
	require.NoError(t, os.Mkdir(uidLockDir, 0o777))
	require.NoError(t, os.Chmod(uidLockDir, 0o1777))
	r, err = allocUIDRange()
	if err == nil {
		r.free()
		t.Errorf("a world-writable uid lock directory was used")
	}

	// A sound one works, and hands out distinct ranges.
	uidLockDir = filepath.Join(base, "sound", "uids")
	r1, err := allocUIDRange()
	require.NoError(t, err)
	defer r1.free()
	r2, err := allocUIDRange()
	require.NoError(t, err)
	defer r2.free()
	require.NotEqual(t, r1.base, r2.base)
	fi, err := os.Stat(uidLockDir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), fi.Mode().Perm())
}

// cgroupValue reads a limit file of the sandbox's cgroups (v1 or v2).
func cgroupValue(t *testing.T, sb *Sandbox, v1key, file string) string {
	t.Helper()
	key := v1key
	if _, ok := sb.iso.cg.dirs["v2"]; ok {
		key = "v2"
	}
	b, err := os.ReadFile(filepath.Join(sb.iso.cg.dirs[key], file))
	require.NoError(t, err)
	return strings.TrimSpace(string(b))
}

// TestSafeDefaultLimits: a sandbox created without Resources is bounded in
// memory, processes and /tmp, and "unlimited" is an explicit choice.
func TestSafeDefaultLimits(t *testing.T) {
	if Probe().MaxLevel() < LevelFull {
		t.Skipf("this host reaches only %v: no cgroup to read limits from", Probe().MaxLevel())
	}
	memFile, pidsFile := "memory.limit_in_bytes", "pids.max"
	if Probe().Cgroup == "v2" {
		memFile = "memory.max"
	}
	sb := create(t, newIsolated(t), nil)
	if got := cgroupValue(t, sb.d, "memory", memFile); got != strconv.FormatInt(DefaultLimits.Memory, 10) {
		t.Errorf("a sandbox without Resources has memory limit %s, want the default %d", got, DefaultLimits.Memory)
	}
	// pids.max counts the agent's threads on top of the commands' limit.
	if got := cgroupValue(t, sb.d, "pids", pidsFile); got != strconv.Itoa(DefaultLimits.PIDs+agentThreads) {
		t.Errorf("a sandbox without Resources has pids limit %s, want the default %d plus the agent's %d threads", got, DefaultLimits.PIDs, agentThreads)
	}
	st, out, errs := sh(t, sb, "df -k /tmp | tail -1")
	require.True(t, st.Success(), errs)
	if f := strings.Fields(out); len(f) < 2 || f[1] != strconv.FormatInt(DefaultLimits.Tmp>>10, 10) {
		t.Errorf("a sandbox without Resources has a /tmp of %v KiB, want the default %d KiB", f, DefaultLimits.Tmp>>10)
	}

	// Overridden per provider, and unlimited only when asked for.
	p, err := New(&Options{Root: t.TempDir(), Limits: &Limits{Memory: Unlimited, PIDs: 77, Tmp: 32 << 20}})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	sb2 := create(t, p, nil)
	assert := require.New(t)
	assert.Equal(strconv.Itoa(77+agentThreads), cgroupValue(t, sb2.d, "pids", pidsFile))
	mem := cgroupValue(t, sb2.d, "memory", memFile)
	if mem != "max" {
		n, _ := strconv.ParseInt(mem, 10, 64)
		assert.Greater(n, int64(1<<50), "Limits.Memory Unlimited left a memory limit of %s", mem)
	}
	_, out, _ = sh(t, sb2, "df -k /tmp | tail -1")
	assert.Equal(strconv.Itoa(32<<10), strings.Fields(out)[1])
	// Spec.Resources wins over the provider's limits.
	sb3 := create(t, p, &sandbox.Spec{Resources: sandbox.Resources{PIDs: 50}})
	assert.Equal(strconv.Itoa(50+agentThreads), cgroupValue(t, sb3.d, "pids", pidsFile))

	_, err = New(&Options{Root: t.TempDir(), Limits: &Limits{Memory: 1 << 20}})
	assert.ErrorIs(err, sandbox.ErrInvalidArgument, "a memory limit too small for the init was accepted")
}

// TestDiskBoundsTheWorkspace: with Resources.Disk, /workspace is a tmpfs of
// that size, which the files API still reaches.
func TestDiskBoundsTheWorkspace(t *testing.T) {
	ctx := context.Background()
	sb := create(t, newIsolated(t), &sandbox.Spec{Resources: sandbox.Resources{Disk: 8 << 20}, Workdir: "/workspace/src"})
	st, _, errs := sh(t, sb, "head -c 20000000 /dev/zero > /workspace/big; s=$?; rm -f /workspace/big; exit $s")
	if st.Success() {
		t.Errorf("20 MB fitted in /workspace under an 8 MiB disk limit")
	}
	require.Contains(t, errs, "No space left on device")
	require.NoError(t, sb.WriteFile(ctx, "f.txt", strings.NewReader("via the files API"), 0o644))
	_, out, _ := sh(t, sb, "pwd; cat /workspace/src/f.txt")
	require.Equal(t, "/workspace/src\nvia the files API", out)
	require.Empty(t, sb.Workspace(), "a tmpfs workspace has no host directory")
}

// TestL2TmpCountsAgainstMemory: without a cgroup to charge tmpfs pages to,
// /tmp is no larger than the memory limit.
func TestL2TmpCountsAgainstMemory(t *testing.T) {
	p, err := New(&Options{Root: t.TempDir(), Level: LevelNamespaces})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	sb := create(t, p, &sandbox.Spec{Resources: sandbox.Resources{Memory: 32 << 20}})
	st, _, errs := sh(t, sb, "head -c 100000000 /dev/zero > /tmp/big")
	if st.Success() {
		t.Errorf("100 MB fitted in /tmp at L2 under a 32 MiB memory limit")
	}
	require.Contains(t, errs, "No space left on device")
}

// TestOOMKillsTheCommandNotTheAgent fills /tmp (tmpfs, charged to the
// sandbox's memory cgroup) past the memory limit: the command must be the
// one killed, reported as OOMKilled, and the sandbox must keep working.
func TestOOMKillsTheCommandNotTheAgent(t *testing.T) {
	if Probe().MaxLevel() < LevelFull {
		t.Skipf("this host reaches only %v: no memory cgroup", Probe().MaxLevel())
	}
	ctx := context.Background()
	sb := create(t, newIsolated(t), &sandbox.Spec{Resources: sandbox.Resources{Memory: 48 << 20}})
	res, err := sandbox.Run(ctx, portable(sb), &sandbox.Cmd{Args: []string{"dd", "if=/dev/zero", "of=/tmp/fill", "bs=1M", "count=200"}}, nil)
	if err != nil {
		t.Fatalf("filling /tmp under a memory limit ended the sandbox (its agent was OOM-killed): %v", err)
	}
	require.False(t, res.Status.Success(), "200 MB of /tmp fitted in a 48 MiB memory limit")
	require.True(t, res.Status.OOMKilled, "the command's status does not say OOMKilled: %+v (%s)", res.Status, res.Stderr)
	require.NoError(t, sb.d.iso.call(ctx, &agentRequest{Op: "ping"}), "the agent died of the command's OOM")
	require.NoError(t, sb.Remove(ctx, "/tmp/fill"))
	// The agent sets the value once the command has started, before Start
	// returns: the script reads it (in a child, which inherits it) only
	// after Start returned and a line arrived on its stdin.
	stdin, feed := io.Pipe()
	var out, errs bytes.Buffer
	p, err := portable(sb).Start(ctx, &sandbox.Cmd{
		Args:  []string{"sh", "-c", "read go; cat /proc/self/oom_score_adj; (echo 0 > /proc/self/oom_score_adj) 2>/dev/null && echo lowered; true"},
		Stdin: stdin, Stdout: &out, Stderr: &errs,
	})
	require.NoError(t, err)
	_, err = feed.Write([]byte("go\n"))
	require.NoError(t, err)
	feed.Close()
	st, err := p.Wait(ctx)
	require.NoError(t, err)
	require.True(t, st.Success(), errs.String())
	require.Equal(t, strconv.Itoa(commandOOMScoreAdj)+"\n", out.String(), "a command could lower its own oom_score_adj (or has the wrong one)")
}

// TestFilesAPIRefusesMountPoints: the files API must not remove, rename or
// replace the sandbox's mounts (/dev/null, /dev/pts, /tmp, ...).
func TestFilesAPIRefusesMountPoints(t *testing.T) {
	ctx := context.Background()
	sb := create(t, newIsolated(t), nil)
	require.NoError(t, sb.WriteFile(ctx, "/tmp/x", strings.NewReader("x"), 0o644))
	for _, c := range []struct {
		what string
		op   func() error
	}{
		{"Remove /dev/null", func() error { return sb.Remove(ctx, "/dev/null") }},
		{"RemoveAll /dev/pts", func() error { return sb.RemoveAll(ctx, "/dev/pts") }},
		{"RemoveAll /dev", func() error { return sb.RemoveAll(ctx, "/dev") }},
		{"RemoveAll /tmp", func() error { return sb.RemoveAll(ctx, "/tmp") }},
		{"Rename /dev/null away", func() error { return sb.Rename(ctx, "/dev/null", "/dev/gone") }},
		{"Rename over /dev/null", func() error { return sb.Rename(ctx, "/tmp/x", "/dev/null") }},
		{"WriteFile over /dev/null", func() error { return sb.WriteFile(ctx, "/dev/null", strings.NewReader("x"), 0o644) }},
		{"Rename /workspace", func() error { return sb.Rename(ctx, "/workspace", "/tmp/ws") }},
	} {
		err := c.op()
		if err == nil {
			t.Errorf("%s succeeded: the files API changed a mount of the sandbox", c.what)
			continue
		}
		if !errors.Is(err, sandbox.ErrPermissionDenied) {
			t.Errorf("%s: %v, want ErrPermissionDenied", c.what, err)
		}
	}
	// The mounts still work: /dev/null is the device, and a terminal opens.
	st, out, errs := sh(t, sb, "stat -c %F /dev/null; echo x > /dev/null && ls /dev/pts/ptmx && cat /tmp/x")
	require.True(t, st.Success(), errs)
	require.Equal(t, "character special file\n/dev/pts/ptmx\nx", out)
	var buf strings.Builder
	res, err := sandbox.Run(ctx, portable(sb), &sandbox.Cmd{Args: []string{"tty"}, TTY: &sandbox.TTY{Rows: 24, Cols: 80}, Stdout: &buf}, nil)
	require.NoError(t, err)
	require.True(t, res.Status.Success(), "a PTY command failed: %q", buf.String()+string(res.Stdout))
	// Ordinary files and directories still go.
	require.NoError(t, sb.MkdirAll(ctx, "/workspace/a/b", 0o755))
	require.NoError(t, sb.RemoveAll(ctx, "/workspace/a"))
	require.NoError(t, sb.Remove(ctx, "/tmp/x"))
}

// TestFilesAPISeesWhatCommandsSee reads /proc entries that leak the host's
// or the agent's secrets through the files API and with cat in the same
// sandbox: both must give the same answer (the same bytes, or a refusal).
func TestFilesAPISeesWhatCommandsSee(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: as another user the files API refuses to read /proc at all (see readProc), so there is nothing to compare")
	}
	ctx := context.Background()
	sb := create(t, newIsolated(t), nil)
	for _, name := range []string{
		"/proc/kallsyms", "/proc/keys", "/proc/key-users", "/proc/timer_list",
		"/proc/sched_debug", "/proc/cmdline", "/proc/1/environ", "/proc/1/stack",
		"/proc/1/syscall", "/proc/1/maps", "/proc/1/mem", "/proc/1/auxv",
		"/proc/1/personality", "/proc/sys/kernel/random/boot_id", "/proc/loadavg",
	} {
		res, err := sandbox.Run(ctx, portable(sb), &sandbox.Cmd{Args: []string{"cat", name}}, nil)
		require.NoError(t, err)
		cmdOK := res.Status.Success()
		var api []byte
		rc, apiErr := sb.ReadFile(ctx, name)
		if apiErr == nil {
			api, apiErr = io.ReadAll(rc)
			rc.Close()
		}
		switch {
		case cmdOK && apiErr != nil:
			t.Errorf("%s: commands read it, the files API got %v", name, apiErr)
		case !cmdOK && apiErr == nil:
			t.Errorf("%s: commands are refused (%s), the files API read %d bytes: %.200q", name, bytes.TrimSpace(res.Stderr), len(api), api)
		case cmdOK && !bytes.Equal(api, res.Stdout) && name != "/proc/1/syscall":
			t.Errorf("%s: the files API read %.200q, commands read %.200q", name, api, res.Stdout)
		}
	}
	// Listing the agent's root and descriptors: what commands can.
	for _, dir := range []string{"/proc/1/fd", "/proc/1/root", "/proc/1/map_files"} {
		st, _, _ := sh(t, sb, "ls "+dir+" >/dev/null")
		_, err := sb.ReadDir(ctx, dir)
		if st.Success() != (err == nil) {
			t.Errorf("listing %s: commands succeed=%t, the files API: %v", dir, st.Success(), err)
		}
	}
}

// TestProcShowsNoHostDetails: the kernel command line, load, boot id,
// hardware and the host's cgroup paths are masked or the sandbox's own.
func TestProcShowsNoHostDetails(t *testing.T) {
	sb := create(t, newIsolated(t), nil)
	hostBoot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	require.NoError(t, err)
	hostCmdline, err := os.ReadFile("/proc/cmdline")
	require.NoError(t, err)
	st, out, errs := sh(t, sb, "echo cmdline=$(cat /proc/cmdline); echo boot=$(cat /proc/sys/kernel/random/boot_id); "+
		"echo load=$(cat /proc/loadavg); echo kallsyms=$(wc -c < /proc/kallsyms); echo keys=$(wc -c < /proc/keys); "+
		"echo timers=$(wc -c < /proc/timer_list); echo acpi=$(ls /proc/acpi 2>/dev/null | wc -l); "+
		"cat /proc/self/cgroup")
	require.True(t, st.Success(), errs)
	if strings.Contains(out, strings.TrimSpace(string(hostCmdline))) {
		t.Errorf("the host's kernel command line is visible in the sandbox:\n%s", out)
	}
	if strings.Contains(out, strings.TrimSpace(string(hostBoot))) {
		t.Errorf("the host's boot id is visible in the sandbox:\n%s", out)
	}
	for _, want := range []string{"cmdline=\n", "load=0.00 0.00 0.00 1/1 1\n", "kallsyms=0\n", "keys=0\n", "timers=0\n", "acpi=0\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("/proc shows host details: want %q in\n%s", strings.TrimSpace(want), out)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(out[strings.Index(out, "acpi="):]), "\n")[1:] {
		if !strings.HasSuffix(line, ":/") {
			t.Errorf("/proc/self/cgroup shows a host cgroup path: %q (want a cgroup namespace rooted at the sandbox)", line)
		}
	}
}

// TestProxyConnectionsAreBounded holds many connections to one sandbox's
// egress proxy: past the per-sandbox bound they are refused (and logged)
// while another sandbox still gets through; past the total bound every
// sandbox is refused until connections close.
func TestProxyConnectionsAreBounded(t *testing.T) {
	oldPer, oldTotal := proxyConnsPerSandbox, proxyConnsTotal
	t.Cleanup(func() { proxyConnsPerSandbox, proxyConnsTotal = oldPer, oldTotal })
	proxyConnsPerSandbox, proxyConnsTotal = 4, 7+proxyConnsOpen.Load()

	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") })}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(ln)
	defer srv.Close()
	port := ln.Addr().(*net.TCPAddr).Port

	var logs bytes.Buffer
	p, err := New(&Options{Root: t.TempDir(), RequireLevel: LevelNamespaces, Logger: newTestLogger(&logs)})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	spec := &sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkAllowlist, Allow: []string{"127.0.0.1"}}}
	a, b := create(t, p, spec), create(t, p, spec)
	dial := func(sb *Sandbox) net.Conn {
		c, err := net.Dial("unix", filepath.Join(sb.dir, "net", "proxy.sock"))
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	// A fetch through the proxy from inside the sandbox.
	fetch := func(sb testSandbox) string {
		_, out, errs := sh(t, sb, fmt.Sprintf("curl -sS --max-time 30 --noproxy '' http://127.0.0.1:%d/ 2>&1", port))
		return out + errs
	}
	refused := func(c net.Conn) string {
		b, _ := io.ReadAll(c)
		return string(b)
	}

	var held []net.Conn
	for range proxyConnsPerSandbox {
		held = append(held, dial(a.d))
	}
	if got := refused(dial(a.d)); !strings.Contains(got, "503") {
		t.Errorf("a connection past the per-sandbox bound (%d) was not refused: %q", proxyConnsPerSandbox, got)
	}
	if got := fetch(a); strings.Contains(got, "hello") {
		t.Errorf("sandbox A got through its proxy past its bound of %d connections", proxyConnsPerSandbox)
	}
	if got := fetch(b); got != "hello" {
		t.Errorf("another sandbox's egress failed while A held its bound: %q", got)
	}
	// The total bound: B's held connections bring it to the limit.
	// (Dials that overtake the proxy's accepting are refused, not held.)
	for proxyConnsOpen.Load() < proxyConnsTotal {
		held = append(held, dial(b.d))
	}
	if got := refused(dial(b.d)); !strings.Contains(got, "across sandboxes") {
		t.Errorf("a connection past the total bound (%d) was not refused: %q", proxyConnsTotal, got)
	}
	for _, c := range held {
		c.Close()
	}
	// The proxy notices the closes (EOF) on its own goroutines.
	open := func() int64 { return a.d.iso.proxy.ln.(*limitListener).open.Load() }
	for deadline := time.Now().Add(30 * time.Second); open() > 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if got := fetch(a); got != "hello" {
		t.Errorf("sandbox A's proxy did not recover once its connections closed: %q", got)
	}
	require.Contains(t, logs.String(), "too many open proxy connections from this sandbox")
}

// TestSweepAtProviderStart: what sandboxes of dead processes left (their
// directory, their cgroups) goes when a provider starts on the same root,
// without waiting for a List; live sandboxes stay.
func TestSweepAtProviderStart(t *testing.T) {
	root := t.TempDir()
	p1, err := New(&Options{Root: root, RequireLevel: LevelNamespaces})
	require.NoError(t, err)
	t.Cleanup(func() { p1.Close() })
	live := create(t, p1, nil)
	// The host "crashes" for one sandbox: the process that created it is
	// killed, its init with it (Pdeathsig), and nobody cleans up. (A
	// sandbox of this process would not do: its handle cleans up when its
	// init dies, beside the sweep.)
	o := startOwner(t, root, 0, nil)
	deadDir := filepath.Join(root, o.id)
	dm, err := readMeta(deadDir)
	require.NoError(t, err)
	require.NotZero(t, dm.InitPID, "the owner's sandbox has no init recorded")
	deadCgroups := dm.Cgroups
	require.NoError(t, o.cmd.Process.Kill())
	waitClosed(t, o.exited, "the owner process to exit")
	deadline := time.Now().Add(2 * time.Minute)
	for processRuns(dm.InitPID, dm.InitStart) {
		require.True(t, time.Now().Before(deadline), "the init of a killed owner's sandbox still runs after 2 minutes")
		time.Sleep(10 * time.Millisecond)
	}
	// The kernel empties the sandbox's cgroups as its last processes exit,
	// which on a busy machine can come after the init is gone; only then
	// is the sandbox dead rather than dying.
	for _, d := range deadCgroups {
		for {
			procs, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			if err != nil || len(bytes.TrimSpace(procs)) == 0 {
				break
			}
			require.True(t, time.Now().Before(deadline), "processes remain in %s 2 minutes after the owner and the init were killed: %s", d, procs)
			time.Sleep(10 * time.Millisecond)
		}
	}

	// A Create whose process died before the init ran: only its metadata.
	gone := exec.Command("true")
	require.NoError(t, gone.Run())
	half := filepath.Join(root, "sb-00000000000000aa")
	require.NoError(t, os.MkdirAll(filepath.Join(half, "workspace"), 0o700))
	require.NoError(t, writeMeta(half, &meta{ID: "sb-00000000000000aa", Isolated: true, NSNames: true, CreatorPID: gone.Process.Pid, CreatorStart: 1}))
	// One being created right now by a live process (this one).
	busy := filepath.Join(root, "sb-00000000000000bb")
	require.NoError(t, os.MkdirAll(busy, 0o700))
	require.NoError(t, writeMeta(busy, &meta{ID: "sb-00000000000000bb", Isolated: true, NSNames: true, CreatorPID: os.Getpid(), CreatorStart: procStart(os.Getpid())}))

	p2, err := New(&Options{Root: root, RequireLevel: LevelNamespaces})
	require.NoError(t, err)
	t.Cleanup(func() { p2.Close() })
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
	if exists(deadDir) {
		t.Errorf("the directory of a sandbox whose creator and init died was left after a provider started")
	}
	for _, d := range deadCgroups {
		if exists(d) {
			t.Errorf("the cgroup %s of a sandbox whose creator and init died was left after a provider started", d)
		}
	}
	if exists(half) {
		t.Errorf("the directory of a Create whose process died was left after a provider started")
	}
	require.True(t, exists(live.d.dir), "a live sandbox's directory was swept")
	require.True(t, exists(busy), "the directory of a sandbox being created by a live process was swept")
	st, _, _ := sh(t, live, "true")
	require.True(t, st.Success(), "a live sandbox stopped working after another provider's sweep")
	require.NoError(t, os.RemoveAll(busy))
}

// TestFailedCreateLeavesNothing: every way Create can fail after making
// the sandbox's directory removes it.
func TestFailedCreateLeavesNothing(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	p, err := New(&Options{Root: root, RequireLevel: LevelNamespaces})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	for _, c := range []struct {
		what string
		spec *sandbox.Spec
	}{
		{"a missing RootFS", &sandbox.Spec{RootFS: filepath.Join(root, "no-such-rootfs")}},
		{"a working directory that cannot be made", &sandbox.Spec{Workdir: "/proc/perimeter"}},
		{"an allowlist sandbox with a missing RootFS", &sandbox.Spec{RootFS: "/nonexistent", Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkAllowlist, Allow: []string{"example.com"}}}},
	} {
		_, err := p.Create(ctx, c.spec)
		require.Error(t, err, c.what)
		entries, _ := os.ReadDir(root)
		for _, e := range entries {
			t.Errorf("Create failing on %s left %s", c.what, e.Name())
			os.RemoveAll(filepath.Join(root, e.Name()))
		}
	}
}
