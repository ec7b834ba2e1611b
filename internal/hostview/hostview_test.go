package hostview

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func needTools(t testing.TB) {
	t.Helper()
	for _, p := range []string{UnsharePath, NsenterPath, EnvPath} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("hostview needs %s: %v", p, err)
		}
	}
}

// start builds a view with the sandbox's directory at /work and returns
// the holder and the host directories.
func start(t *testing.T, at string) (h *Holder, dir, tmp string) {
	t.Helper()
	needTools(t)
	base := t.TempDir()
	dir, tmp = filepath.Join(base, "dir"), filepath.Join(base, "tmp")
	mnt := filepath.Join(base, "mnt")
	for _, d := range []string{dir, tmp, mnt} {
		require.NoError(t, os.Mkdir(d, 0o755))
	}
	cfg := Config{Name: "hostviewtest", Mount: mnt, Dir: dir, At: at, Tmp: tmp}
	if at == "/" {
		cfg.Tmp = ""
	}
	h, err := Start(cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, h.Close())
		ents, err := os.ReadDir(mnt)
		require.NoError(t, err)
		assert.Empty(t, ents, "the view's mount point stays empty on the host")
	})
	return h, dir, tmp
}

func run(t *testing.T, h *Holder, c Command) (string, int) {
	t.Helper()
	if c.Dir == "" {
		c.Dir = "/"
	}
	if c.Env == nil {
		c.Env = []string{"PATH=/usr/bin:/bin"}
	}
	out, err := h.Command(c).CombinedOutput()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return string(out), code
}

func TestViewShowsTheSandboxDirectoryAndHidesTheHost(t *testing.T) {
	h, dir, tmp := start(t, "/work/space")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "in"), []byte("from host\n"), 0o644))

	out, code := run(t, h, Command{Argv: []string{"sh", "-c", "pwd; cat in; echo made > out; echo t > /tmp/t"}, Dir: "/work/space"})
	require.Equal(t, 0, code, out)
	assert.Equal(t, "/work/space\nfrom host\n", out)
	data, err := os.ReadFile(filepath.Join(dir, "out"))
	require.NoError(t, err)
	assert.Equal(t, "made\n", string(data), "a command's file lands in the sandbox's directory")
	data, err = os.ReadFile(filepath.Join(tmp, "t"))
	require.NoError(t, err)
	assert.Equal(t, "t\n", string(data), "/tmp is the sandbox's")

	out, code = run(t, h, Command{Argv: []string{"sh", "-c", "echo x > /usr/hostview-test"}})
	assert.NotEqual(t, 0, code, "the host's directories are read-only: %s", out)
	_, err = os.Stat("/usr/hostview-test")
	assert.ErrorIs(t, err, os.ErrNotExist)

	hostTmp := filepath.Join(os.TempDir(), "hostview-test-"+strconv.Itoa(os.Getpid()))
	require.NoError(t, os.WriteFile(hostTmp, nil, 0o644))
	defer os.Remove(hostTmp)
	out, code = run(t, h, Command{Argv: []string{"test", "-e", hostTmp}})
	assert.Equal(t, 1, code, "the host's /tmp is out of sight: %s", out)
}

func TestRootAtTheSandboxDirectory(t *testing.T) {
	h, dir, _ := start(t, "/")
	out, code := run(t, h, Command{Argv: []string{"sh", "-c", "mkdir -p /w1 && echo a > /w1/f && echo b > /tmp/g && test -d /usr/bin"}})
	require.Equal(t, 0, code, out)
	for name, want := range map[string]string{"w1/f": "a\n", "tmp/g": "b\n"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err)
		assert.Equal(t, want, string(data))
	}
}

func TestExitCodesUserAndNetwork(t *testing.T) {
	h, dir, _ := start(t, "/box")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "noexec"), []byte("x"), 0o644))
	_, code := run(t, h, Command{Argv: []string{"no-such-program-hostview"}})
	assert.Equal(t, 127, code)
	_, code = run(t, h, Command{Argv: []string{"/box/noexec"}})
	assert.Equal(t, 126, code)
	_, code = run(t, h, Command{Argv: []string{"sh", "-c", "exit 7"}})
	assert.Equal(t, 7, code)

	out, code := run(t, h, Command{Argv: []string{"sh", "-c", "id -u; id -G"}, Cred: &Cred{UID: 4242, GID: 4343}})
	require.Equal(t, 0, code, out)
	if os.Geteuid() == 0 {
		assert.Equal(t, "4242\n4343\n", out)
	}

	out, code = run(t, h, Command{Argv: []string{"cat", "/proc/net/dev"}, NoNetwork: true})
	require.Equal(t, 0, code, out)
	var ifaces []string
	for _, line := range strings.Split(out, "\n") {
		if name, _, ok := strings.Cut(line, ":"); ok {
			ifaces = append(ifaces, strings.TrimSpace(name))
		}
	}
	assert.Equal(t, []string{"lo"}, ifaces, "only loopback without network")
	out, code = run(t, h, Command{Argv: []string{"cat", "/proc/net/dev"}})
	require.Equal(t, 0, code, out)
	host, err := os.ReadFile("/proc/net/dev")
	require.NoError(t, err)
	assert.Equal(t, strings.Count(string(host), ":"), strings.Count(out, ":"), "the host's network otherwise")
}

func TestCloseKillsEveryProcessOfTheView(t *testing.T) {
	h, _, _ := start(t, "/box")
	// A detached process that left the command's group and session.
	cmd := h.Command(Command{Argv: []string{"setsid", "-f", "sleep", "1000"}, Dir: "/", Env: []string{"PATH=/usr/bin:/bin"}})
	require.NoError(t, cmd.Run())
	require.Positive(t, len(h.members()), "the detached sleep runs in the view")
	holder := h.Pid()
	assert.ErrorContains(t, CheckClosed(), strconv.Itoa(holder), "an open view is reported")
	require.NoError(t, h.Close(), "Close finds no process left in the view")
	assert.NoError(t, CheckClosed())
	assert.ErrorIs(t, syscall.Kill(holder, 0), syscall.ESRCH, "the holder is gone")
}

func TestStartRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Name: "x", Mount: "/m", Dir: "/d", At: "rel"},
		{Name: "x", Mount: "/m", Dir: "/d", At: "/a/../b"},
		{Name: "x", Dir: "/d", At: "/a"},
		{Name: "x", Mount: "/m", Dir: "/d", At: "/a", Passwd: "/p"},
	} {
		_, err := Start(cfg)
		assert.Error(t, err, "%+v", cfg)
	}
}

// BenchmarkStartClose measures building a view and ending it.
func BenchmarkStartClose(b *testing.B) {
	needTools(b)
	mnt, dir := b.TempDir(), b.TempDir()
	for i := 0; i < b.N; i++ {
		h, err := Start(Config{Name: "hostviewbench", Mount: mnt, Dir: dir, At: "/box"})
		if err != nil {
			b.Fatal(err)
		}
		h.Close()
	}
}

// BenchmarkCommand measures running true in a view.
func BenchmarkCommand(b *testing.B) {
	needTools(b)
	h, err := Start(Config{Name: "hostviewbench", Mount: b.TempDir(), Dir: b.TempDir(), At: "/box"})
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	for i := 0; i < b.N; i++ {
		if err := h.Command(Command{Argv: []string{"true"}, Dir: "/", Env: []string{"PATH=/usr/bin:/bin"}}).Run(); err != nil {
			b.Fatal(err)
		}
	}
}

func TestDeriveShowsAnotherSandboxInACopyOfTheView(t *testing.T) {
	base, baseDir, _ := start(t, "/box")
	require.NoError(t, os.WriteFile(filepath.Join(baseDir, "f"), []byte("base\n"), 0o644))
	dir, tmp := t.TempDir(), t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "f"), []byte("derived\n"), 0o644))
	d, err := base.Derive(dir, tmp, nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, d.Close()) }()

	out, code := run(t, d, Command{Argv: []string{"sh", "-c", "cat f; echo t > /tmp/t; test -w /usr || echo ro"}, Dir: "/box"})
	require.Equal(t, 0, code, out)
	assert.Equal(t, "derived\nro\n", out)
	data, err := os.ReadFile(filepath.Join(tmp, "t"))
	require.NoError(t, err)
	assert.Equal(t, "t\n", string(data), "the derived view's /tmp is its own")

	out, code = run(t, base, Command{Argv: []string{"sh", "-c", "cat f; test ! -e /tmp/t"}, Dir: "/box"})
	require.Equal(t, 0, code, out)
	assert.Equal(t, "base\n", out, "the base view is unchanged")

	out, code = run(t, d, Command{Argv: []string{"cat", "/proc/net/dev"}, NoNetwork: true})
	require.Equal(t, 0, code, out)
	assert.Equal(t, 3, strings.Count(out, "\n"), "only loopback: %s", out)
}

// BenchmarkDeriveClose measures deriving a sandbox's view from a base view
// and ending it, beside BenchmarkStartClose.
func BenchmarkDeriveClose(b *testing.B) {
	needTools(b)
	base, err := Start(Config{Name: "hostviewbench", Mount: b.TempDir(), Dir: b.TempDir(), At: "/box"})
	if err != nil {
		b.Fatal(err)
	}
	defer base.Close()
	dir, tmp := b.TempDir(), b.TempDir()
	for i := 0; i < b.N; i++ {
		h, err := base.Derive(dir, tmp, nil)
		if err != nil {
			b.Fatal(err)
		}
		h.Close()
	}
}
