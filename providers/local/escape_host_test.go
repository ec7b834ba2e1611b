package local

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// Regression tests for the host boundary: descriptors, /proc, the files
// API, limits and cleanup. Each failure says what got through.

// eachLevel runs fn against a provider at every level this host reaches:
// L3 (the default), L2, L1 and L0.
func eachLevel(t *testing.T, fn func(t *testing.T, p *Provider)) {
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
	t.Run("L0", func(t *testing.T) {
		p, err := New(&Options{Root: t.TempDir(), Unisolated: true})
		require.NoError(t, err)
		t.Cleanup(func() { p.Close() })
		fn(t, p)
	})
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
	eachLevel(t, func(t *testing.T, p *Provider) {
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
		if sb.iso != nil {
			pid := sb.iso.init.Process.Pid
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
