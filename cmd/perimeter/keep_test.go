package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// kept is a sandbox kept by run --keep on an isolated local provider.
type kept struct {
	id     string
	keeper int // its keeper's pid
	pidfd  int // the keeper's, to wait for its exit
	// From its metadata: its init and cgroups, to check they are gone.
	InitPID   int      `json:"init_pid"`
	InitStart uint64   `json:"init_start"`
	Cgroups   []string `json:"cgroups"`
}

var keptLine = regexp.MustCompile(`perimeter: sandbox (sb-[0-9a-f]{16}) kept \(held by process (\d+) until it ends\)`)

// runKept runs "perimeter run --provider url --keep ARGS..." and returns the
// kept sandbox; args holds run's other flags and the command.
func runKept(t *testing.T, url string, args ...string) *kept {
	t.Helper()
	code, _, errOut := cli(t, "", append([]string{"run", "--provider", url, "--keep"}, args...)...)
	require.Equal(t, 0, code, errOut)
	m := keptLine.FindStringSubmatch(errOut)
	require.NotNil(t, m, errOut)
	k := &kept{id: m[1]}
	k.keeper, _ = strconv.Atoi(m[2])
	fd, err := unix.PidfdOpen(k.keeper, 0)
	require.NoError(t, err, "the keeper has exited already")
	k.pidfd = fd
	t.Cleanup(func() {
		if !k.exited() {
			unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		}
		unix.Close(fd)
	})
	root := strings.TrimPrefix(strings.SplitN(url, "?", 2)[0], "local://")
	b, err := os.ReadFile(filepath.Join(root, k.id, "sandbox.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, k))
	require.NotZero(t, k.InitPID)
	return k
}

// exited reports whether the keeper has exited.
func (k *kept) exited() bool {
	n, err := unix.Poll([]unix.PollFd{{Fd: int32(k.pidfd), Events: unix.POLLIN}}, 0)
	return err == nil && n > 0
}

// waitExit waits for the keeper to exit; the bound is against a hang.
func (k *kept) waitExit(t *testing.T, bound time.Duration) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		// The runtime's preemption signals interrupt poll: go on with
		// what is left of the bound.
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(k.pidfd), Events: unix.POLLIN}}, int(max(time.Until(deadline), 0).Milliseconds()))
		if err == unix.EINTR {
			continue
		}
		require.NoError(t, err)
		require.Equal(t, 1, n, "the keeper of %s still runs after %v", k.id, bound)
		return
	}
}

// requireGone waits for the keeper to exit and checks that nothing of the
// sandbox is left: its directory under root, its init (and so every process
// of its pid namespace), its cgroups, mounts of its directory. Its uid
// range's lock went with the keeper, which held it.
func (k *kept) requireGone(t *testing.T, root string) {
	t.Helper()
	k.waitExit(t, 2*time.Minute)
	assert.NoDirExists(t, filepath.Join(root, k.id), "the sandbox's directory is left")
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(k.InitPID) + "/stat"); err == nil {
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		assert.False(t, len(f) > 19 && f[19] == strconv.FormatUint(k.InitStart, 10) && f[0] != "Z", "the sandbox's init still runs")
	}
	for _, d := range k.Cgroups {
		assert.NoDirExists(t, d, "a cgroup of the sandbox is left")
	}
	var cgroups []string
	for _, pattern := range []string{"/sys/fs/cgroup/*/*/*/perimeter/", "/sys/fs/cgroup/*/*/perimeter/", "/sys/fs/cgroup/*/perimeter/", "/sys/fs/cgroup/perimeter/"} {
		m, _ := filepath.Glob(pattern + k.id)
		cgroups = append(cgroups, m...)
	}
	assert.Empty(t, cgroups, "cgroups of the sandbox are left")
	mi, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	assert.NotContains(t, string(mi), k.id, "a mount of the sandbox is left")
}

// TestKeptSandboxEndsWithItsTTL: a kept sandbox with --ttl ends by itself,
// and its keeper with it.
func TestKeptSandboxEndsWithItsTTL(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	k := runKept(t, "local://"+root, "--ttl", "5s", "--", "true")
	code, out, errOut := cli(t, "", "ls", "--provider", "local://"+root)
	assert.Equal(t, 0, code, errOut)
	assert.Contains(t, out, k.id)
	k.requireGone(t, root)
	code, out, _ = cli(t, "", "ls", "--provider", "local://"+root)
	assert.Equal(t, 0, code)
	assert.NotContains(t, out, k.id)

	code, _, errOut = cli(t, "", "run", "--ttl", "-1s", "--", "true")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "--ttl -1s: must not be negative")
}

// TestKeeperErrorsReachTheUser: when the keeper cannot create the sandbox,
// the person sees the provider's error, as without --keep, and no keeper
// or sandbox is left.
func TestKeeperErrorsReachTheUser(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	url := "local://" + root
	code, _, want := cli(t, "", "run", "--provider", url, "--memory", "1K", "--", "true")
	require.Equal(t, 1, code)
	require.Contains(t, want, "--memory 1024 is below")
	code, _, errOut := cli(t, "", "run", "--provider", url, "--keep", "--memory", "1K", "--", "true")
	assert.Equal(t, 1, code)
	assert.Equal(t, want, errOut)
	entries, err := os.ReadDir(root)
	require.NoError(t, err)
	assert.Empty(t, entries)
}

// TestToolKeepsAnIsolatedSandbox: tool --keep keeps its sandbox the same
// way, and a command run in it later sees what the tool calls left.
func TestToolKeepsAnIsolatedSandbox(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	url := "local://" + root
	code, out, errOut := cli(t, `{"id":"t1","name":"bash","input":{"command":"echo from-tool > t.txt"}}`+"\n", "tool", "--provider", url, "--keep")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, `"tool_use_id":"t1"`)
	m := keptLine.FindStringSubmatch(errOut)
	require.NotNil(t, m, errOut)
	code, out, errOut = cli(t, "", "exec", "--provider", url, m[1], "--", "cat", "t.txt")
	assert.Equal(t, 0, code, errOut)
	assert.Equal(t, "from-tool\n", out)
	code, _, errOut = cli(t, "", "rm", "--provider", url, m[1])
	assert.Equal(t, 0, code, errOut)
	entries, err := os.ReadDir(root)
	require.NoError(t, err)
	assert.Empty(t, entries)
}

// TestKeeperStopsOnSIGTERM: a keeper asked to stop (SIGTERM, as at a
// system's shutdown) terminates its sandbox and exits, leaving nothing.
func TestKeeperStopsOnSIGTERM(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	k := runKept(t, "local://"+root, "--", "true")
	require.NoError(t, unix.PidfdSendSignal(k.pidfd, unix.SIGTERM, nil, 0))
	k.requireGone(t, root)
	entries, err := os.ReadDir(root)
	require.NoError(t, err)
	assert.Empty(t, entries)
}
