package anthropic_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	sdk "github.com/anthropics/anthropic-sdk-go/v2"

	"github.com/perimeter-sdk/perimeter/toolexec"
	perimeter "github.com/perimeter-sdk/perimeter/toolexec/anthropic"
	"github.com/perimeter-sdk/perimeter/toolexec/anthropic/fakeapi"
)

// builtinTools is the tools array of a request offering the three built-in
// client tools, as the API documents their definitions
// (https://platform.claude.com/docs/en/agents-and-tools/tool-use/bash-tool,
// .../text-editor-tool, .../memory-tool: {"type":"bash_20250124","name":"bash"},
// {"type":"text_editor_20250728","name":"str_replace_based_edit_tool",
// "max_characters":…}, {"type":"memory_20250818","name":"memory"}), with the
// keys in the order the fake API re-encodes them.
const builtinTools = `[{"name":"bash","type":"bash_20250124"},` +
	`{"max_characters":16000,"name":"str_replace_based_edit_tool","type":"text_editor_20250728"},` +
	`{"name":"memory","type":"memory_20250818"}]`

func runnerToolset(t *testing.T) *toolexec.Toolset {
	t.Helper()
	store, err := toolexec.HostDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return newToolset(t, newSandbox(t), &toolexec.Options{
		Tools:  []string{toolexec.BashName, toolexec.EditorName, toolexec.MemoryName},
		Memory: store,
	})
}

func firstRequestTools(t *testing.T, srv *fakeapi.Server) string {
	t.Helper()
	reqs := srv.Requests()
	if len(reqs) == 0 {
		t.Fatal("no request reached the fake API")
	}
	b, err := json.Marshal(reqs[0]["tools"])
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestNewToolRunnerSendsBuiltinDefinitions: the obvious way to hand the
// toolset to the SDK's runner sends the built-in tool types, not custom
// tools, and the built-ins still execute in the sandbox.
func TestNewToolRunnerSendsBuiltinDefinitions(t *testing.T) {
	srv := fakeapi.New([]fakeapi.Turn{
		{StopReason: "tool_use", Content: []map[string]any{
			{"type": "tool_use", "id": "toolu_1", "name": "bash", "input": map[string]any{"command": "echo via-runner"}},
			{"type": "tool_use", "id": "toolu_2", "name": "memory", "input": map[string]any{"command": "view", "path": "/memories"}},
		}},
		{StopReason: "end_turn", Content: []map[string]any{{"type": "text", "text": "ok"}}},
	})
	defer srv.Close()
	ts := runnerToolset(t)
	c := client(srv)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	runner := perimeter.NewToolRunner(&c.Beta.Messages, ts, sdk.BetaToolRunnerParams{
		BetaMessageNewParams: sdk.BetaMessageNewParams{
			Model:     "claude-sonnet-4-5",
			MaxTokens: 1024,
			Messages:  []sdk.BetaMessageParam{sdk.NewBetaUserMessage(sdk.NewBetaTextBlock("go"))},
		},
		MaxIterations: 4,
		DisableThread: true,
	})
	if _, err := runner.RunToCompletion(ctx); err != nil {
		t.Fatal(err)
	}
	if got := firstRequestTools(t, srv); got != builtinTools {
		t.Errorf("request tools = %s\nwant          %s", got, builtinTools)
	}
	results := srv.ToolResults(1)
	if len(results) != 2 {
		t.Fatalf("second request carries %d tool results, want 2", len(results))
	}
	want := []string{
		`{"content":[{"text":"via-runner\n","type":"text"}],"tool_use_id":"toolu_1","type":"tool_result"}`,
		`{"content":[{"text":"Here're the files and directories up to 2 levels deep in /memories, excluding hidden items and node_modules:\n4K\t/memories","type":"text"}],"tool_use_id":"toolu_2","type":"tool_result"}`,
	}
	for i, r := range results {
		if got := mustJSON(t, r); got != want[i] {
			t.Errorf("tool result %d = %s\nwant %s", i, got, want[i])
		}
	}
}

// TestNewToolRunnerKeepsCallerDefinitions: a definition the caller already
// put in params.Tools is sent as given, and the rest are added.
func TestNewToolRunnerKeepsCallerDefinitions(t *testing.T) {
	srv := fakeapi.New([]fakeapi.Turn{{StopReason: "end_turn", Content: []map[string]any{{"type": "text", "text": "ok"}}}})
	defer srv.Close()
	ts := runnerToolset(t)
	c := client(srv)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	params := sdk.BetaToolRunnerParams{
		BetaMessageNewParams: sdk.BetaMessageNewParams{
			Model:     "claude-sonnet-4-5",
			MaxTokens: 1024,
			Messages:  []sdk.BetaMessageParam{sdk.NewBetaUserMessage(sdk.NewBetaTextBlock("go"))},
			Tools:     []sdk.BetaToolUnionParam{{OfTextEditor20250728: &sdk.BetaToolTextEditor20250728Param{MaxCharacters: sdk.Int(500)}}},
		},
		MaxIterations: 1,
		DisableThread: true,
	}
	if _, err := perimeter.NewToolRunner(&c.Beta.Messages, ts, params).RunToCompletion(ctx); err != nil {
		t.Fatal(err)
	}
	want := `[{"max_characters":500,"name":"str_replace_based_edit_tool","type":"text_editor_20250728"},` +
		`{"name":"bash","type":"bash_20250124"},{"name":"memory","type":"memory_20250818"}]`
	if got := firstRequestTools(t, srv); got != want {
		t.Errorf("request tools = %s\nwant          %s", got, want)
	}
	if len(params.Tools) != 1 {
		t.Errorf("NewToolRunner changed the caller's params.Tools: %d definitions", len(params.Tools))
	}
}

// TestBetaToolsAloneAreValidCustomTools pins what the SDK's runner sends for
// BetaTools without their definitions: custom tools (the runner cannot send
// anything else for a BetaTool), with the built-ins' input schemas rather
// than "properties":null.
func TestBetaToolsAloneAreValidCustomTools(t *testing.T) {
	srv := fakeapi.New([]fakeapi.Turn{{StopReason: "end_turn", Content: []map[string]any{{"type": "text", "text": "ok"}}}})
	defer srv.Close()
	ts := runnerToolset(t)
	c := client(srv)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	runner := c.Beta.Messages.NewToolRunner(perimeter.BetaTools(ts), sdk.BetaToolRunnerParams{
		BetaMessageNewParams: sdk.BetaMessageNewParams{
			Model: "claude-sonnet-4-5", MaxTokens: 1024,
			Messages: []sdk.BetaMessageParam{sdk.NewBetaUserMessage(sdk.NewBetaTextBlock("go"))},
		},
		MaxIterations: 1,
		DisableThread: true,
	})
	if _, err := runner.RunToCompletion(ctx); err != nil {
		t.Fatal(err)
	}
	var tools []map[string]any
	if err := json.Unmarshal([]byte(firstRequestTools(t, srv)), &tools); err != nil {
		t.Fatal(err)
	}
	if len(tools) != 3 {
		t.Fatalf("%d tools sent, want 3", len(tools))
	}
	for _, tool := range tools {
		schema, _ := tool["input_schema"].(map[string]any)
		props, _ := schema["properties"].(map[string]any)
		if tool["type"] != nil || len(props) == 0 || props["command"] == nil {
			t.Errorf("tool %v: want a custom tool whose input schema has properties including command", tool)
		}
	}
}
