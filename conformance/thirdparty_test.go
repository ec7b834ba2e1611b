package conformance_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/conformance"
)

// TestThirdPartyModule runs the suite against the example provider in
// testdata/thirdparty, a module of its own, both ways a third party does:
// its go test (conformance.Run) and its command (conformance.Main), whose
// table, JSON and exit codes are those of perimeter conformance.
func TestThirdPartyModule(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a separate module with the go command; not in -short")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("the go command is not on PATH (%v), so the example module cannot be built", err)
	}
	dir, err := filepath.Abs(filepath.Join("testdata", "thirdparty"))
	require.NoError(t, err)
	run := func(args ...string) (int, string, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, goBin, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=")
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		code := 0
		if err != nil {
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee, "go %v: %s", args, errOut.String())
			code = ee.ExitCode()
		}
		return code, out.String(), errOut.String()
	}

	t.Run("go test", func(t *testing.T) {
		code, out, errOut := run("test", "-count=1", "-v", "-run", "^TestConformance$", ".")
		assert.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
		assert.Contains(t, out, "--- PASS: TestConformance/exec/stdin")
		assert.Contains(t, out, "--- SKIP: TestConformance/errors/native", "n/a checks are skipped with their reason")
	})

	t.Run("command", func(t *testing.T) {
		bin := filepath.Join(t.TempDir(), "thirdparty-conformance")
		code, _, errOut := run("build", "-o", bin, "./cmd/thirdparty-conformance")
		require.Equal(t, 0, code, errOut)
		cmd := func(args ...string) (int, string, string) {
			c := exec.Command(bin, args...)
			var out, errOut bytes.Buffer
			c.Stdout, c.Stderr = &out, &errOut
			err := c.Run()
			if err != nil {
				var ee *exec.ExitError
				require.ErrorAs(t, err, &ee, errOut.String())
				return ee.ExitCode(), out.String(), errOut.String()
			}
			return 0, out.String(), errOut.String()
		}
		code, out, errOut := cmd("--run", "^(exec/exit-codes|files/ops|caps/pause)$")
		assert.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
		assert.Contains(t, out, "2 passed, 0 failed (MUST), 0 failed (SHOULD), 1 not applicable, 3 checks")
		assert.Regexp(t, `caps/pause +MUST +n/a +\S+ +Pause is not claimed`, out)
		assert.Contains(t, errOut, "pass exec/exit-codes", "progress lines when stderr is not a terminal")

		code, out, errOut = cmd("--json", "--run", "^errors/native$")
		assert.Equal(t, 0, code, errOut)
		var rep conformance.Report
		require.NoError(t, json.Unmarshal([]byte(out), &rep), out)
		require.Len(t, rep.Results, 1)
		assert.Equal(t, conformance.NotApplicable, rep.Results[0].Outcome)
		assert.Equal(t, conformance.Summary{NotApplicable: 1, Total: 1}, rep.Summary)

		code, _, errOut = cmd("--network", "sideways")
		assert.Equal(t, 2, code, "a bad flag value is a usage error")
		assert.Contains(t, errOut, "want none or open")

		code, out, _ = cmd("--list")
		assert.Equal(t, 0, code)
		assert.Contains(t, out, "lifecycle/terminate-stops-processes")
	})
}
