package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

func newIsolated(t testing.TB) *sandbox.Provider {
	t.Helper()
	p, err := New(&Options{Root: t.TempDir(), RequireLevel: LevelNamespaces})
	require.NoError(t, err, "isolated sandboxes must work on this machine")
	t.Cleanup(func() { p.Close() })
	return p
}

func create(t testing.TB, p *sandbox.Provider, spec *sandbox.Spec) testSandbox {
	t.Helper()
	if !driverOf(p).Isolated() && (spec == nil || spec.Network == nil) {
		// L0 shares the host's network and so refuses the default (none):
		// its sandboxes ask for open egress.
		s := sandbox.Spec{}
		if spec != nil {
			s = *spec
		}
		s.Network = &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}
		spec = &s
	}
	sb, err := p.Create(context.Background(), spec)
	require.NoError(t, err)
	t.Cleanup(func() { sb.Terminate(context.Background()) })
	ts := testSandbox{Sandbox: sb}
	require.True(t, sb.As(&ts.d))
	return ts
}

// sh runs script with sh -c and returns its status and output.
func sh(t testing.TB, sb any, script string) (sandbox.ExitStatus, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := sandbox.Run(ctx, portable(sb), &sandbox.Cmd{Args: []string{"sh", "-c", script}}, nil)
	require.NoError(t, err, script)
	return res.Status, string(res.Stdout), string(res.Stderr)
}

func TestIsolationIsReported(t *testing.T) {
	t.Parallel()
	sb := create(t, newIsolated(t), nil)
	iso := sb.Isolation()
	assert.GreaterOrEqual(t, iso.Level, LevelNamespaces)
	assert.True(t, iso.UserNS && iso.MountNS && iso.PIDNS && iso.NetNS && iso.UTSNS && iso.IPCNS, "namespaces: %+v", iso)
	assert.True(t, iso.Seccomp && iso.NoNewPrivs && iso.CapsDropped, "hardening: %+v", iso)
	assert.Equal(t, "none", iso.Network)
	assert.Equal(t, "host", iso.RootFS)
	if os.Getuid() == 0 {
		assert.GreaterOrEqual(t, iso.UIDBase, uidRangeStart, "sandbox root must not be host root")
	}
	info, err := sb.Info(context.Background())
	require.NoError(t, err)
	assert.Contains(t, info.Isolation, "namespaces(user,mount,pid,net,uts,ipc)")
	assert.True(t, sb.Capabilities().PTY)

	st, out, _ := sh(t, sb, "grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; id -u; pwd")
	require.True(t, st.Success())
	assert.Contains(t, out, "CapEff:\t0000000000000000")
	assert.Contains(t, out, "CapBnd:\t0000000000000000")
	assert.Contains(t, out, "NoNewPrivs:\t1")
	assert.Contains(t, out, "Seccomp:\t2")
	assert.Contains(t, out, "\n0\n/workspace\n")
}

func TestWorkspaceIsSharedWithTheFilesAPI(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sb := create(t, newIsolated(t), nil)
	require.NoError(t, sb.MkdirAll(ctx, "d/e", 0o755))
	require.NoError(t, sb.WriteFile(ctx, "d/e/f.txt", strings.NewReader("host\n"), 0o644))
	st, out, errs := sh(t, sb, "cat d/e/f.txt && echo inside >> d/e/f.txt && touch d/e/g && cat /workspace/d/e/f.txt")
	require.True(t, st.Success(), errs)
	assert.Equal(t, "host\nhost\ninside\n", out)
	rc, err := sb.ReadFile(ctx, "/workspace/d/e/f.txt")
	require.NoError(t, err)
	b, _ := io.ReadAll(rc)
	rc.Close()
	assert.Equal(t, "host\ninside\n", string(b))

	// Absolute names are the sandbox's view, with its permissions.
	require.NoError(t, sb.WriteFile(ctx, "/tmp/t.txt", strings.NewReader("tmp"), 0o644))
	_, out, _ = sh(t, sb, "cat /tmp/t.txt")
	assert.Equal(t, "tmp", out)
	rc, err = sb.ReadFile(ctx, "/etc/shadow")
	if err == nil {
		b, _ := io.ReadAll(rc)
		rc.Close()
		assert.Empty(t, b, "the files API read the host's /etc/shadow")
	}
	err = sb.WriteFile(ctx, "/usr/perimeter-escape", strings.NewReader("x"), 0o644)
	assert.ErrorIs(t, err, sandbox.ErrPermissionDenied, "the files API wrote to the read-only /usr")
	err = sb.WriteFile(ctx, "/perimeter-escape", strings.NewReader("x"), 0o644)
	assert.ErrorIs(t, err, sandbox.ErrPermissionDenied, "the files API wrote to the read-only root")
	_, err = os.Stat("/perimeter-escape")
	assert.True(t, errors.Is(err, os.ErrNotExist), "a file appeared in the host's /")
}

// TestEscapeBattery tries the ways out of a sandbox; every one must be
// blocked, and each failure says what got through.
func TestEscapeBattery(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := newIsolated(t)
	sb := create(t, p, nil)
	other := create(t, p, nil)
	require.NoError(t, other.WriteFile(ctx, "secret.txt", strings.NewReader("other-secret"), 0o644))

	blocked := func(t *testing.T, what, script string) {
		t.Helper()
		st, out, errs := sh(t, sb, script)
		if st.Success() {
			t.Errorf("%s got through: `%s` exited 0 with stdout %q stderr %q", what, script, out, errs)
		}
	}

	t.Run("another sandbox's workspace", func(t *testing.T) {
		host := filepath.Join(other.Workspace(), "secret.txt")
		blocked(t, "reading another sandbox's workspace by its host path", "cat "+host)
		_, out, _ := sh(t, sb, "grep "+other.ID()+" /proc/self/mountinfo; find / -xdev -name secret.txt 2>/dev/null; true")
		assert.Empty(t, out, "another sandbox's workspace is visible inside this one: %s", out)
	})
	t.Run("/root", func(t *testing.T) {
		blocked(t, "listing /root", "ls /root")
	})
	t.Run("/etc/shadow", func(t *testing.T) {
		_, out, _ := sh(t, sb, "cat /etc/shadow 2>/dev/null; true")
		assert.Empty(t, out, "/etc/shadow is readable: %q", out)
	})
	t.Run("write to /usr", func(t *testing.T) {
		blocked(t, "writing to /usr", "touch /usr/perimeter-escape")
		_, err := os.Stat("/usr/perimeter-escape")
		assert.True(t, errors.Is(err, os.ErrNotExist), "a file appeared in the host's /usr")
		blocked(t, "writing to /", "touch /perimeter-escape")
		blocked(t, "writing to /etc", "echo x >> /etc/hostname")
	})
	t.Run("host processes", func(t *testing.T) {
		_, out, _ := sh(t, sb, "ls /proc | grep -c '^[0-9]'")
		n, _ := strconv.Atoi(strings.TrimSpace(out))
		assert.LessOrEqual(t, n, 5, "the sandbox sees %d processes; the host's are visible", n)
		blocked(t, "signalling a host process", fmt.Sprintf("kill -0 %d", os.Getpid()))
		blocked(t, "signalling the sandbox's init", "kill -TERM 1 && sleep 0.2 && kill -0 1 && false")
	})
	t.Run("tcp to the host", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer ln.Close()
		accepted := make(chan struct{}, 1)
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Close()
				accepted <- struct{}{}
			}
		}()
		port := ln.Addr().(*net.TCPAddr).Port
		blocked(t, "a TCP connection to a host loopback listener", fmt.Sprintf("exec bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d'", port))
		select {
		case <-accepted:
			t.Error("a TCP connection from the sandbox reached the host's listener")
		case <-time.After(200 * time.Millisecond):
		}
	})
	t.Run("udp to the host", func(t *testing.T) {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		require.NoError(t, err)
		defer pc.Close()
		port := pc.LocalAddr().(*net.UDPAddr).Port
		sh(t, sb, fmt.Sprintf("bash -c 'echo escape > /dev/udp/127.0.0.1/%d'; true", port))
		pc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		buf := make([]byte, 64)
		if n, _, err := pc.ReadFrom(buf); err == nil {
			t.Errorf("a UDP datagram from the sandbox reached the host: %q", buf[:n])
		}
	})
	t.Run("dns", func(t *testing.T) {
		blocked(t, "a DNS lookup", "getent hosts example.com")
	})
	t.Run("mount", func(t *testing.T) {
		blocked(t, "mounting a tmpfs", "mount -t tmpfs x /tmp")
		blocked(t, "a nested user namespace", "unshare -Ur true")
		blocked(t, "a nested network namespace", "unshare -n true")
	})
	t.Run("ptrace", func(t *testing.T) {
		blocked(t, "ptrace of a child", "strace -f -o /dev/null true")
		blocked(t, "ptrace of the sandbox's init", "gdb -batch -p 1 2>&1 | grep -q 'Attaching to process 1' && ! gdb -batch -p 1 2>&1 | grep -qi 'not permitted\\|denied\\|could not'")
	})
	t.Run("/proc/1/root and /proc/self/fd", func(t *testing.T) {
		blocked(t, "listing /proc/1/root", "ls /proc/1/root/")
		blocked(t, "following the init's descriptors", "for f in /proc/1/fd/*; do readlink $f && exit 0; ls $f/ >/dev/null 2>&1 && exit 0; done; exit 1")
		blocked(t, "reading the init's environment", "cat /proc/1/environ")
		_, out, _ := sh(t, sb, "ls -l /proc/self/fd/ 2>/dev/null")
		for _, bad := range []string{"sb-", "control", "agent.sock", other.Workspace()} {
			assert.NotContains(t, out, bad, "a descriptor to the host leaked into commands:\n%s", out)
		}
	})
	t.Run("fork bomb", func(t *testing.T) {
		sb := create(t, p, &sandbox.Spec{Resources: sandbox.Resources{PIDs: 64}})
		st, out, errs := sh(t, sb, "n=0; for i in $(seq 200); do sleep 3 & n=$((n+1)); done 2>/dev/null; echo $(jobs -p | wc -l); kill $(jobs -p) 2>/dev/null; true")
		_ = st
		n, _ := strconv.Atoi(strings.TrimSpace(out))
		assert.Less(t, n, 200, "200 processes started under a pids limit of 64 (%s)", errs)
		// The agent survives and the sandbox works again once the bomb's
		// processes end (they sleep 3 s).
		require.NoError(t, sb.d.iso.call(ctx, &agentRequest{Op: "ping"}), "the agent died in the fork bomb")
		assert.Eventually(t, func() bool {
			st, _, _ := sh(t, sb, "true")
			return st.Success()
		}, 15*time.Second, 100*time.Millisecond, "the sandbox stopped working after the fork bomb")
	})
	t.Run("memory hog", func(t *testing.T) {
		sb := create(t, p, &sandbox.Spec{Resources: sandbox.Resources{Memory: 128 << 20}})
		st, _, errs := sh(t, sb, "head -c 400000000 /dev/zero | tail > /dev/null")
		assert.False(t, st.Success(), "allocating 400 MB under a 128 MiB limit succeeded (%s)", errs)
		res, err := sandbox.Run(ctx, portable(sb), &sandbox.Cmd{Args: []string{"python3", "-c", "b = b'x' * (400 << 20)"}, Timeout: time.Minute}, nil)
		require.NoError(t, err)
		assert.False(t, res.Status.Success(), "allocating 400 MB under a 128 MiB limit succeeded (%s)", res.Stderr)
		if sb.Isolation().Cgroup != "none" {
			assert.True(t, st.OOMKilled, "status %+v of the shell: the kill was not reported as OOM", st)
			assert.True(t, res.Status.OOMKilled, "status %+v: the kill was not reported as OOM", res.Status)
			assert.Equal(t, sandbox.SIGKILL, res.Status.Signal)
		}
	})
	t.Run("files API .. and symlinks", func(t *testing.T) {
		_, err := sb.ReadFile(ctx, "../../etc/passwd")
		assert.ErrorIs(t, err, sandbox.ErrInvalidArgument)
		st, _, errs := sh(t, sb, "ln -s / rootlink && ln -s /etc/passwd passwd && ln -s "+other.Workspace()+" otherlink")
		require.True(t, st.Success(), errs)
		for _, name := range []string{"rootlink/etc/passwd", "passwd", "otherlink/secret.txt"} {
			rc, err := sb.ReadFile(ctx, name)
			if err == nil {
				b, _ := io.ReadAll(rc)
				rc.Close()
				t.Errorf("ReadFile(%q) followed a symlink out of the workspace and read %q", name, b)
			}
		}
		err = sb.WriteFile(ctx, "rootlink/tmp/escape", strings.NewReader("x"), 0o644)
		assert.Error(t, err, "WriteFile followed a symlink out of the workspace")
	})
}

func TestNetworkAllowlist(t *testing.T) {
	t.Parallel()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello from the host") })}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(ln)
	defer srv.Close()
	port := ln.Addr().(*net.TCPAddr).Port

	var logs bytes.Buffer
	p, err := New(&Options{Root: t.TempDir(), RequireLevel: LevelNamespaces, Logger: newTestLogger(&logs)})
	require.NoError(t, err)
	// localhost resolves to loopback, which a domain alone does not open:
	// the test allows 127.0.0.1 explicitly.
	sb := create(t, p, &sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkAllowlist, Allow: []string{"localhost", "127.0.0.1"}}})
	assert.Equal(t, "proxy", sb.Isolation().Network)

	st, out, errs := sh(t, sb, fmt.Sprintf("curl -sS --max-time 10 --noproxy '' http://localhost:%d/", port))
	require.True(t, st.Success(), "an allowed domain through the proxy failed: %s", errs)
	assert.Equal(t, "hello from the host", out)

	st, out, _ = sh(t, sb, fmt.Sprintf("curl -sS --max-time 10 -o /dev/null -w '%%{http_code}' http://127.0.0.2:%d/", port))
	assert.Equal(t, "403", out, "a destination outside the allowlist got through (status %v)", st)
	st, _, _ = sh(t, sb, fmt.Sprintf("curl -sS --max-time 10 -p https://127.0.0.2:%d/", port))
	assert.False(t, st.Success(), "CONNECT to a destination outside the allowlist got through")
	st, _, _ = sh(t, sb, fmt.Sprintf("curl -sS --max-time 5 --noproxy '*' http://127.0.0.1:%d/", port))
	assert.False(t, st.Success(), "a direct connection, bypassing the proxy, got through")

	// A domain on the list that resolves to an internal address is refused
	// unless the address is allowed too.
	narrow := create(t, p, &sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkAllowlist, Allow: []string{"localhost"}}})
	_, out, _ = sh(t, narrow, fmt.Sprintf("curl -sS --max-time 10 --noproxy '' -o /dev/null -w '%%{http_code}' http://localhost:%d/", port))
	assert.Equal(t, "403", out, "an allowed name resolving to loopback reached the host")
	st, _, _ = sh(t, narrow, fmt.Sprintf("curl -sS --max-time 10 --noproxy '' -p http://localhost:%d/", port))
	assert.False(t, st.Success(), "CONNECT to an allowed name resolving to loopback got through")
	assert.Contains(t, logs.String(), "an internal address no CIDR entry allows")

	assert.Contains(t, logs.String(), "decision=allow")
	assert.Contains(t, logs.String(), "decision=deny")
	assert.Contains(t, logs.String(), "host=127.0.0.2")
}

func TestAllowlistParsing(t *testing.T) {
	t.Parallel()
	al, err := parseAllowlist([]string{"example.com", "*.corp.example", "10.0.0.0/8", "::1"})
	require.NoError(t, err)
	for host, want := range map[string]bool{
		"example.com": true, "EXAMPLE.com.": true, "www.example.com": false,
		"a.corp.example": true, "corp.example": false, "10.1.2.3": true, "11.0.0.1": false,
		"[::1]": true, "evil.com": false,
	} {
		assert.Equal(t, want, al.permits(host), host)
	}
	for _, bad := range []string{"", "a b", "*", "10.0.0.0/99", "http://x"} {
		_, err := parseAllowlist([]string{bad})
		assert.Error(t, err, "%q", bad)
	}
}

func TestExposeForwardsIntoTheNetworkNamespace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sb := create(t, newIsolated(t), nil)
	require.NoError(t, sb.WriteFile(ctx, "index.html", strings.NewReader("served from inside"), 0o644))
	p, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"python3", "-m", "http.server", "--bind", "127.0.0.1", "8123"}})
	require.NoError(t, err)
	defer p.Signal(ctx, sandbox.SIGKILL)
	// The port exists only in the sandbox's network namespace.
	tun, err := sb.Expose(ctx, 8123, nil)
	require.NoError(t, err)
	var body string
	require.Eventually(t, func() bool {
		resp, err := http.Get(tun.URL() + "/index.html")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == 200
	}, 15*time.Second, 50*time.Millisecond)
	assert.Equal(t, "served from inside", body)
	c, err := net.DialTimeout("tcp", "127.0.0.1:8123", time.Second)
	if err == nil {
		c.Close()
		t.Error("the sandbox's port 8123 is reachable on host loopback without Expose")
	}
	require.NoError(t, tun.Close())
	_, err = http.Get(tun.URL())
	assert.Error(t, err, "the tunnel still answers after Close")
}

func TestPTYResize(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sb := create(t, newIsolated(t), nil)
	pr, w := io.Pipe()
	var out syncBuffer
	p, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"sh", "-c", "stty size; read x; stty size"}, TTY: &sandbox.TTY{Rows: 24, Cols: 80}, Stdin: pr, Stdout: &out})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "24 80") }, 10*time.Second, 10*time.Millisecond, out.String())
	require.NoError(t, p.Resize(ctx, 40, 100))
	w.Write([]byte("go\n"))
	st, err := p.Wait(ctx)
	w.Close()
	require.NoError(t, err)
	assert.True(t, st.Success())
	assert.Contains(t, out.String(), "40 100")
}

func TestCreateFailsClosed(t *testing.T) {
	t.Parallel()
	h := HostSupport{Namespaces: errors.New("clone: operation not permitted"), Seccomp: true, Cgroup: "none", CgroupErr: errors.New("read-only")}
	assert.Equal(t, LevelNone, h.MaxLevel())
	assert.Contains(t, h.missing(LevelFull), "namespaces (clone: operation not permitted)")
	assert.Contains(t, h.missing(LevelFull), "cgroups (read-only)")
	h = HostSupport{Seccomp: true, LandlockABI: 7, Cgroup: "none", CgroupErr: errors.New("no controllers")}
	assert.Equal(t, LevelNamespaces, h.MaxLevel())

	if Probe().MaxLevel() < LevelFull {
		_, err := New(&Options{Root: t.TempDir(), RequireLevel: LevelFull})
		require.Error(t, err)
		assert.ErrorIs(t, err, sandbox.ErrNotSupported)
		assert.Contains(t, err.Error(), "missing")
	} else {
		p, err := New(&Options{Root: t.TempDir(), RequireLevel: LevelFull})
		require.NoError(t, err)
		assert.Equal(t, LevelFull, create(t, p, nil).Isolation().Level)
	}
	_, err := New(&Options{Root: t.TempDir(), Unisolated: true, RequireLevel: LevelFull})
	assert.ErrorIs(t, err, sandbox.ErrInvalidArgument)
}

func TestURLs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p, err := sandbox.Open(ctx, "local://"+t.TempDir()+"?isolation=none")
	require.NoError(t, err)
	assert.False(t, driverOf(p).Isolated())
	p, err = sandbox.Open(ctx, "local://"+t.TempDir()+"?require=L2")
	require.NoError(t, err)
	assert.True(t, driverOf(p).Isolated())
	_, err = sandbox.Open(ctx, "local:///x?isolation=maybe")
	assert.ErrorIs(t, err, sandbox.ErrInvalidArgument)
	_, err = sandbox.Open(ctx, "local:///x?require=9")
	assert.ErrorIs(t, err, sandbox.ErrInvalidArgument)
	// A misspelt parameter is an error naming the known ones, not a
	// sandbox without the isolation it asked for.
	_, err = sandbox.Open(ctx, "local://"+t.TempDir()+"?requre=L3")
	assert.ErrorIs(t, err, sandbox.ErrInvalidArgument)
	assert.ErrorContains(t, err, `unknown parameter "requre" (known: isolation, require)`)
}

func TestSpecValidation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := newIsolated(t)
	for name, spec := range map[string]*sandbox.Spec{
		"image":         {Image: "ubuntu"},
		"gpu":           {Resources: sandbox.Resources{GPU: "A100"}},
		"tiny memory":   {Resources: sandbox.Resources{Memory: 1 << 20}},
		"bad mode":      {Network: &sandbox.NetworkPolicy{Mode: "sometimes"}},
		"bad allow":     {Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkAllowlist, Allow: []string{"a b"}}},
		"workdir ro":    {Workdir: "/usr/perimeter-nonexistent"},
		"relative root": {RootFS: "rootfs"},
	} {
		sb, err := p.Create(ctx, spec)
		if !assert.Error(t, err, name) {
			sb.Terminate(ctx)
		}
	}
}

func TestRootFSImageIsAnOverlay(t *testing.T) {
	t.Parallel()
	// A tiny image: the host's own /usr and /etc trees are too big to copy,
	// so bind them read-only from a directory that links to them.
	img := t.TempDir()
	for _, d := range []string{"usr", "etc", "bin", "lib", "lib64", "sbin"} {
		if fi, err := os.Lstat("/" + d); err == nil {
			if fi.Mode()&os.ModeSymlink != 0 {
				target, _ := os.Readlink("/" + d)
				require.NoError(t, os.Symlink(target, filepath.Join(img, d)))
			} else {
				require.NoError(t, os.Mkdir(filepath.Join(img, d), 0o755))
			}
		}
	}
	require.NoError(t, os.WriteFile(filepath.Join(img, "marker"), []byte("image"), 0o644))
	sb := create(t, newIsolated(t), &sandbox.Spec{RootFS: img})
	assert.Equal(t, "image", sb.Isolation().RootFS)
	st, out, errs := sh(t, sb, "cat /marker && echo changed > /marker && cat /marker")
	// The image's /usr is empty here, so sh comes from nowhere: expect 127
	// unless the image carries a shell.
	if st.Code == 127 {
		assert.Contains(t, errs, "not found")
		b, _ := os.ReadFile(filepath.Join(img, "marker"))
		assert.Equal(t, "image", string(b))
		return
	}
	require.True(t, st.Success(), errs)
	assert.Equal(t, "image\nchanged\n", out)
	b, _ := os.ReadFile(filepath.Join(img, "marker"))
	assert.Equal(t, "image", string(b), "a write inside reached the image (the lower layer)")
}

func TestTerminateDuringACommand(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sb := create(t, newIsolated(t), nil)
	var out syncBuffer
	p, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"sh", "-c", "echo started; sleep 60"}, Stdout: &out})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return out.String() == "started\n" }, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, sb.Terminate(ctx))
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = p.Wait(wctx)
	assert.ErrorIs(t, err, sandbox.ErrTerminated)
	_, err = sb.Start(ctx, &sandbox.Cmd{Args: []string{"true"}})
	assert.ErrorIs(t, err, sandbox.ErrTerminated)
	assert.NoError(t, sb.Terminate(ctx), "Terminate is idempotent")
}

func TestCreateHonoursACancelledContext(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	p, err := New(&Options{Root: root, RequireLevel: LevelNamespaces})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = p.Create(ctx, nil)
	assert.ErrorIs(t, err, context.Canceled)
	ctx, cancel = context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	if _, err := p.Create(ctx, nil); err != nil {
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	}
	entries, _ := os.ReadDir(root)
	for _, e := range entries {
		if e.IsDir() {
			// a sandbox that won the race is fine; a half-made one is not
			_, err := os.Stat(filepath.Join(root, e.Name(), metaFile))
			assert.NoError(t, err, "a half-created sandbox directory %s was left behind", e.Name())
		}
	}
	for info, err := range p.List(context.Background(), nil) {
		require.NoError(t, err)
		sb, err := p.Get(context.Background(), info.ID)
		require.NoError(t, err)
		sb.Terminate(context.Background())
	}
}

func TestOutputIsBinarySafeAndSeparate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sb := create(t, newIsolated(t), nil)
	var stdout, stderr bytes.Buffer
	res, err := sandbox.Run(ctx, portable(sb), &sandbox.Cmd{
		Args:   []string{"sh", "-c", "head -c 3000000 /dev/urandom > r.bin; cat r.bin; printf 'e\\000rr' >&2; exit 3"},
		Stdout: &stdout, Stderr: &stderr,
	}, &sandbox.RunOptions{OutputLimit: -1})
	require.NoError(t, err)
	assert.Equal(t, 3, res.Status.Code)
	assert.Equal(t, "e\x00rr", stderr.String())
	rc, err := sb.ReadFile(ctx, "r.bin")
	require.NoError(t, err)
	want, _ := io.ReadAll(rc)
	rc.Close()
	assert.True(t, bytes.Equal(want, stdout.Bytes()), "stdout (%d bytes) differs from the file (%d bytes)", stdout.Len(), len(want))
}

// TestL2LimitsWithRlimits runs without cgroups, as on a host where none is
// writable: limits fall back to rlimits.
func TestL2LimitsWithRlimits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p, err := New(&Options{Root: t.TempDir(), Level: LevelNamespaces})
	require.NoError(t, err)
	sb := create(t, p, &sandbox.Spec{Resources: sandbox.Resources{Memory: 128 << 20, PIDs: 32}})
	iso := sb.Isolation()
	assert.Equal(t, LevelNamespaces, iso.Level)
	assert.True(t, iso.Rlimits)
	assert.Equal(t, "none", iso.Cgroup)
	res, err := sandbox.Run(ctx, portable(sb), &sandbox.Cmd{Args: []string{"python3", "-c", "b = b'x' * (400 << 20)"}, Timeout: time.Minute}, nil)
	require.NoError(t, err)
	assert.False(t, res.Status.Success(), "400 MB under a 128 MiB address-space limit succeeded")
	_, out, _ := sh(t, sb, "for i in $(seq 100); do sleep 3 >/dev/null 2>&1 & done 2>/dev/null; jobs -p | wc -l")
	n, _ := strconv.Atoi(strings.TrimSpace(out))
	assert.Less(t, n, 100, "100 processes started under an NPROC limit of 32")
}

func TestOrphansAreReaped(t *testing.T) {
	sb := create(t, newIsolated(t), nil)
	for i := 0; i < 5; i++ {
		st, _, errs := sh(t, sb, "(sleep 0.05 >/dev/null 2>&1 &) ; sh -c 'sleep 0.05 >/dev/null 2>&1 & exit 0'")
		require.True(t, st.Success(), errs)
	}
	// Orphans exit after 50 ms; each must be reaped soon after (a loaded
	// machine gets a few seconds).
	var zombies []string
	deadline := time.Now().Add(5 * time.Second)
	for {
		zombies = zombies[:0]
		running := 0
		_, out, _ := sh(t, sb, "for s in /proc/[0-9]*/stat; do cut -d' ' -f1-3 $s; done")
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(line)
			switch {
			case len(f) != 3:
			case f[2] == "Z":
				zombies = append(zombies, line)
			case f[1] == "(sleep)":
				running++
			}
		}
		if (running == 0 && len(zombies) == 0) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	assert.Empty(t, zombies, "zombies left unreaped in the sandbox")
}

func TestWorkdirBelongsToTheSandbox(t *testing.T) {
	t.Parallel()
	sb := create(t, newIsolated(t), &sandbox.Spec{Workdir: "/workspace/a/b"})
	st, out, errs := sh(t, sb, "pwd && touch made-here && mkdir sub && echo ok")
	require.True(t, st.Success(), "cannot write in the working directory Create made: %s", errs)
	assert.Equal(t, "/workspace/a/b\nok\n", out)
	fi, err := sb.Stat(context.Background(), "made-here")
	require.NoError(t, err)
	assert.Equal(t, "made-here", fi.Name)
}

func TestWorkdirOutsideTheWorkspace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sb := create(t, newIsolated(t), &sandbox.Spec{Workdir: "/tmp/w"})
	require.NoError(t, sb.WriteFile(ctx, "f.txt", strings.NewReader("x"), 0o644))
	st, out, errs := sh(t, sb, "pwd; cat f.txt")
	require.True(t, st.Success(), errs)
	assert.Equal(t, "/tmp/w\nx", out)
	_, err := newIsolated(t).Create(ctx, &sandbox.Spec{Workdir: "/usr/w"})
	assert.ErrorIs(t, err, sandbox.ErrPermissionDenied, "a working directory on a read-only mount")
}

func TestReadFileRefusesAFIFOWithoutBlocking(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sb := create(t, newIsolated(t), nil)
	st, _, errs := sh(t, sb, "mkfifo pipe")
	require.True(t, st.Success(), errs)
	_, err := sb.ReadFile(ctx, "pipe")
	assert.ErrorIs(t, err, sandbox.ErrInvalidArgument)
}

func TestDiskBoundsTheWritableLayers(t *testing.T) {
	t.Parallel()
	sb := create(t, newIsolated(t), &sandbox.Spec{Resources: sandbox.Resources{Disk: 8 << 20}})
	st, _, errs := sh(t, sb, "head -c 20000000 /dev/zero > /tmp/big")
	assert.False(t, st.Success(), "20 MB fitted in /tmp under an 8 MiB disk limit")
	assert.Contains(t, errs, "No space left on device")
}

func TestDeepRootsWork(t *testing.T) {
	t.Parallel()
	// Far beyond the 107 bytes of a Unix socket address.
	root := filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 60))
	p, err := New(&Options{Root: root, RequireLevel: LevelNamespaces})
	require.NoError(t, err)
	sb := create(t, p, &sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkAllowlist, Allow: []string{"example.com"}}})
	st, out, errs := sh(t, sb, "echo ok")
	require.True(t, st.Success(), errs)
	assert.Equal(t, "ok\n", out)
}

func TestLargeArgvAndEnvironment(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sb := create(t, newIsolated(t), nil)
	big := strings.Repeat("abcdefghij", 12000) // 120 kB each: past one 64 KiB frame, under the kernel's 128 KiB per string
	res, err := sandbox.Run(ctx, portable(sb), &sandbox.Cmd{
		Args: []string{"sh", "-c", `printf '%s' "$1" | wc -c; printf '%s' "$BIG" | wc -c`, "sh", big},
		Env:  map[string]string{"BIG": big},
	}, nil)
	require.NoError(t, err)
	assert.Equal(t, "120000\n120000\n", string(res.Stdout), string(res.Stderr))
}

func TestAgentConnectionsAreReusedCleanly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sb := create(t, newIsolated(t), nil)
	for i := 0; i < 20; i++ {
		var script string
		switch i % 4 {
		case 0:
			script = "echo out-%d; echo err-%d >&2"
		case 1:
			script = "echo out-%d; echo err-%d >&2; exit 3"
		case 2:
			script = "echo out-%d; echo err-%d >&2; sleep 5 >/dev/null 2>&1 &"
		case 3:
			script = "echo out-%d; echo err-%d >&2; kill -9 $$"
		}
		res, err := sandbox.Run(ctx, portable(sb), &sandbox.Cmd{Args: []string{"sh", "-c", fmt.Sprintf(script, i, i)}}, nil)
		require.NoError(t, err, "exec %d", i)
		assert.Equal(t, fmt.Sprintf("out-%d\n", i), string(res.Stdout), "exec %d", i)
		assert.Equal(t, fmt.Sprintf("err-%d\n", i), string(res.Stderr), "exec %d", i)
		// A command with stdin in between uses a connection of its own.
		res, err = sandbox.Run(ctx, portable(sb), &sandbox.Cmd{Args: []string{"cat"}, Stdin: strings.NewReader("in")}, nil)
		require.NoError(t, err)
		assert.Equal(t, "in", string(res.Stdout))
	}
	sb.d.iso.idleMu.Lock()
	n := len(sb.d.iso.idle)
	sb.d.iso.idleMu.Unlock()
	assert.Equal(t, 1, n, "sequential commands should share one kept connection")

	// A cancelled command leaves no poisoned connection behind.
	cctx, cancel := context.WithCancel(ctx)
	p, err := sb.Start(cctx, &sandbox.Cmd{Args: []string{"sleep", "30"}})
	require.NoError(t, err)
	cancel()
	_, err = p.Wait(ctx)
	assert.ErrorIs(t, err, context.Canceled)
	res, err := sandbox.Run(ctx, portable(sb), &sandbox.Cmd{Args: []string{"echo", "after"}}, nil)
	require.NoError(t, err)
	assert.Equal(t, "after\n", string(res.Stdout))
}

// netnsEnv makes this test binary, re-executed under `ip netns exec`, the
// body of TestCreateUnderIPNetnsExec; its value is the provider's root.
const netnsEnv = "PERIMETER_LOCAL_TEST_NETNS"

// TestCreateUnderIPNetnsExec: an isolated sandbox works when the host
// program runs under `ip netns exec NAME` (its own mount namespace, with the
// network namespace's /sys and so no cgroup hierarchy). There, the init's
// Go runtime once took descriptor 8 for its epoll, which the init then
// closed as the unused root filesystem descriptor, and died: the provider
// now sets every descriptor it reserves, unused ones to /dev/null.
func TestCreateUnderIPNetnsExec(t *testing.T) {
	if root := os.Getenv(netnsEnv); root != "" {
		ctx := context.Background()
		p, err := New(&Options{Root: root})
		require.NoError(t, err)
		defer p.Close()
		sb, err := p.Create(ctx, &sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkNone}})
		require.NoError(t, err)
		defer sb.Terminate(ctx)
		res, err := sandbox.Run(ctx, sb, &sandbox.Cmd{Args: []string{"echo", "hello from", "the netns"}}, nil)
		require.NoError(t, err)
		fmt.Printf("%s", res.Stdout)
		return
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Skip("iproute2's ip is not installed")
	}
	if os.Geteuid() != 0 {
		t.Skip("ip netns needs root")
	}
	name := fmt.Sprintf("perimeter-test-%d", os.Getpid())
	out, err := exec.Command(ip, "netns", "add", name).CombinedOutput()
	require.NoError(t, err, "%s", out)
	t.Cleanup(func() {
		out, err := exec.Command(ip, "netns", "delete", name).CombinedOutput()
		assert.NoError(t, err, "%s", out)
	})
	cmd := exec.Command(ip, "netns", "exec", name, os.Args[0], "-test.run=^TestCreateUnderIPNetnsExec$", "-test.count=1")
	cmd.Env = append(os.Environ(), netnsEnv+"="+t.TempDir())
	out, err = cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "hello from the netns\n")
}

// agentThreadCount is the number of threads of sb's init (the agent).
func agentThreadCount(t *testing.T, sb testSandbox) int {
	t.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", sb.d.iso.initPID))
	require.NoError(t, err)
	return len(tasks)
}

// The agent waits for its commands through the netpoller, not on a thread
// each: its threads, all started before the first command, are as many
// with 30 commands running as with none. (Each thread is a process of the
// sandbox's pids limit, and a Go program that cannot make a thread aborts.)
func TestAgentThreadsDoNotGrowWithCommands(t *testing.T) {
	t.Parallel()
	eachAgentLevel(t, testAgentThreads)
}

func testAgentThreads(t *testing.T, p *sandbox.Provider) {
	ctx := context.Background()
	sb := create(t, p, nil)
	before := agentThreadCount(t, sb)
	assert.LessOrEqual(t, before, agentThreads, "the agent starts on more threads than it reserves")
	var procs []*sandbox.Process
	for range 30 {
		pr, err := portable(sb).Start(ctx, &sandbox.Cmd{Args: []string{"sleep", "60"}})
		require.NoError(t, err)
		procs = append(procs, pr)
	}
	after := agentThreadCount(t, sb)
	for _, pr := range procs {
		require.NoError(t, pr.Signal(ctx, sandbox.SIGKILL))
		st, err := pr.Wait(ctx)
		require.NoError(t, err)
		assert.Equal(t, sandbox.SIGKILL, st.Signal)
	}
	assert.LessOrEqual(t, after, before+2, "the agent went from %d to %d threads with 30 commands running", before, after)
}

// A sandbox asked to run more commands at once than its process limit
// allows keeps its agent: those that fit run, the others fail to start
// (a status, not an error), and the agent answers pings throughout and
// runs commands afterwards. (An agent that takes a thread per command
// aborts here, when the runtime cannot make one.)
func TestAgentSurvivesAFullProcessTable(t *testing.T) {
	t.Parallel()
	eachAgentLevel(t, testFullProcessTable)
}

func testFullProcessTable(t *testing.T, p *sandbox.Provider) {
	ctx := context.Background()
	const limit, commands = 64, 100
	sb := create(t, p, &sandbox.Spec{Resources: sandbox.Resources{PIDs: limit}})
	type result struct {
		res *sandbox.Result
		err error
	}
	results := make(chan result, commands)
	pings := make(chan error, commands)
	for range commands {
		go func() {
			res, err := sandbox.Run(ctx, portable(sb), &sandbox.Cmd{Args: []string{"sleep", "1"}}, nil)
			results <- result{res, err}
		}()
		go func() { pings <- sb.d.iso.call(ctx, &agentRequest{Op: "ping"}) }()
	}
	ran, refused := 0, 0
	for range commands {
		r := <-results
		if !assert.NoError(t, r.err, "a command asked for while the process table was full") {
			continue
		}
		if r.res.Status.Success() {
			ran++
		} else {
			refused++
			assert.Contains(t, string(r.res.Stderr), "resource temporarily unavailable", "status %+v", r.res.Status)
		}
	}
	for range commands {
		assert.NoError(t, <-pings, "a ping while the process table was full")
	}
	require.NoError(t, sb.d.iso.call(ctx, &agentRequest{Op: "ping"}), "the agent died with the process table full:\n%s", sb.d.iso.initErr)
	t.Logf("%d commands ran, %d could not start; the agent has %d threads", ran, refused, agentThreadCount(t, sb))
	assert.GreaterOrEqual(t, ran, limit, "fewer commands ran at once than the limit allows")
	res, err := sandbox.Run(ctx, portable(sb), &sandbox.Cmd{Args: []string{"true"}}, nil)
	require.NoError(t, err)
	assert.True(t, res.Status.Success(), "true after the table emptied: %+v %s", res.Status, res.Stderr)
}
