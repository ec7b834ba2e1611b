package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// cli runs the CLI in-process with a provider root in a temp directory.
func cli(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = dispatch(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func providerURL(t *testing.T) string { return "local://" + t.TempDir() }

func TestRunStreamsOutputAndExitCode(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	code, out, errOut := cli(t, "", "run", "--provider", "local://"+root, "--env", "WHO=perimeter",
		"--", "sh", "-c", `echo "hello $WHO"; echo oops >&2; exit 7`)
	assert.Equal(t, 7, code)
	assert.Equal(t, "hello perimeter\n", out)
	assert.Equal(t, "oops\n", errOut)
	entries, err := os.ReadDir(root)
	require.NoError(t, err)
	assert.Empty(t, entries, "run must terminate its sandbox")
}

func TestRunDirStdinAndNotFound(t *testing.T) {
	t.Parallel()
	code, out, _ := cli(t, "piped in", "run", "--provider", providerURL(t), "-i", "--", "cat")
	assert.Equal(t, 0, code)
	assert.Equal(t, "piped in", out)

	code, _, errOut := cli(t, "", "run", "--provider", providerURL(t), "--", "perimeter-no-such-command")
	assert.Equal(t, 127, code)
	assert.Contains(t, errOut, "command not found")

	// run makes the --dir it is given, as docker run -w does.
	code, out, errOut = cli(t, "", "run", "--provider", providerURL(t), "--dir", "sub/dir", "--", "pwd")
	assert.Equal(t, 0, code, errOut)
	assert.Equal(t, "/workspace/sub/dir\n", out)
}

func TestRunTimeoutAndInterrupt(t *testing.T) {
	t.Parallel()
	code, _, errOut := cli(t, "", "run", "--provider", providerURL(t), "--timeout", "200ms", "--", "sleep", "30")
	assert.Equal(t, 124, code)
	assert.Contains(t, errOut, "timed out")

	// The interrupt arrives once the command has printed, so it lands while
	// the command runs however long Create took.
	root := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &cancelOnWrite{cancel: cancel}
	var errb bytes.Buffer
	code = dispatch(ctx, []string{"run", "--provider", "local://" + root, "--", "sh", "-c", "echo started; exec sleep 30"}, strings.NewReader(""), out, &errb)
	assert.Equal(t, 130, code, errb.String())
	entries, _ := os.ReadDir(root)
	assert.Empty(t, entries, "an interrupted run must still terminate its sandbox")
}

func TestRunBadInput(t *testing.T) {
	t.Parallel()
	code, _, errOut := cli(t, "", "run")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "usage: perimeter run")

	code, _, errOut = cli(t, "", "run", "--env", "novalue", "--", "true")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "want K=V")

	code, _, errOut = cli(t, "", "run", "--provider", "nosuch://x", "--", "true")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, `unknown provider scheme "nosuch"`)
}

func TestUnknownCommandAndHelp(t *testing.T) {
	t.Parallel()
	code, _, errOut := cli(t, "", "frobnicate")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, `unknown command "frobnicate"`)
	code, out, _ := cli(t, "", "help")
	assert.Equal(t, 0, code)
	for _, name := range []string{"run", "conformance", "bench"} {
		assert.Contains(t, out, name)
	}
}

func TestConformanceCommand(t *testing.T) {
	t.Parallel()
	code, out, _ := cli(t, "", "conformance", "--list")
	assert.Equal(t, 0, code)
	assert.Contains(t, out, "exec/stdin")

	code, out, errOut := cli(t, "", "conformance", "--run", "^exec/(env|exit-codes)$", providerURL(t))
	assert.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "exec/env")
	assert.Contains(t, out, "2 passed, 0 failed (MUST)")
	assert.Contains(t, errOut, "pass exec/env", "progress lines when stderr is not a terminal")

	code, out, _ = cli(t, "", "conformance", "--json", "--run", "^errors/unknown-id$", providerURL(t))
	assert.Equal(t, 0, code)
	assert.Contains(t, out, `"id": "errors/unknown-id"`)

	code, _, _ = cli(t, "", "conformance")
	assert.Equal(t, 2, code)
}

func TestBenchCommand(t *testing.T) {
	t.Parallel()
	code, out, errOut := cli(t, "", "bench", "--provider", providerURL(t), "-n", "3")
	assert.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "via os/exec")
	assert.Contains(t, out, "create+terminate")
}

// cancelOnWrite cancels a context at the first write it receives.
type cancelOnWrite struct {
	once   sync.Once
	cancel context.CancelFunc
}

func (w *cancelOnWrite) Write(p []byte) (int, error) {
	w.once.Do(w.cancel)
	return len(p), nil
}
