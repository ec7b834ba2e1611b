package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBenchmarkPrograms builds and runs the programs BenchmarkRunTrueVsBwrap
// times beside the CLI (CI runs no benchmark), so that the floors it reports
// are what they claim: testdata/gopair starts its command in new namespaces
// (under an init of its own, or as PID 1 with -direct) and exits as the
// command does; testdata/localonly runs its command in a local sandbox.
func TestBenchmarkPrograms(t *testing.T) {
	t.Parallel()
	goTool, err := exec.LookPath("go")
	require.NoError(t, err, "the go command builds the benchmark's programs")
	build := func(t *testing.T, pkg string) string {
		out := filepath.Join(t.TempDir(), filepath.Base(pkg))
		cmd := exec.Command(goTool, "build", "-o", out, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		msg, err := cmd.CombinedOutput()
		require.NoError(t, err, "go build %s: %s", pkg, msg)
		return out
	}
	// exitCode runs name with args (and env's variables added) and returns
	// its standard output and exit code.
	exitCode := func(t *testing.T, env []string, name string, args ...string) (string, int) {
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.Output()
		var exit *exec.ExitError
		if err != nil {
			require.ErrorAs(t, err, &exit, "%s %v", name, args)
			return string(out), exit.ExitCode()
		}
		return string(out), 0
	}

	t.Run("gopair", func(t *testing.T) {
		t.Parallel()
		bin := build(t, "./testdata/gopair")
		hostNet, err := os.Readlink("/proc/self/ns/net")
		require.NoError(t, err)
		hostUTS, err := os.Readlink("/proc/self/ns/uts")
		require.NoError(t, err)

		for _, mode := range [][]string{nil, {"-direct"}} {
			out, code := exitCode(t, nil, bin, append(mode, "sh", "-c", "echo $$; readlink /proc/self/ns/net /proc/self/ns/uts")...)
			require.Equal(t, 0, code, out)
			f := strings.Fields(out)
			require.Len(t, f, 3, out)
			if mode != nil {
				require.Equal(t, "1", f[0], "with -direct the command is PID 1")
			} else {
				require.NotEqual(t, "1", f[0], "without -direct the init is PID 1, not the command")
			}
			require.NotEqual(t, hostNet, f[1], "the command runs in a network namespace of its own")
			require.NotEqual(t, hostUTS, f[2], "the command runs in a UTS namespace of its own")

			_, code = exitCode(t, nil, bin, append(mode, "sh", "-c", "exit 3")...)
			require.Equal(t, 3, code, "gopair %v exits as its command did", mode)
			_, code = exitCode(t, nil, bin, append(mode, "true")...)
			require.Equal(t, 0, code)
		}
	})

	t.Run("localonly", func(t *testing.T) {
		t.Parallel()
		bin := build(t, "./testdata/localonly")
		env := []string{"TMPDIR=" + t.TempDir()}
		out, code := exitCode(t, env, bin, "sh", "-c", "echo in-sandbox; cat /proc/self/status | grep -c '^Seccomp:[[:space:]]*2'")
		require.Equal(t, 0, code, out)
		require.Equal(t, "in-sandbox\n1\n", out, "the command ran under the local provider's seccomp filter")
		_, code = exitCode(t, env, bin, "false")
		require.Equal(t, 1, code, "localonly exits 1 when its command fails")
	})
}
