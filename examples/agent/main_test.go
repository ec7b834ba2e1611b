package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2/option"

	"github.com/perimeter-sdk/perimeter/toolexec/anthropic/fakeapi"
)

// TestAgentLoopAgainstFakeAPI runs the whole loop against a local fake of the
// Messages API that replays a scripted conversation (tool_use, tool_result,
// final text), and checks what the example sent back.
func TestAgentLoopAgainstFakeAPI(t *testing.T) {
	srv := fakeapi.New([]fakeapi.Turn{
		{StopReason: "tool_use", Content: []map[string]any{
			{"type": "text", "text": "I'll write the script."},
			{"type": "tool_use", "id": "toolu_01", "name": "str_replace_based_edit_tool", "input": map[string]any{
				"command": "create", "path": "/workspace/fizz.sh", "file_text": "for i in 1 2 3; do [ $((i % 3)) = 0 ] && echo fizz || echo $i; done\n"}},
		}},
		{StopReason: "tool_use", Content: []map[string]any{
			{"type": "tool_use", "id": "toolu_02", "name": "bash", "input": map[string]any{"command": "bash fizz.sh"}},
			{"type": "tool_use", "id": "toolu_03", "name": "bash", "input": map[string]any{"command": "echo $ANTHROPIC_API_KEY | wc -c; (exit 3)"}},
		}},
		{StopReason: "end_turn", Content: []map[string]any{{"type": "text", "text": "It prints 1, 2, fizz."}}},
	})
	defer srv.Close()
	t.Setenv("ANTHROPIC_API_KEY", "sk-ant-must-not-leak")

	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := run(ctx, config{
		Provider: "local://" + t.TempDir(),
		Model:    "claude-sonnet-4-5",
		Task:     "Write a fizz script and run it.",
		MaxTurns: 5,
		Options:  []option.RequestOption{option.WithBaseURL(srv.URL), option.WithMaxRetries(0)},
	}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if len(srv.Requests()) != 3 {
		t.Fatalf("%d requests to the API, want 3", len(srv.Requests()))
	}
	check := func(req, i int, want string) {
		t.Helper()
		results := srv.ToolResults(req)
		if i >= len(results) {
			t.Fatalf("request %d carries %d tool results", req, len(results))
		}
		b, _ := json.Marshal(results[i])
		if string(b) != want {
			t.Errorf("request %d tool result %d =\n%s\nwant\n%s", req, i, b, want)
		}
	}
	check(1, 0, `{"content":[{"text":"File created successfully at: /workspace/fizz.sh","type":"text"}],"tool_use_id":"toolu_01","type":"tool_result"}`)
	check(2, 0, `{"content":[{"text":"1\n2\nfizz\n","type":"text"}],"tool_use_id":"toolu_02","type":"tool_result"}`)
	// The key is not in the sandbox: echo prints an empty line (1 byte).
	check(2, 1, `{"content":[{"text":"1\n\nexit code: 3","type":"text"}],"is_error":true,"tool_use_id":"toolu_03","type":"tool_result"}`)

	// The editor's definition states the view limit toolexec applies (the
	// API reads an absent max_characters as "the full file").
	tools, _ := srv.Requests()[0]["tools"].([]any)
	if b, _ := json.Marshal(tools); string(b) != `[{"name":"bash","type":"bash_20250124"},{"max_characters":16000,"name":"str_replace_based_edit_tool","type":"text_editor_20250728"}]` {
		t.Errorf("tools sent = %s", b)
	}
	if !strings.Contains(out.String(), "It prints 1, 2, fizz.") {
		t.Errorf("output = %q", out.String())
	}
}

// TestAgentLive runs the example against the real API when a key is set.
func TestAgentLive(t *testing.T) {
	if os.Getenv("ANTHROPIC_API_KEY") == "" || os.Getenv("PERIMETER_LIVE") == "" {
		t.Skip("live test: set ANTHROPIC_API_KEY and PERIMETER_LIVE=1 to run the example against the real Messages API")
	}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	err := run(ctx, config{Provider: "local://" + t.TempDir(), Model: "claude-sonnet-4-5", MaxTurns: 10,
		Task: "Create /hello.txt containing the word perimeter with the text editor, then show it with cat via bash."}, &out)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(out.String())
}
