package anthropic_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	sdk "github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"

	"github.com/perimeter-sdk/perimeter/providers/local"
	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/toolexec"
	perimeter "github.com/perimeter-sdk/perimeter/toolexec/anthropic"
	"github.com/perimeter-sdk/perimeter/toolexec/anthropic/fakeapi"
)

func newSandbox(t *testing.T) *sandbox.Sandbox {
	t.Helper()
	p, err := local.New(&local.Options{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := p.Create(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Terminate(context.Background()) })
	return sb
}

func newToolset(t *testing.T, sb *sandbox.Sandbox, opts *toolexec.Options) *toolexec.Toolset {
	t.Helper()
	ts, err := toolexec.New(sb, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ts.Close() })
	return ts
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestToolDefinitionsWire(t *testing.T) {
	store, err := toolexec.HostDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ts := newToolset(t, newSandbox(t), &toolexec.Options{
		Tools:  []string{"bash", toolexec.EditorName, "memory", "glob"},
		Editor: toolexec.EditorOptions{MaxCharacters: 10000},
		Memory: store,
	})
	want := []string{
		`{"name":"bash","type":"bash_20250124"}`,
		`{"max_characters":10000,"name":"str_replace_based_edit_tool","type":"text_editor_20250728"}`,
		`{"name":"memory","type":"memory_20250818"}`,
	}
	for i, d := range perimeter.Tools(ts)[:3] {
		if got := mustJSON(t, d); got != want[i] {
			t.Errorf("Tools()[%d] = %s, want %s", i, got, want[i])
		}
	}
	for i, d := range perimeter.BetaToolDefinitions(ts)[:3] {
		if got := mustJSON(t, d); got != want[i] {
			t.Errorf("BetaToolDefinitions()[%d] = %s, want %s", i, got, want[i])
		}
	}
	for got, want := range map[string]string{
		mustJSON(t, perimeter.BashTool()):            `{"name":"bash","type":"bash_20250124"}`,
		mustJSON(t, perimeter.TextEditorTool(0)):     `{"max_characters":16000,"name":"str_replace_based_edit_tool","type":"text_editor_20250728"}`,
		mustJSON(t, perimeter.TextEditorTool(12345)): `{"max_characters":12345,"name":"str_replace_based_edit_tool","type":"text_editor_20250728"}`,
		mustJSON(t, perimeter.MemoryTool()):          `{"name":"memory","type":"memory_20250818"}`,
	} {
		if got != want {
			t.Errorf("builder gives %s, want %s", got, want)
		}
	}
	var glob map[string]any
	json.Unmarshal([]byte(mustJSON(t, perimeter.Tools(ts)[3])), &glob)
	if glob["name"] != "glob" || glob["input_schema"].(map[string]any)["type"] != "object" {
		t.Errorf("glob definition = %v", glob)
	}
}

func TestConversions(t *testing.T) {
	res := toolexec.ToolResult{ToolUseID: "toolu_1", Content: []toolexec.Block{toolexec.TextBlock("boom")}, IsError: true}
	want := `{"tool_use_id":"toolu_1","is_error":true,"content":[{"text":"boom","type":"text"}],"type":"tool_result"}`
	if got := mustJSON(t, perimeter.ToolResultBlock(res)); got != want {
		t.Errorf("ToolResultBlock = %s\nwant %s", got, want)
	}
	if got := mustJSON(t, perimeter.BetaToolResultBlock(res)); got != want {
		t.Errorf("BetaToolResultBlock = %s\nwant %s", got, want)
	}
	ok := toolexec.ToolResult{ToolUseID: "toolu_2", Content: []toolexec.Block{toolexec.TextBlock("fine")}}
	if got := mustJSON(t, perimeter.ToolResultBlock(ok)); got != `{"tool_use_id":"toolu_2","content":[{"text":"fine","type":"text"}],"type":"tool_result"}` {
		t.Errorf("ToolResultBlock (success) = %s", got)
	}

	var msg sdk.Message
	if err := json.Unmarshal([]byte(`{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[{"type":"tool_use","id":"toolu_9","name":"bash","input":{"command":"ls -l"}}],"stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":1}}`), &msg); err != nil {
		t.Fatal(err)
	}
	use := perimeter.ToolUse(msg.Content[0].AsToolUse())
	if use.ID != "toolu_9" || use.Name != "bash" || string(use.Input) != `{"command":"ls -l"}` {
		t.Errorf("ToolUse = %+v (input %s)", use, use.Input)
	}
	var bmsg sdk.BetaMessage
	if err := json.Unmarshal([]byte(`{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[{"type":"tool_use","id":"toolu_8","name":"memory","input":{"command":"view","path":"/memories"}}],"stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":1}}`), &bmsg); err != nil {
		t.Fatal(err)
	}
	buse := perimeter.BetaToolUse(bmsg.Content[0].AsToolUse())
	if buse.ID != "toolu_8" || buse.Name != "memory" || string(buse.Input) != `{"command":"view","path":"/memories"}` {
		t.Errorf("BetaToolUse = %+v (input %s)", buse, buse.Input)
	}
}

func client(srv *fakeapi.Server) sdk.Client {
	return sdk.NewClient(option.WithBaseURL(srv.URL), option.WithAPIKey("sk-ant-test"), option.WithMaxRetries(0))
}

func TestAnswerLoopAgainstFakeAPI(t *testing.T) {
	srv := fakeapi.New([]fakeapi.Turn{
		{StopReason: "tool_use", Content: []map[string]any{
			{"type": "text", "text": "Let me look."},
			{"type": "tool_use", "id": "toolu_a", "name": "bash", "input": map[string]any{"command": "echo from-bash"}},
			{"type": "tool_use", "id": "toolu_b", "name": "str_replace_based_edit_tool", "input": map[string]any{"command": "view", "path": "/missing"}},
		}},
		{StopReason: "end_turn", Content: []map[string]any{{"type": "text", "text": "Done."}}},
	})
	defer srv.Close()
	ts := newToolset(t, newSandbox(t), nil)
	c := client(srv)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	params := sdk.MessageNewParams{
		Model:     "claude-sonnet-4-5",
		MaxTokens: 1024,
		Tools:     perimeter.Tools(ts),
		Messages:  []sdk.MessageParam{sdk.NewUserMessage(sdk.NewTextBlock("hi"))},
	}
	for range 5 {
		msg, err := c.Messages.New(ctx, params)
		if err != nil {
			t.Fatal(err)
		}
		reply, used, err := perimeter.Answer(ctx, ts, msg)
		if err != nil {
			t.Fatal(err)
		}
		if !used {
			break
		}
		params.Messages = append(params.Messages, msg.ToParam(), reply)
	}
	got := srv.ToolResults(1)
	if len(got) != 2 {
		t.Fatalf("second request carries %d tool results, want 2: %v", len(got), got)
	}
	if mustJSON(t, got[0]) != `{"content":[{"text":"from-bash\n","type":"text"}],"tool_use_id":"toolu_a","type":"tool_result"}` {
		t.Errorf("bash result = %s", mustJSON(t, got[0]))
	}
	if mustJSON(t, got[1]) != `{"content":[{"text":"The path /missing does not exist. Please provide a valid path.","type":"text"}],"is_error":true,"tool_use_id":"toolu_b","type":"tool_result"}` {
		t.Errorf("editor result = %s", mustJSON(t, got[1]))
	}
	if len(srv.Requests()) != 2 {
		t.Errorf("%d requests, want 2", len(srv.Requests()))
	}
	tools, _ := srv.Requests()[0]["tools"].([]any)
	if mustJSON(t, tools[0]) != `{"name":"bash","type":"bash_20250124"}` {
		t.Errorf("first tool sent = %s", mustJSON(t, tools[0]))
	}
}

func TestToolRunnerExecutesBuiltinsThroughPerimeter(t *testing.T) {
	srv := fakeapi.New([]fakeapi.Turn{
		{StopReason: "tool_use", Content: []map[string]any{
			{"type": "tool_use", "id": "toolu_1", "name": "bash", "input": map[string]any{"command": "echo via-runner"}},
			{"type": "tool_use", "id": "toolu_2", "name": "str_replace_based_edit_tool", "input": map[string]any{"command": "create", "path": "/workspace/r.txt", "file_text": "x"}},
			{"type": "tool_use", "id": "toolu_3", "name": "bash", "input": map[string]any{}},
		}},
		{StopReason: "end_turn", Content: []map[string]any{{"type": "text", "text": "ok"}}},
	})
	defer srv.Close()
	sb := newSandbox(t)
	ts := newToolset(t, sb, &toolexec.Options{Tools: []string{"bash", toolexec.EditorName}})
	c := client(srv)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	runner := c.Beta.Messages.NewToolRunner(perimeter.BetaTools(ts), sdk.BetaToolRunnerParams{
		BetaMessageNewParams: sdk.BetaMessageNewParams{
			Model:     "claude-sonnet-4-5",
			MaxTokens: 1024,
			Tools:     perimeter.BetaToolDefinitions(ts),
			Messages:  []sdk.BetaMessageParam{sdk.NewBetaUserMessage(sdk.NewBetaTextBlock("go"))},
		},
		MaxIterations: 4,
		DisableThread: true,
	})
	final, err := runner.RunToCompletion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if final.Content[0].Text != "ok" {
		t.Errorf("final message = %+v", final.Content)
	}
	tools, _ := srv.Requests()[0]["tools"].([]any)
	if len(tools) != 2 || mustJSON(t, tools[0]) != `{"name":"bash","type":"bash_20250124"}` || mustJSON(t, tools[1]) != `{"max_characters":16000,"name":"str_replace_based_edit_tool","type":"text_editor_20250728"}` {
		t.Errorf("the runner sent tools %s, want exactly the built-in definitions", mustJSON(t, tools))
	}
	results := map[string]string{}
	for _, r := range srv.ToolResults(1) {
		results[r["tool_use_id"].(string)] = mustJSON(t, r)
	}
	if !strings.Contains(results["toolu_1"], `"text":"via-runner\n"`) {
		t.Errorf("bash result = %s", results["toolu_1"])
	}
	if !strings.Contains(results["toolu_2"], `"text":"File created successfully at: /workspace/r.txt"`) {
		t.Errorf("editor result = %s", results["toolu_2"])
	}
	if !strings.Contains(results["toolu_3"], `"text":"Error: bash: command is required"`) || !strings.Contains(results["toolu_3"], `"is_error":true`) {
		t.Errorf("bad bash input result = %s", results["toolu_3"])
	}
	if rc, err := sb.ReadFile(ctx, "/workspace/r.txt"); err != nil {
		t.Errorf("the editor did not write in the sandbox: %v", err)
	} else {
		rc.Close()
	}
}

func TestFakeAPIRefusesUnansweredToolUse(t *testing.T) {
	srv := fakeapi.New([]fakeapi.Turn{{StopReason: "end_turn", Content: []map[string]any{{"type": "text", "text": "x"}}}})
	defer srv.Close()
	c := client(srv)
	_, err := c.Messages.New(context.Background(), sdk.MessageNewParams{
		Model: "m", MaxTokens: 10,
		Messages: []sdk.MessageParam{
			sdk.NewUserMessage(sdk.NewTextBlock("hi")),
			sdk.NewAssistantMessage(sdk.NewToolUseBlock("toolu_x", map[string]any{"command": "ls"}, "bash")),
			sdk.NewUserMessage(sdk.NewTextBlock("no result")),
		},
	})
	var apiErr *sdk.Error
	if err == nil || !errorsAs(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest || !strings.Contains(err.Error(), "toolu_x") {
		t.Fatalf("err = %v, want a 400 naming toolu_x", err)
	}
	bad := sdk.NewClient(option.WithBaseURL(srv.URL), option.WithAPIKey(""), option.WithMaxRetries(0))
	_, err = bad.Messages.New(context.Background(), sdk.MessageNewParams{Model: "m", MaxTokens: 10, Messages: []sdk.MessageParam{sdk.NewUserMessage(sdk.NewTextBlock("hi"))}})
	if err == nil || !errorsAs(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized {
		t.Fatalf("err without a key = %v, want 401", err)
	}
}
