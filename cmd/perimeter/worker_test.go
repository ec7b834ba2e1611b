package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/toolexec/anthropic/environment/envfake"
)

// waitFake waits until cond holds, woken by each change of the fake's state.
func waitFake(t *testing.T, f *envfake.Server, what string, cond func() bool) {
	t.Helper()
	bound := time.After(5 * time.Minute) // a bound on a hang
	for {
		ch := f.Changed()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-bound:
			t.Fatalf("timed out waiting for %s; problems: %v", what, f.Problems())
		}
	}
}

func TestWorkerCommandAgainstTheFake(t *testing.T) {
	f := envfake.New()
	t.Cleanup(f.Close)
	t.Setenv(environmentKeyVar, f.EnvironmentKey)
	t.Setenv("ANTHROPIC_WORK_SECRET", "")
	f.PutMemory("memstore_cli", "/seen.md", "from the store\n")
	work := f.AddSession(envfake.SessionSpec{ID: "sesn_cli", Terminate: true,
		Stores: []envfake.StoreRef{{StoreID: "memstore_cli", Name: "notes"}},
		Steps: []envfake.Step{
			{Tool: "bash", Input: map[string]any{"command": "echo $SPEC_VAR; cat memory/notes/seen.md"}},
			{Tool: "write", Input: map[string]any{"file_path": "memory/notes/cli.md", "content": "written from the cli session\n"}},
		}})
	spec := filepath.Join(t.TempDir(), "spec.json")
	require.NoError(t, os.WriteFile(spec, []byte(`{"env":{"SPEC_VAR":"from-spec"}}`), 0o600))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuf
	done := make(chan int, 1)
	go func() {
		done <- dispatch(ctx, []string{"worker", "--environment-id", f.EnvironmentID, "--provider", providerURL(t),
			"--base-url", f.URL(), "--spec", spec, "--max-sessions", "2", "--metrics", "127.0.0.1:0"}, nil, &stdout, &stderr)
	}()
	waitFake(t, f, "results", func() bool { return len(f.Results("sesn_cli")) == 2 && f.WorkItem(work).Stopped })
	res := f.Results("sesn_cli")
	assert.Equal(t, "from-spec\nfrom the store\n", res[0].Text)
	assert.False(t, res[1].IsError, res[1].Text)
	waitFake(t, f, "the memory in the store", func() bool {
		m, _ := f.Memory("memstore_cli", "/cli.md")
		return m == "written from the cli session\n"
	})

	m := regexp.MustCompile(`metrics at (http://\S+)`).FindStringSubmatch(stdout.String())
	require.Len(t, m, 2, stdout.String())
	resp, err := http.Get(m[1])
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Contains(t, string(body), "perimeter_worker_tool_calls_total 2\n")
	assert.Contains(t, string(body), "perimeter_worker_sandbox_creates_total 1\n")

	cancel() // SIGTERM
	select {
	case code := <-done:
		assert.Equal(t, 0, code, stderr.String())
	case <-time.After(5 * time.Minute): // a bound on a hang
		t.Fatal("perimeter worker did not stop")
	}
	logs := stderr.String()
	assert.Regexp(t, `msg="tool call".*sandbox_id=\S+.*tool=bash.*duration=`, logs)
	assert.NotContains(t, logs, f.EnvironmentKey)
	assert.NotContains(t, logs, "from the store", "tool output must not be logged")
	assert.Empty(t, f.Problems())
}

func TestWorkerCommandBadInput(t *testing.T) {
	t.Setenv(environmentKeyVar, "")
	code, _, stderr := cli(t, "", "worker", "--environment-id", "env_x")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "no environment key: set $ANTHROPIC_ENVIRONMENT_KEY or pass --key-file")

	code, _, stderr = cli(t, "", "worker")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "--environment-id is required")

	keyFile := filepath.Join(t.TempDir(), "key")
	require.NoError(t, os.WriteFile(keyFile, []byte("k\n"), 0o600))
	spec := filepath.Join(t.TempDir(), "spec.json")
	require.NoError(t, os.WriteFile(spec, []byte(`{"imagee":"x"}`), 0o600))
	code, _, stderr = cli(t, "", "worker", "--environment-id", "env_x", "--key-file", keyFile, "--spec", spec)
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, `unknown field "imagee"`)

	code, _, stderr = cli(t, "", "worker", "--environment-id", "env_x", "--key-file", keyFile, "--max-sessions", "0")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "--max-sessions must be at least 1")
	assert.False(t, strings.Contains(stderr, "panic"))

	// The example deployment's spec is a valid spec.
	_, err := readSpec("../../examples/managed-agents-worker/worker-spec.json")
	assert.NoError(t, err)
}
