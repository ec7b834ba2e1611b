package toolexec_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/toolexec"
	"github.com/perimeter-sdk/perimeter/toolexec/toolexectest"
)

func TestToolResultWireShape(t *testing.T) {
	b, err := json.Marshal(toolexec.ToolResult{ToolUseID: "toolu_1", Content: []toolexec.Block{toolexec.TextBlock("boom")}, IsError: true})
	require.NoError(t, err)
	assert.JSONEq(t, `{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"boom"}],"is_error":true}`, string(b))
	b, err = json.Marshal(toolexec.ToolResult{ToolUseID: "toolu_2"})
	require.NoError(t, err)
	assert.Equal(t, `{"type":"tool_result","tool_use_id":"toolu_2","content":[]}`, string(b))

	var use toolexec.ToolUse
	require.NoError(t, json.Unmarshal([]byte(`{"type":"tool_use","id":"toolu_3","name":"bash","input":{"command":"ls"}}`), &use))
	assert.Equal(t, toolexec.ToolUse{Type: "tool_use", ID: "toolu_3", Name: "bash", Input: json.RawMessage(`{"command":"ls"}`)}, use)
}

func TestDefinitions(t *testing.T) {
	store, err := toolexec.HostDir(t.TempDir())
	require.NoError(t, err)
	defer store.Close()
	sb := newSandbox(t)
	ts := newToolset(t, sb, &toolexec.Options{
		Tools:  []string{"bash", toolexec.EditorName, "memory", "read"},
		Editor: toolexec.EditorOptions{MaxCharacters: 10000},
		Memory: store,
	})
	b, err := json.Marshal(ts.Definitions())
	require.NoError(t, err)
	var got []map[string]any
	require.NoError(t, json.Unmarshal(b, &got))
	require.Len(t, got, 4)
	assert.Equal(t, map[string]any{"type": "bash_20250124", "name": "bash"}, got[0])
	assert.Equal(t, map[string]any{"type": "text_editor_20250728", "name": "str_replace_based_edit_tool", "max_characters": 10000.0}, got[1])
	assert.Equal(t, map[string]any{"type": "memory_20250818", "name": "memory"}, got[2])
	assert.Equal(t, "read", got[3]["name"])
	assert.Equal(t, []any{"file_path"}, got[3]["input_schema"].(map[string]any)["required"])
	assert.Equal(t, []string{"bash", toolexec.EditorName, "memory", "read"}, ts.Names())

	// Default tool set: no memory without a store.
	assert.Equal(t, []string{"bash", toolexec.EditorName, "read", "write", "edit", "glob", "grep"}, newToolset(t, sb, nil).Names())
}

func TestNewRefusesBadOptions(t *testing.T) {
	sb := newSandbox(t)
	for _, tc := range []struct {
		opts *toolexec.Options
		want string
	}{
		{&toolexec.Options{Tools: []string{"bash", "bsah"}}, `toolexec: unknown tool "bsah" in Options.Tools (known: bash, str_replace_based_edit_tool, memory, read, write, edit, glob, grep)`},
		{&toolexec.Options{Tools: []string{"memory"}}, "toolexec: Options.Tools lists memory but Options.Memory is nil"},
		{&toolexec.Options{Tools: []string{"bash", "bash"}}, `toolexec: tool "bash" listed twice in Options.Tools`},
		{&toolexec.Options{Bash: toolexec.BashOptions{Timeout: -1}}, "toolexec: negative BashOptions.Timeout -1ns"},
		{&toolexec.Options{Files: toolexec.FilesOptions{MaxFileBytes: -5}}, "toolexec: negative FilesOptions.MaxFileBytes -5"},
	} {
		ts, err := toolexec.New(sb, tc.opts)
		assert.Nil(t, ts)
		assert.EqualError(t, err, tc.want)
	}
	_, err := toolexec.New(nil, nil)
	assert.EqualError(t, err, "toolexec: nil target")
}

// failingFS wraps a sandbox and fails writes (and, optionally, reads) with
// a chosen error, to reach the error paths a local sandbox run as root
// cannot.
type failingFS struct {
	*sandbox.Sandbox
	writeErr, readErr error
}

func (f *failingFS) WriteFile(ctx context.Context, name string, r io.Reader, perm fs.FileMode) error {
	if f.writeErr != nil {
		return f.writeErr
	}
	return f.Sandbox.WriteFile(ctx, name, r, perm)
}

func (f *failingFS) ReadFile(ctx context.Context, name string) (io.ReadCloser, error) {
	if f.readErr != nil {
		return nil, f.readErr
	}
	return f.Sandbox.ReadFile(ctx, name)
}

func TestEditorPermissionDenied(t *testing.T) {
	sb := newSandbox(t)
	ctx := context.Background()
	require.NoError(t, sb.WriteFile(ctx, "/f.txt", strings.NewReader("a b c"), 0o644))
	denied := sandbox.Errorf("fake", sb.ID(), "write file", sandbox.ErrPermissionDenied, "read-only file system")
	ts := newToolset(t, &failingFS{Sandbox: sb, writeErr: denied}, nil)
	r := call(t, ts, toolexec.EditorName, m{"command": "str_replace", "path": "/f.txt", "old_str": "b", "new_str": "x"})
	assert.Equal(t, "Error: Permission denied. Cannot write to file.", r.Text())
	assert.True(t, r.IsError)
	r = call(t, ts, toolexec.EditorName, m{"command": "create", "path": "/new.txt", "file_text": "x"})
	assert.Equal(t, "Error: Permission denied. Cannot write to file.", r.Text())
	r = call(t, ts, toolexec.EditorName, m{"command": "insert", "path": "/f.txt", "insert_line": 0, "insert_text": "x"})
	assert.Equal(t, "Error: Permission denied. Cannot write to file.", r.Text())
	r = call(t, ts, "write", m{"file_path": "g.txt", "content": "x"})
	assert.Equal(t, "write g.txt: permission denied", r.Text())
}

func TestInfrastructureFailureIsAGoError(t *testing.T) {
	sb := newSandbox(t)
	ctx := context.Background()
	require.NoError(t, sb.WriteFile(ctx, "/f.txt", strings.NewReader("a b c"), 0o644))
	down := sandbox.Errorf("fake", sb.ID(), "write file", sandbox.ErrUnavailable, "connection reset")
	ts := newToolset(t, &failingFS{Sandbox: sb, writeErr: down, readErr: down}, nil)
	for _, tc := range []struct {
		tool  string
		input string
	}{
		{toolexec.EditorName, `{"command":"str_replace","path":"/f.txt","old_str":"b","new_str":"x"}`},
		{toolexec.EditorName, `{"command":"view","path":"/f.txt"}`},
		{"read", `{"file_path":"f.txt"}`},
		{"write", `{"file_path":"f.txt","content":"x"}`},
	} {
		res, err := ts.Execute(ctx, toolexec.ToolUse{ID: "t", Name: tc.tool, Input: json.RawMessage(tc.input)})
		// The host gets the whole error; the model its kind only, never
		// the provider's details, the sandbox id or host paths.
		require.ErrorIs(t, err, sandbox.ErrUnavailable, tc.input)
		assert.Contains(t, err.Error(), "connection reset", tc.input)
		assert.True(t, res.IsError)
		assert.Contains(t, res.Text(), "the sandbox could not complete the operation: unavailable", tc.input)
		assert.NotContains(t, res.Text(), sb.ID(), tc.input)
		assert.NotContains(t, res.Text(), "connection reset", tc.input)
	}
}

func TestBashCannotStart(t *testing.T) {
	sb := newSandbox(t)
	require.NoError(t, sb.Terminate(context.Background()))
	ts := newToolset(t, sb, nil)
	res, err := ts.Execute(context.Background(), toolexec.ToolUse{ID: "t", Name: "bash", Input: json.RawMessage(`{"command":"true"}`)})
	require.ErrorIs(t, err, sandbox.ErrTerminated)
	assert.True(t, res.IsError)
	assert.Equal(t, "bash: starting the shell: the sandbox could not complete the operation: sandbox terminated", res.Text())
}

func TestMemoryHostStore(t *testing.T) {
	dir := t.TempDir()
	store, err := toolexec.HostDir(dir)
	require.NoError(t, err)
	defer store.Close()
	ts := newToolset(t, newSandbox(t), &toolexec.Options{Memory: store})
	toolexectest.MemoryCommands(t, func(name string, input any) toolexec.ToolResult { return call(t, ts, name, input) })
	got, err := os.ReadFile(filepath.Join(dir, "notes", "todo.md"))
	require.NoError(t, err)
	assert.Equal(t, "zero\nfirst\nthird\nfourth\n", string(got))
	fi, err := os.Stat(filepath.Join(dir, "notes", "todo.md"))
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o600), fi.Mode().Perm())
}

func TestMemoryHostStoreOutlivesSandbox(t *testing.T) {
	store, err := toolexec.HostDir(t.TempDir())
	require.NoError(t, err)
	defer store.Close()
	sb := newSandbox(t)
	ts, err := toolexec.New(sb, &toolexec.Options{Memory: store})
	require.NoError(t, err)
	r := call(t, ts, "memory", m{"command": "create", "path": "/memories/lesson.md", "file_text": "use -race\n"})
	require.False(t, r.IsError, r.Text())
	require.NoError(t, ts.Close())
	require.NoError(t, sb.Terminate(context.Background()))

	ts2 := newToolset(t, newSandbox(t), &toolexec.Options{Memory: store})
	r = call(t, ts2, "memory", m{"command": "view", "path": "/memories/lesson.md"})
	assert.Equal(t, "Here's the content of /memories/lesson.md with line numbers:\n     1\tuse -race\n     2\t", r.Text())
}

func TestMemorySymlinkEscapeRefused(t *testing.T) {
	dir := t.TempDir()
	outside := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(outside, "secret"), []byte("s3cret"), 0o600))
	require.NoError(t, os.Symlink(outside, filepath.Join(dir, "link")))
	store, err := toolexec.HostDir(dir)
	require.NoError(t, err)
	defer store.Close()
	ts := newToolset(t, newSandbox(t), &toolexec.Options{Memory: store})
	for _, in := range []m{
		{"command": "view", "path": "/memories/link/secret"},
		{"command": "create", "path": "/memories/link/new", "file_text": "x"},
		{"command": "delete", "path": "/memories/link/secret"},
		{"command": "rename", "old_path": "/memories/link/secret", "new_path": "/memories/stolen"},
	} {
		r := call(t, ts, "memory", in)
		// The Python reference's text, with the "Error: " prefix of the
		// documentation and the TypeScript SDK.
		assert.Equal(t, "Error: Path would escape /memories directory via symlink", r.Text(), in)
		assert.True(t, r.IsError)
	}
	_, err = os.Stat(filepath.Join(outside, "new"))
	assert.ErrorIs(t, err, fs.ErrNotExist)
	got, _ := os.ReadFile(filepath.Join(outside, "secret"))
	assert.Equal(t, "s3cret", string(got))
}

func TestHostDirRefusesTraversal(t *testing.T) {
	parent := t.TempDir()
	store, err := toolexec.HostDir(filepath.Join(parent, "mem"))
	require.NoError(t, err)
	defer store.Close()
	ctx := context.Background()
	err = store.WriteFile(ctx, "../escape", strings.NewReader("x"), 0o600)
	require.ErrorIs(t, err, sandbox.ErrInvalidArgument)
	require.NoError(t, os.Symlink(parent, filepath.Join(parent, "mem", "up")))
	err = store.WriteFile(ctx, "up/escape", strings.NewReader("x"), 0o600)
	require.Error(t, err)
	_, err = os.Stat(filepath.Join(parent, "escape"))
	assert.ErrorIs(t, err, fs.ErrNotExist)
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	sb := newSandbox(t)
	settle := func() int {
		n := runtime.NumGoroutine()
		for range 50 {
			time.Sleep(20 * time.Millisecond)
			if m := runtime.NumGoroutine(); m == n {
				return n
			} else {
				n = m
			}
		}
		return n
	}
	before := settle()
	ts, err := toolexec.New(sb, &toolexec.Options{Bash: toolexec.BashOptions{Timeout: 300 * time.Millisecond}})
	require.NoError(t, err)
	call(t, ts, "bash", m{"command": "sleep 100 & echo x"})
	call(t, ts, "bash", m{"command": "sleep 100"}) // times out, restarts
	call(t, ts, "bash", m{"command": "echo y"})
	require.NoError(t, ts.Close())
	require.NoError(t, ts.Close(), "Close is idempotent")
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	assert.LessOrEqual(t, runtime.NumGoroutine(), before, "goroutines left after Close")
}

func TestCancelledContextBeforeCall(t *testing.T) {
	ts := newToolset(t, newSandbox(t), nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err := ts.Execute(ctx, toolexec.ToolUse{ID: "t", Name: toolexec.EditorName, Input: json.RawMessage(`{"command":"view","path":"/"}`)})
	require.True(t, errors.Is(err, context.Canceled), "err = %v", err)
	assert.True(t, res.IsError)
}

func TestMemoryViewLineLimit(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "huge.md"), []byte(strings.Repeat("\n", 999999)), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "ok.md"), []byte(strings.Repeat("\n", 999998)), 0o600))
	store, err := toolexec.HostDir(dir)
	require.NoError(t, err)
	defer store.Close()
	ts := newToolset(t, newSandbox(t), &toolexec.Options{Memory: store})
	r := call(t, ts, "memory", m{"command": "view", "path": "/memories/huge.md"})
	assert.Equal(t, "File /memories/huge.md exceeds maximum line limit of 999,999 lines.", r.Text())
	assert.True(t, r.IsError)
	r = call(t, ts, "memory", m{"command": "view", "path": "/memories/ok.md", "view_range": []int{999999, -1}})
	assert.Equal(t, "Here's the content of /memories/ok.md with line numbers:\n999999\t", r.Text())
	assert.False(t, r.IsError)
}

func TestEditorRefusesFilesOverTheEditLimit(t *testing.T) {
	sb := newSandbox(t)
	require.NoError(t, sb.WriteFile(context.Background(), "/big.txt", strings.NewReader("0123456789abcdef\n"), 0o644))
	ts := newToolset(t, sb, &toolexec.Options{Editor: toolexec.EditorOptions{MaxFileBytes: 10}})
	r := call(t, ts, toolexec.EditorName, m{"command": "str_replace", "path": "/big.txt", "old_str": "0", "new_str": "x"})
	assert.Equal(t, "Error: /big.txt is larger than the 10-byte limit for editing; view it with view_range or change it with the bash tool.", r.Text())
	assert.True(t, r.IsError)
	r = call(t, ts, toolexec.EditorName, m{"command": "view", "path": "/big.txt"})
	assert.Equal(t, "Here's the result of running `cat -n` on /big.txt:\n     1\t0123456789abcdef\n", r.Text(), "view streams files of any size")
}
