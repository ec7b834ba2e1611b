package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTestModulesScript runs scripts/test-modules.sh (what make test and
// make test-short run) on a workspace of four small modules: one whose tests
// pass, one with a failing test, one that does not build, and one run
// beside the others whose test fails. Every module must be tested, every
// failing package named at the end, and the script must exit 1.
func TestTestModulesScript(t *testing.T) {
	goTool, err := exec.LookPath("go")
	require.NoError(t, err)
	bash, err := exec.LookPath("bash")
	require.NoError(t, err)
	script, err := os.ReadFile(filepath.Join("..", "..", "scripts", "test-modules.sh"))
	require.NoError(t, err)

	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		p := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(text), 0o755))
	}
	write("scripts/test-modules.sh", string(script))
	write("go.work", "go 1.26.0\n\nuse (\n\t.\n\t./broken\n\t./failing\n\t./slow\n)\n")
	module := func(sub, path, test string) {
		write(filepath.Join(sub, "go.mod"), "module "+path+"\n\ngo 1.26.0\n")
		write(filepath.Join(sub, "x_test.go"), "package x\n\nimport \"testing\"\n\n"+test)
	}
	module(".", "example.com/passing", `func TestOK(t *testing.T) { t.Log("passing ran") }`)
	module("failing", "example.com/failing", `func TestBad(t *testing.T) { t.Error("failing ran") }`)
	module("broken", "example.com/broken", `func TestX(t *testing.T) { undefined() }`)
	module("slow", "example.com/slow", `func TestBeside(t *testing.T) { t.Error("beside ran") }`)

	cmd := exec.Command(bash, filepath.Join(dir, "scripts", "test-modules.sh"), "-count=1", "-v")
	cmd.Dir = t.TempDir() // the script finds the repository from its own path
	cmd.Env = append(os.Environ(), "PERIMETER_TEST_BESIDE=./slow", "GOPROXY=off", "GOFLAGS=", "GOWORK=")
	cmd.Env = append(cmd.Env, "PATH="+filepath.Dir(goTool)+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "the script should fail; it printed:\n%s", out)
	assert.Equal(t, 1, exit.ExitCode(), "%s", out)
	for _, want := range []string{"passing ran", "failing ran", "beside ran", "undefined: undefined"} {
		assert.Contains(t, string(out), want, "a module was not tested")
	}
	require.Contains(t, string(out), "== FAILED:", "no list of failures at the end")
	last := string(out)[strings.LastIndex(string(out), "== FAILED:"):]
	for _, pkg := range []string{"example.com/failing", "example.com/broken", "example.com/slow"} {
		assert.Contains(t, last, pkg, "the list of failures at the end misses %s", pkg)
	}
	assert.NotContains(t, last, "example.com/passing", "a passing package was listed as failed")
	assert.Less(t, strings.Index(string(out), "== go test -count=1 -v ./slow/... (beside"), strings.Index(string(out), "passing ran"),
		"the module run beside the others did not start first")
}
