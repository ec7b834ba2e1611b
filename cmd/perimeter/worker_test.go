package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
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

// TestMain lets TestWorkerProcessSIGTERM run the CLI as a child process
// (this test binary, re-executed) so that it receives a real SIGTERM, and
// makes this binary a keeper when run --keep starts one (keep.go).
func TestMain(m *testing.M) {
	if os.Getenv("PERIMETER_WORKER_TEST_MAIN") == "1" || (len(os.Args) > 1 && os.Args[1] == keeperArg) {
		main()
		return
	}
	os.Exit(m.Run())
}

// findHostFile finds a file named name under dir on the host (the local
// provider keeps each sandbox's workspace under its root). It polls: the
// file is the only sign that a command in the sandbox has started.
func findHostFile(t *testing.T, dir, name string) string {
	t.Helper()
	bound := time.Now().Add(5 * time.Minute) // a bound on a hang
	for time.Now().Before(bound) {
		var found string
		_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.Name() == name && found == "" {
				found = p
			}
			return nil
		})
		if found != "" {
			return found
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %s under %s", name, dir)
	return ""
}

func TestWorkerProcessSIGTERM(t *testing.T) {
	f := envfake.New()
	t.Cleanup(f.Close)
	work := f.AddSession(envfake.SessionSpec{ID: "sesn_sigterm", Terminate: true, Steps: []envfake.Step{
		{Tool: "bash", Input: map[string]any{"command": "touch started; while [ ! -e release ]; do sleep 0.05; done; echo finished"}},
		{Tool: "bash", Input: map[string]any{"command": "echo never"}},
	}})
	root := t.TempDir()
	var stderr syncBuf
	cmd := exec.Command(os.Args[0], "worker", "--environment-id", f.EnvironmentID, "--provider", "local://"+root, "--base-url", f.URL())
	cmd.Env = append(os.Environ(), "PERIMETER_WORKER_TEST_MAIN=1", environmentKeyVar+"="+f.EnvironmentKey, "ANTHROPIC_WORK_SECRET=")
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	started := findHostFile(t, root, "started")
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	// The call is still running: let it finish now.
	require.NoError(t, os.WriteFile(filepath.Join(filepath.Dir(started), "release"), nil, 0o644))
	select {
	case err := <-exited:
		require.NoError(t, err, stderr.String())
	case <-time.After(5 * time.Minute): // a bound on a hang
		t.Fatal("perimeter worker did not exit after SIGTERM")
	}
	res := f.Results("sesn_sigterm")
	require.Len(t, res, 1, "the running call finishes, no new one starts: %s", stderr.String())
	assert.Equal(t, "finished\n", res[0].Text)
	assert.False(t, res[0].IsError)
	w := f.WorkItem(work)
	assert.True(t, w.Stopped && w.Forced, "the claimed item is released: %+v", w)
	entries, _ := os.ReadDir(root)
	assert.Empty(t, entries, "sandboxes left behind")
	assert.Contains(t, stderr.String(), "shutting down")
}
