package local

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// snapshot is what a sandbox could leave behind on the host.
type snapshot struct {
	fds, goroutines, mounts int
	children                []string
}

func takeSnapshot(t *testing.T) snapshot {
	t.Helper()
	var s snapshot
	fds, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	s.fds = len(fds)
	s.goroutines = runtime.NumGoroutine()
	b, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	s.mounts = strings.Count(string(b), "\n")
	// Processes whose parent is this test process.
	me := strconv.Itoa(os.Getpid())
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		stat, err := os.ReadFile(filepath.Join("/proc", p.Name(), "stat"))
		if err != nil {
			continue
		}
		if i := strings.LastIndexByte(string(stat), ')'); i > 0 {
			f := strings.Fields(string(stat[i+1:]))
			if len(f) > 1 && f[1] == me {
				s.children = append(s.children, p.Name()+" "+string(stat[:i+1]))
			}
		}
	}
	return s
}

// sandboxCgroups lists the cgroups of sandbox id in every hierarchy (other
// packages' tests may run sandboxes at the same time: only ours count).
func sandboxCgroups(id string) []string {
	var out []string
	for _, pattern := range []string{
		filepath.Join(cgroupRoot, "*", "*", "*", cgroupParent, id),
		filepath.Join(cgroupRoot, "*", "*", cgroupParent, id),
		filepath.Join(cgroupRoot, "*", cgroupParent, id),
		filepath.Join(cgroupRoot, cgroupParent, id),
	} {
		m, _ := filepath.Glob(pattern)
		out = append(out, m...)
	}
	return out
}

// TestNothingLeaks runs create/exec/terminate cycles and checks that no
// process, mount, cgroup, descriptor, goroutine or directory is left. It
// runs 500 cycles, or 50 with -short.
func TestNothingLeaks(t *testing.T) {
	cycles := 500
	if testing.Short() {
		cycles = 50
	}
	ctx := context.Background()
	root := t.TempDir()
	p, err := New(&Options{Root: root, RequireLevel: LevelNamespaces})
	require.NoError(t, err)
	defer p.Close()
	var ids []string
	cycle := func(i int) {
		spec := &sandbox.Spec{Resources: sandbox.Resources{Memory: 256 << 20, PIDs: 128}}
		if i%3 == 1 {
			spec.Network = &sandbox.NetworkPolicy{Mode: sandbox.NetworkAllowlist, Allow: []string{"example.com"}}
		}
		sb, err := p.Create(ctx, spec)
		require.NoError(t, err, "cycle %d", i)
		ids = append(ids, sb.ID())
		// A background process that outlives its command, and one that
		// leaves its process group.
		res, err := sandbox.Run(ctx, portable(sb), &sandbox.Cmd{Args: []string{"sh", "-c", "sleep 60 >/dev/null 2>&1 & setsid sleep 60 >/dev/null 2>&1 & echo ok"}}, nil)
		require.NoError(t, err)
		require.Equal(t, "ok\n", string(res.Stdout), "cycle %d", i)
		require.NoError(t, sb.Terminate(ctx), "cycle %d", i)
	}
	cycle(-1) // warm up lazily made resources (the probe, cgroup parents)
	before := takeSnapshot(t)
	start := time.Now()
	for i := range cycles {
		cycle(i)
	}
	t.Logf("%d cycles in %v (%v each)", cycles, time.Since(start).Round(time.Millisecond), (time.Since(start) / time.Duration(cycles)).Round(time.Microsecond))
	var after snapshot
	deadline := time.Now().Add(5 * time.Second)
	for {
		after = takeSnapshot(t)
		if after.goroutines <= before.goroutines && after.fds <= before.fds || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.LessOrEqual(t, after.fds, before.fds, "file descriptors leaked")
	require.LessOrEqual(t, after.goroutines, before.goroutines, "goroutines leaked")
	require.Equal(t, before.mounts, after.mounts, "host mounts leaked")
	mi, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	require.NotContains(t, string(mi), root, "a mount of a sandbox's directory is left on the host")
	require.NotContains(t, string(mi), "perimeter-local", "a sandbox mount is left on the host")
	var left []string
	for _, c := range after.children {
		if !slices.Contains(before.children, c) {
			left = append(left, c)
		}
	}
	require.Empty(t, left, "processes left behind")
	var cgroups []string
	for _, id := range ids {
		cgroups = append(cgroups, sandboxCgroups(id)...)
	}
	require.Empty(t, cgroups, "cgroups left behind")
	entries, err := os.ReadDir(root)
	require.NoError(t, err)
	require.Empty(t, entries, "sandbox directories left behind")
}

func TestSweepStaleRemovesOnlyOldSandboxCgroups(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"sb-old", "sb-new", "other"} {
		require.NoError(t, os.Mkdir(filepath.Join(dir, n), 0o755))
	}
	old := time.Now().Add(-time.Hour)
	require.NoError(t, os.Chtimes(filepath.Join(dir, "sb-old"), old, old))
	require.NoError(t, os.Chtimes(filepath.Join(dir, "other"), old, old))
	sweepStale(dir)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	require.Equal(t, []string{"other", "sb-new"}, names)
}

// TestListSweepsSandboxesOfADeadProcess simulates a host that died without
// terminating its sandbox: another provider on the same root must not list
// it, and removes what it left.
func TestListSweepsSandboxesOfADeadProcess(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	p1, err := New(&Options{Root: root, RequireLevel: LevelNamespaces})
	require.NoError(t, err)
	sb := create(t, p1, nil)
	p2, err := New(&Options{Root: root, RequireLevel: LevelNamespaces})
	require.NoError(t, err)
	n := 0
	for _, err := range p2.List(ctx, nil) {
		require.NoError(t, err)
		n++
	}
	require.Equal(t, 1, n, "a live sandbox of another provider is listed")
	// Its init dies, as it would with its creating process.
	sb.d.iso.init.Process.Kill()
	<-sb.d.iso.initDone
	for info, err := range p2.List(ctx, nil) {
		require.NoError(t, err)
		t.Errorf("sandbox %s of a dead init is still listed", info.ID)
	}
	_, err = os.Stat(filepath.Join(root, sb.ID()))
	require.True(t, os.IsNotExist(err), "the dead sandbox's directory was left")
}
