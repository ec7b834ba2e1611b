package environment_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	sdk "github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/anthropics/anthropic-sdk-go/v2/tools/agenttoolset"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/providers/local"
	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
	"github.com/perimeter-sdk/perimeter/toolexec/anthropic/environment"
	"github.com/perimeter-sdk/perimeter/toolexec/anthropic/environment/envfake"
)

// rig is a fake API, a local provider and a worker serving the fake.
type rig struct {
	t       *testing.T
	fake    *envfake.Server
	p       *sandbox.Provider
	root    string
	metrics *environment.Metrics
	cancel  context.CancelFunc
	done    chan error
	logs    *syncBuffer
}

type syncBuffer struct {
	mu chanMutex
	b  bytes.Buffer
}

type chanMutex chan struct{}

func (m chanMutex) lock()   { m <- struct{}{} }
func (m chanMutex) unlock() { <-m }

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.lock()
	defer s.mu.unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.lock()
	defer s.mu.unlock()
	return s.b.String()
}

func newRig(t *testing.T, provider *sandbox.Provider, mod func(*environment.WorkerOptions)) *rig {
	t.Helper()
	r := &rig{t: t, fake: envfake.New(), root: t.TempDir(), metrics: &environment.Metrics{}, logs: &syncBuffer{mu: make(chanMutex, 1)}}
	t.Cleanup(r.fake.Close)
	if provider == nil {
		p, err := local.New(&local.Options{Root: r.root})
		require.NoError(t, err)
		provider = p
	}
	r.p = provider
	t.Cleanup(func() { _ = r.p.Close() })
	idle := 50 * time.Millisecond
	opts := environment.WorkerOptions{
		EnvironmentID:  r.fake.EnvironmentID,
		EnvironmentKey: r.fake.EnvironmentKey,
		WorkerID:       "test-worker",
		Workdir:        t.TempDir(),
		MaxIdle:        &idle,
		Logger:         slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Sandboxes:      environment.Options{Provider: r.p, Metrics: r.metrics},
	}
	if mod != nil {
		mod(&opts)
	}
	w, err := environment.NewWorker(client(r.fake), opts)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.done = make(chan error, 1)
	go func() { r.done <- w.Run(ctx) }()
	t.Cleanup(func() {
		r.stop()
		if t.Failed() {
			t.Logf("worker log:\n%s", r.logs.String())
		}
	})
	return r
}

func client(f *envfake.Server) sdk.Client {
	return sdk.NewClient(option.WithBaseURL(f.URL()), option.WithAPIKey("must-not-be-sent"), option.WithMaxRetries(0))
}

// stop shuts the worker down as SIGTERM does and waits for it.
func (r *rig) stop() error {
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok {
			close(r.done)
		}
		return err
	case <-time.After(5 * time.Minute): // a bound on a hang, not a timing assertion
		r.t.Fatal("the worker did not stop")
		return nil
	}
}

// waitFor waits until cond holds, woken by each change of the fake's state.
func (r *rig) waitFor(what string, cond func() bool) {
	r.t.Helper()
	bound := time.After(5 * time.Minute) // a bound on a hang
	for {
		ch := r.fake.Changed()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-bound:
			r.t.Fatalf("timed out waiting for %s; problems: %v", what, r.fake.Problems())
		}
	}
}

// waitResults waits until the session has n results and returns them.
func (r *rig) waitResults(session string, n int) []envfake.Result {
	r.t.Helper()
	r.waitFor(session+" results", func() bool { return len(r.fake.Results(session)) >= n })
	return r.fake.Results(session)
}

// waitStopped waits until a work item is stopped.
func (r *rig) waitStopped(work string) envfake.Work {
	r.t.Helper()
	r.waitFor("work "+work+" stopped", func() bool { return r.fake.WorkItem(work).Stopped })
	return r.fake.WorkItem(work)
}

// sandboxWith waits until a sandbox of the provider has file name and
// returns it. The sandbox's own file is the only sign that a command in it
// has started, so this polls (with a bound on a hang).
func (r *rig) sandboxWith(name string) *sandbox.Sandbox {
	r.t.Helper()
	ctx := context.Background()
	bound := time.Now().Add(5 * time.Minute)
	for time.Now().Before(bound) {
		for info, err := range r.p.List(ctx, nil) {
			if err != nil {
				continue
			}
			sb, err := r.p.Get(ctx, info.ID)
			if err != nil {
				continue
			}
			if _, err := sb.Stat(ctx, name); err == nil {
				return sb
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.t.Fatalf("no sandbox has %s", name)
	return nil
}

func (r *rig) assertNoSandboxes() {
	r.t.Helper()
	n := 0
	for _, err := range r.p.List(context.Background(), nil) {
		if err == nil {
			n++
		}
	}
	assert.Zero(r.t, n, "sandboxes left running")
}

func bash(cmd string) envfake.Step {
	return envfake.Step{Tool: "bash", Input: map[string]any{"command": cmd}}
}

func TestBashStateAndFilesThroughTheSDKWorker(t *testing.T) {
	r := newRig(t, nil, nil)
	work := r.fake.AddSession(envfake.SessionSpec{ID: "sesn_files", Terminate: true, Steps: []envfake.Step{
		bash("cd sub 2>/dev/null || { mkdir sub && cd sub; }; export GREETING=hello; pwd"),
		bash("pwd; echo $GREETING"),
		{Tool: "write", Input: map[string]any{"file_path": "notes/a.txt", "content": "written by write\n"}},
		{Tool: "read", Input: map[string]any{"file_path": "notes/a.txt"}},
		{Tool: "edit", Input: map[string]any{"file_path": "notes/a.txt", "old_string": "write", "new_string": "edit"}},
		{Tool: "glob", Input: map[string]any{"pattern": "**/*.txt"}},
		{Tool: "grep", Input: map[string]any{"pattern": "edit"}},
		bash("cat ../notes/a.txt"),
		{Tool: "read", Input: map[string]any{"file_path": "/etc/shadow"}},
	}})
	res := r.waitResults("sesn_files", 9)
	r.waitStopped(work)
	for i, x := range res[:8] {
		assert.False(t, x.IsError, "step %d: %s", i, x.Text)
	}
	wd := strings.TrimSuffix(strings.TrimSpace(res[0].Text), "/sub")
	assert.True(t, strings.HasPrefix(wd, "/"), "pwd = %q", res[0].Text)
	assert.Equal(t, wd+"/sub\nhello\n", res[1].Text, "cwd and variables persist across bash calls")
	assert.Contains(t, res[3].Text, "written by write")
	assert.Contains(t, res[5].Text, "notes/a.txt")
	assert.Contains(t, res[6].Text, "a.txt")
	assert.Equal(t, "written by edit\n", res[7].Text, "bash sees what the file tools wrote")
	assert.True(t, res[8].IsError, "a file outside the workdir is refused: %s", res[8].Text)
	assert.True(t, r.fake.WorkItem(work).Forced)
	require.NoError(t, r.stop())
	r.assertNoSandboxes()
	assert.Empty(t, r.fake.Problems())
	assert.EqualValues(t, 9, r.metrics.ToolCalls.Load())
	assert.EqualValues(t, 1, r.metrics.SandboxCreates.Load())
	assert.EqualValues(t, 0, r.metrics.SessionsActive.Load())
	logs := r.logs.String()
	assert.Contains(t, logs, "tool call")
	assert.NotContains(t, logs, "written by", "tool output must not be logged")
	assert.NotContains(t, logs, r.fake.EnvironmentKey, "the key must not be logged")
}

func TestMemoryWrittenInTheSandboxReachesTheStore(t *testing.T) {
	r := newRig(t, nil, nil)
	r.fake.PutMemory("memstore_1", "/notes.md", "known fact\n")
	r.fake.PutMemory("memstore_ro", "/ref.md", "reference\n")
	work := r.fake.AddSession(envfake.SessionSpec{ID: "sesn_mem", Terminate: true,
		Stores: []envfake.StoreRef{{StoreID: "memstore_1", Name: "notes"}, {StoreID: "memstore_ro", Name: "ref", ReadOnly: true}},
		Steps: []envfake.Step{
			bash("cat memory/notes/notes.md"),
			bash("echo learned in bash > memory/notes/bash.md"),
			{Tool: "write", Input: map[string]any{"file_path": "memory/notes/sub/write.md", "content": "learned in write\n"}},
			{Tool: "edit", Input: map[string]any{"file_path": "memory/notes/notes.md", "old_string": "known", "new_string": "edited"}},
			{Tool: "read", Input: map[string]any{"file_path": "memory/ref/ref.md"}},
			{Tool: "write", Input: map[string]any{"file_path": "memory/ref/ref.md", "content": "changed\n"}},
		}})
	res := r.waitResults("sesn_mem", 6)
	assert.Contains(t, res[4].Text, "reference")
	assert.True(t, res[5].IsError)
	assert.Equal(t, "write: memory/ref/ref.md is in a read-only memory store", res[5].Text)
	for i, x := range res[:5] {
		assert.False(t, x.IsError, "step %d: %s", i, x.Text)
	}
	assert.Equal(t, "known fact\n", res[0].Text, "the store's memory is in the sandbox before the first call")
	r.waitStopped(work)
	r.waitFor("memories in the store", func() bool {
		a, _ := r.fake.Memory("memstore_1", "/bash.md")
		b, _ := r.fake.Memory("memstore_1", "/sub/write.md")
		c, _ := r.fake.Memory("memstore_1", "/notes.md")
		return a == "learned in bash\n" && b == "learned in write\n" && c == "edited fact\n"
	})
	ref, _ := r.fake.Memory("memstore_ro", "/ref.md")
	assert.Equal(t, "reference\n", ref)
	require.NoError(t, r.stop())
	r.assertNoSandboxes()
	assert.Empty(t, r.fake.Problems())
}

func TestTwoSessionsAtOnceAreIsolated(t *testing.T) {
	r := newRig(t, nil, func(o *environment.WorkerOptions) { o.MaxSessions = 2 })
	workA := r.fake.AddSession(envfake.SessionSpec{ID: "sesn_a", Terminate: true, Steps: []envfake.Step{
		bash("echo secret-a > a.txt; touch a-started; while [ ! -e release ]; do sleep 0.05; done; ls"),
	}})
	workB := r.fake.AddSession(envfake.SessionSpec{ID: "sesn_b", Terminate: true, Steps: []envfake.Step{
		bash("echo b > b.txt; ls; cat a.txt"),
	}})
	sbA := r.sandboxWith("a-started")
	resB := r.waitResults("sesn_b", 1)
	assert.True(t, resB[0].IsError)
	assert.Contains(t, resB[0].Text, "b.txt")
	assert.NotContains(t, resB[0].Text, "secret-a", "session B saw session A's file")
	assert.NotContains(t, resB[0].Text, "a-started")
	// A is still running (B finished while A waited): two at once.
	assert.Empty(t, r.fake.Results("sesn_a"))
	require.NoError(t, sbA.WriteFile(context.Background(), "release", strings.NewReader(""), 0o644))
	resA := r.waitResults("sesn_a", 1)
	assert.False(t, resA[0].IsError, resA[0].Text)
	assert.NotContains(t, resA[0].Text, "b.txt", "session A saw session B's file")
	r.waitStopped(workA)
	r.waitStopped(workB)
	require.NoError(t, r.stop())
	r.assertNoSandboxes()
}

func TestSandboxKilledMidCall(t *testing.T) {
	r := newRig(t, nil, nil)
	work := r.fake.AddSession(envfake.SessionSpec{ID: "sesn_kill", Terminate: true, Steps: []envfake.Step{
		bash("touch started; sleep 600"),
		bash("echo after"),
		{Tool: "read", Input: map[string]any{"file_path": "started"}},
	}})
	sb := r.sandboxWith("started")
	require.NoError(t, sb.Terminate(context.Background()))
	res := r.waitResults("sesn_kill", 3)
	for i, x := range res {
		assert.True(t, x.IsError, "step %d after the kill: %s", i, x.Text)
	}
	assert.Contains(t, res[1].Text, sb.ID(), "the error names the sandbox")
	assert.Contains(t, res[1].Text, "terminated")
	assert.Contains(t, res[2].Text, "the session's sandbox is gone")
	r.waitStopped(work)
	// The worker goes on.
	r.fake.AddSession(envfake.SessionSpec{ID: "sesn_next", Terminate: true, Steps: []envfake.Step{bash("echo next")}})
	next := r.waitResults("sesn_next", 1)
	assert.Equal(t, "next\n", next[0].Text)
	require.NoError(t, r.stop())
	r.assertNoSandboxes()
}

func TestLostLeaseReleasesTheItem(t *testing.T) {
	r := newRig(t, nil, nil)
	r.fake.SetLeaseTTL(2) // the SDK heartbeats every second
	work := r.fake.AddSession(envfake.SessionSpec{ID: "sesn_lease", Terminate: true, Steps: []envfake.Step{
		bash("echo one"),
		bash("sleep 600"),
	}})
	r.fake.LoseLeaseAtStep(work, 1)
	r.waitFor("the lease lost", func() bool { return r.fake.WorkItem(work).LeaseLost })
	res := r.fake.Results("sesn_lease")
	require.NotEmpty(t, res)
	assert.Equal(t, "one\n", res[0].Text)
	// With one session at a time, the next item runs only once the lost
	// one is finished with.
	r.fake.AddSession(envfake.SessionSpec{ID: "sesn_after", Terminate: true, Steps: []envfake.Step{bash("echo after")}})
	after := r.waitResults("sesn_after", 1)
	assert.Equal(t, "after\n", after[0].Text)
	assert.False(t, r.fake.WorkItem(work).Stopped, "a lost lease's item belongs to another worker: not stopped")
	require.NoError(t, r.stop())
	r.assertNoSandboxes()
}

func TestShutdownFinishesTheRunningCall(t *testing.T) {
	r := newRig(t, nil, nil)
	work := r.fake.AddSession(envfake.SessionSpec{ID: "sesn_term", Terminate: true, Steps: []envfake.Step{
		bash("touch started; while [ ! -e release ]; do sleep 0.05; done; echo finished"),
		bash("echo never"),
	}})
	sb := r.sandboxWith("started")
	r.cancel() // what SIGTERM does in perimeter worker
	require.NoError(t, sb.WriteFile(context.Background(), "release", strings.NewReader(""), 0o644))
	require.NoError(t, r.stop())
	res := r.fake.Results("sesn_term")
	require.Len(t, res, 1, "the running call finishes; no new call starts")
	assert.False(t, res[0].IsError, res[0].Text)
	assert.Equal(t, "finished\n", res[0].Text)
	w := r.fake.WorkItem(work)
	assert.True(t, w.Stopped && w.Forced, "the unfinished item is released (force-stopped): %+v", w)
	r.assertNoSandboxes()
}

func TestGraceKeepsTheSandboxForTheSameSession(t *testing.T) {
	r := newRig(t, nil, func(o *environment.WorkerOptions) { o.Sandboxes.Grace = time.Hour })
	first := r.fake.AddSession(envfake.SessionSpec{ID: "sesn_grace", Steps: []envfake.Step{
		bash("export KEPT=yes; echo file > kept.txt"),
	}})
	r.waitResults("sesn_grace", 1)
	r.waitStopped(first)
	r.waitFor("the session ended", func() bool { return r.metrics.SessionsActive.Load() == 0 })
	second := r.fake.Continue("sesn_grace", bash("cat kept.txt; echo $KEPT"))
	res := r.waitResults("sesn_grace", 2)
	assert.Equal(t, "file\nyes\n", res[1].Text, "files and shell kept for the same session")
	r.waitStopped(second)
	assert.EqualValues(t, 1, r.metrics.SandboxCreates.Load())
	require.NoError(t, r.stop())
	r.assertNoSandboxes()
}

// brokenProvider is a driver whose every creation fails.
type brokenProvider struct{ driver.Provider }

func (brokenProvider) Name() string { return "broken" }
func (brokenProvider) Close() error { return nil }
func (brokenProvider) Create(context.Context, *sandbox.Spec) (driver.Sandbox, error) {
	return nil, errors.New("quota exceeded")
}

func TestSandboxStartFailureFailsThatSessionOnly(t *testing.T) {
	r := newRig(t, sandbox.NewProvider(brokenProvider{}, nil), nil)
	work := r.fake.AddSession(envfake.SessionSpec{ID: "sesn_broken", Terminate: true, Steps: []envfake.Step{bash("true"), bash("true")}})
	res := r.waitResults("sesn_broken", 2)
	for _, x := range res {
		assert.True(t, x.IsError)
		assert.Equal(t, "creating the session's sandbox: broken: create: unavailable: quota exceeded", x.Text)
	}
	r.waitStopped(work)
	hc := r.fake.Enqueue("healthcheck")
	r.waitStopped(hc)
	assert.EqualValues(t, 1, r.metrics.SessionFailures.Load())
	require.NoError(t, r.stop())
}

func TestToolsHaveTheAgentToolsetSchemas(t *testing.T) {
	b, err := environment.New(environment.Options{Provider: sandbox.NewProvider(brokenProvider{}, nil), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	tools := b.ToolsFunc(context.Background(), "")(&agenttoolset.AgentToolContext{})
	want := agenttoolset.BetaAgentToolset20260401(&agenttoolset.AgentToolContext{})
	require.Len(t, tools, len(want))
	for i := range want {
		assert.Equal(t, want[i].Name(), tools[i].Name())
		assert.Equal(t, want[i].Description(), tools[i].Description())
		assert.Equal(t, want[i].InputSchema(), tools[i].InputSchema())
	}
	assert.Equal(t, environment.ToolNames, []string{"bash", "read", "write", "edit", "glob", "grep"})
	agenttoolset.CloseAll(tools)
}

func TestMain(m *testing.M) {
	// The SDK's HandleItem reads these when a field is empty; a developer's
	// shell must not change what the tests do.
	for _, k := range []string{"ANTHROPIC_WORK_SECRET", "ANTHROPIC_WORK_LAST_HEARTBEAT", "ANTHROPIC_ENVIRONMENT_KEY"} {
		os.Unsetenv(k)
	}
	os.Exit(m.Run())
}
