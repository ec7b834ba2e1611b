package local

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/conformance"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// newL1 makes a provider that runs without namespaces, as on hosts where
// they are unavailable (inside Docker, under Ubuntu's AppArmor rule).
func newL1(t testing.TB) *sandbox.Provider {
	t.Helper()
	// Sandboxes at L1 reach their workspace by path as their own uid: the
	// directories above the root must be searchable.
	base := t.TempDir()
	require.NoError(t, os.Chmod(base, 0o711))
	require.NoError(t, os.Chmod(filepath.Dir(base), 0o711))
	p, err := New(&Options{Root: filepath.Join(base, "root"), Level: LevelLandlock})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

func TestL1ConfinesCommands(t *testing.T) {
	ctx := context.Background()
	p := newL1(t)
	sb := create(t, p, nil)
	other := create(t, p, nil)
	require.NoError(t, other.WriteFile(ctx, "secret.txt", strings.NewReader("other-secret"), 0o644))
	iso := sb.Isolation()
	assert.Equal(t, LevelLandlock, iso.Level)
	assert.False(t, iso.PIDNS || iso.NetNS || iso.MountNS, "L1 has no namespaces: %+v", iso)
	assert.True(t, iso.Seccomp && iso.NoNewPrivs && iso.LandlockABI > 0, "%+v", iso)
	assert.False(t, sb.Capabilities().Expose)
	_, err := sb.Expose(ctx, 8080, nil)
	assert.ErrorIs(t, err, sandbox.ErrNotSupported)

	require.NoError(t, sb.WriteFile(ctx, "in.txt", strings.NewReader("host"), 0o644))
	st, out, errs := sh(t, sb, "cat in.txt && echo more >> in.txt && echo x > $TMPDIR/t && cat $TMPDIR/t && id -u")
	require.True(t, st.Success(), errs)
	if os.Getuid() == 0 {
		assert.Equal(t, fmt.Sprintf("hostx\n%d\n", iso.UIDBase), out)
	}

	blocked := func(what, script string) {
		t.Helper()
		st, out, errs := sh(t, sb, script)
		if st.Success() {
			t.Errorf("L1: %s got through: `%s` exited 0 with stdout %q stderr %q", what, script, out, errs)
		}
	}
	blocked("reading another sandbox's workspace", "cat "+filepath.Join(other.Workspace(), "secret.txt"))
	blocked("reading /etc/shadow", "test -s /etc/shadow && cat /etc/shadow")
	blocked("listing /root", "ls /root")
	blocked("reading the provider's root", "ls "+filepath.Dir(filepath.Dir(sb.Workspace())))
	blocked("writing to /usr", "touch /usr/perimeter-escape")
	blocked("writing to the host's /tmp", "touch /tmp/perimeter-escape-l1")
	blocked("signalling a host process", fmt.Sprintf("kill -0 %d", os.Getpid()))
	blocked("a nested namespace", "unshare -r true")
	blocked("ptrace", "strace -o /dev/null true")
	blocked("a Unix socket to the host", "python3 -c 'import socket; socket.socket(socket.AF_UNIX).connect(\"/run/systemd/private\")'")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	blocked("TCP to a host listener", fmt.Sprintf("exec bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d'", port))
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer pc.Close()
	sh(t, sb, fmt.Sprintf("bash -c 'echo escape > /dev/udp/127.0.0.1/%d'; true", pc.LocalAddr().(*net.UDPAddr).Port))
	pc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 64)
	if n, _, err := pc.ReadFrom(buf); err == nil {
		t.Errorf("L1: a UDP datagram reached the host: %q", buf[:n])
	}
}

func TestL1AllowlistAndLimits(t *testing.T) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(ln)
	defer srv.Close()
	port := ln.Addr().(*net.TCPAddr).Port

	p := newL1(t)
	sb := create(t, p, &sandbox.Spec{
		Network:   &sandbox.NetworkPolicy{Mode: sandbox.NetworkAllowlist, Allow: []string{"localhost", "127.0.0.1"}},
		Resources: sandbox.Resources{Memory: 128 << 20, PIDs: 64},
	})
	st, out, errs := sh(t, sb, fmt.Sprintf("curl -sS --max-time 10 --noproxy '' http://localhost:%d/", port))
	require.True(t, st.Success(), "allowed domain: %s", errs)
	assert.Equal(t, "ok", out)
	_, out, _ = sh(t, sb, fmt.Sprintf("curl -sS --max-time 10 -o /dev/null -w '%%{http_code}' http://127.0.0.2:%d/", port))
	assert.Equal(t, "403", out, "a destination outside the allowlist got through")
	st, _, _ = sh(t, sb, fmt.Sprintf("curl -sS --max-time 5 --noproxy '*' http://127.0.0.1:%d/", port))
	assert.False(t, st.Success(), "L1: a direct TCP connection, bypassing the proxy, got through")

	res, err := sandbox.Run(context.Background(), portable(sb), &sandbox.Cmd{Args: []string{"python3", "-c", "b = b'x' * (400 << 20)"}, Timeout: time.Minute}, nil)
	require.NoError(t, err)
	assert.False(t, res.Status.Success(), "400 MB under a 128 MiB limit")
	if sb.Isolation().Cgroup != "none" {
		assert.True(t, res.Status.OOMKilled, "%+v", res.Status)
	}
}

func TestL1TerminateKillsEscapedProcesses(t *testing.T) {
	ctx := context.Background()
	p := newL1(t)
	sb, err := p.Create(ctx, nil)
	require.NoError(t, err)
	res, err := sandbox.Run(ctx, portable(sb), &sandbox.Cmd{Args: []string{"sh", "-c", "setsid sh -c 'sleep 300' >/dev/null 2>&1 & (sleep 300 &) >/dev/null 2>&1; echo started"}}, nil)
	require.NoError(t, err)
	require.Equal(t, "started\n", string(res.Stdout))
	var d *Sandbox
	require.True(t, sb.As(&d))
	uid := d.Isolation().UIDBase
	require.NoError(t, sb.Terminate(ctx))
	if os.Getuid() != 0 {
		return
	}
	procs, _ := os.ReadDir("/proc")
	for _, e := range procs {
		var st struct{ uid int }
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "Uid:") {
				fmt.Sscanf(strings.Fields(line)[1], "%d", &st.uid)
			}
		}
		if st.uid == uid {
			t.Errorf("process %s of the sandbox's uid %d outlived Terminate", e.Name(), uid)
		}
	}
}

func TestL1RefusesAnUnreachableRoot(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("the check applies to a root provider, whose sandboxes run as other uids; this test runs as uid", os.Getuid())
	}
	p, err := New(&Options{Root: filepath.Join(t.TempDir(), "root"), Level: LevelLandlock})
	require.NoError(t, err)
	_, err = p.Create(context.Background(), nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not searchable by other users")
}

func TestConformanceL1(t *testing.T) {
	conformance.Run(t, &conformance.Harness{
		Provider:    newL1(t),
		NativeError: func() any { return new(*fs.PathError) },
	}, nil)
}
