// Package anthropic binds toolexec to the Anthropic Go SDK
// (github.com/anthropics/anthropic-sdk-go/v2): tool definitions in the SDK's
// types, conversions between the SDK's tool_use / tool_result blocks and
// toolexec's, and [BetaTools], which let the SDK's tool runner execute the
// built-in bash, text editor and memory tools (and the file tools) inside a
// Perimeter sandbox.
//
// It is its own Go module so that the core module never depends on the SDK.
// Its package name collides with the SDK's; import it under another name:
//
//	import (
//		"github.com/anthropics/anthropic-sdk-go/v2"
//		perimeter "github.com/perimeter-sdk/perimeter/toolexec/anthropic"
//	)
//
// # With your own loop (exact results)
//
//	msg, _ := client.Messages.New(ctx, anthropic.MessageNewParams{Tools: perimeter.Tools(ts), ...})
//	reply, used, err := perimeter.Answer(ctx, ts, msg)
//
// # With the SDK's tool runner
//
// [NewToolRunner] creates the runner: the request carries the built-in
// definitions (bash_20250124, text_editor_20250728, memory_20250818) and the
// runner executes them, by name, through Perimeter:
//
//	runner := perimeter.NewToolRunner(&client.Beta.Messages, ts, sdk.BetaToolRunnerParams{...})
//	final, err := runner.RunToCompletion(ctx)
//
// Passing [BetaTools] to the SDK's own constructor is not enough: the runner
// then advertises every tool as a custom tool with an input schema, and the
// model does not get the built-in tools it was trained on. Put
// [BetaToolDefinitions] in params.Tools as well (NewToolRunner does). The runner reports a failed
// tool as "Error: " followed by the tool's message; the wrapper removes a
// leading "Error: " of its own so the prefix is not doubled, but tool
// messages that do not start with it reach the model with it. For results
// byte-for-byte as documented, answer tool uses yourself with [Answer].
package anthropic

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"

	sdk "github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"

	"github.com/perimeter-sdk/perimeter/toolexec"
)

// BashTool returns the bash_20250124 definition.
func BashTool() sdk.ToolUnionParam {
	return sdk.ToolUnionParam{OfBashTool20250124: &sdk.ToolBash20250124Param{}}
}

// TextEditorTool returns the text_editor_20250728 definition with
// max_characters; zero means [toolexec.DefaultViewCharacters], the limit a
// toolset applies by default. The field is always sent, since the API reads
// an absent max_characters as "the full file".
func TextEditorTool(maxCharacters int) sdk.ToolUnionParam {
	if maxCharacters <= 0 {
		maxCharacters = toolexec.DefaultViewCharacters
	}
	return sdk.ToolUnionParam{OfTextEditor20250728: &sdk.ToolTextEditor20250728Param{MaxCharacters: sdk.Int(int64(maxCharacters))}}
}

// MemoryTool returns the memory_20250818 definition.
func MemoryTool() sdk.ToolUnionParam {
	return sdk.ToolUnionParam{OfMemoryTool20250818: &sdk.MemoryTool20250818Param{}}
}

// Tools returns ts's tool definitions for a Messages API request
// (MessageNewParams.Tools).
func Tools(ts *toolexec.Toolset) []sdk.ToolUnionParam {
	var out []sdk.ToolUnionParam
	for _, d := range ts.Definitions() {
		switch d.Name {
		case toolexec.BashName:
			out = append(out, BashTool())
		case toolexec.EditorName:
			out = append(out, TextEditorTool(d.MaxCharacters))
		case toolexec.MemoryName:
			out = append(out, MemoryTool())
		default:
			props, required := schemaParts(d.InputSchema)
			out = append(out, sdk.ToolUnionParam{OfTool: &sdk.ToolParam{
				Name:        d.Name,
				Description: sdk.String(d.Description),
				InputSchema: sdk.ToolInputSchemaParam{Properties: props, Required: required},
			}})
		}
	}
	return out
}

// BetaToolDefinitions returns ts's tool definitions for the beta Messages API
// and the SDK's tool runner (BetaToolRunnerParams.Tools).
func BetaToolDefinitions(ts *toolexec.Toolset) []sdk.BetaToolUnionParam {
	var out []sdk.BetaToolUnionParam
	for _, d := range ts.Definitions() {
		switch d.Name {
		case toolexec.BashName:
			out = append(out, sdk.BetaToolUnionParam{OfBashTool20250124: &sdk.BetaToolBash20250124Param{}})
		case toolexec.EditorName:
			n := d.MaxCharacters
			if n <= 0 {
				n = toolexec.DefaultViewCharacters
			}
			out = append(out, sdk.BetaToolUnionParam{OfTextEditor20250728: &sdk.BetaToolTextEditor20250728Param{MaxCharacters: sdk.Int(int64(n))}})
		case toolexec.MemoryName:
			out = append(out, sdk.BetaToolUnionParam{OfMemoryTool20250818: &sdk.BetaMemoryTool20250818Param{}})
		default:
			props, required := schemaParts(d.InputSchema)
			out = append(out, sdk.BetaToolUnionParam{OfTool: &sdk.BetaToolParam{
				Name:        d.Name,
				Description: sdk.String(d.Description),
				InputSchema: sdk.BetaToolInputSchemaParam{Properties: props, Required: required},
			}})
		}
	}
	return out
}

func schemaParts(raw json.RawMessage) (any, []string) {
	var s struct {
		Properties map[string]any `json:"properties"`
		Required   []string       `json:"required"`
	}
	if len(raw) > 0 {
		_ = json.Unmarshal(raw, &s) // toolexec's own schemas: always valid
	}
	return s.Properties, s.Required
}

// NewToolRunner returns the SDK's tool runner (svc.NewToolRunner) for ts:
// params.Tools gains ts's definitions ([BetaToolDefinitions]: the built-in
// tool types for bash, the text editor and memory) for every name it does
// not already define, and the runner executes ts's tools ([BetaTools]).
// svc is usually &client.Beta.Messages.
func NewToolRunner(svc *sdk.BetaMessageService, ts *toolexec.Toolset, params sdk.BetaToolRunnerParams, opts ...option.RequestOption) *sdk.BetaToolRunner {
	return svc.NewToolRunner(BetaTools(ts), withDefinitions(ts, params), opts...)
}

// NewToolRunnerStreaming is [NewToolRunner] for the streaming runner.
func NewToolRunnerStreaming(svc *sdk.BetaMessageService, ts *toolexec.Toolset, params sdk.BetaToolRunnerParams, opts ...option.RequestOption) *sdk.BetaToolRunnerStreaming {
	return svc.NewToolRunnerStreaming(BetaTools(ts), withDefinitions(ts, params), opts...)
}

// withDefinitions adds ts's definitions to params.Tools for the names it
// does not define yet; params.Tools itself is not modified.
func withDefinitions(ts *toolexec.Toolset, params sdk.BetaToolRunnerParams) sdk.BetaToolRunnerParams {
	have := map[string]bool{}
	for _, d := range params.Tools {
		if n := d.GetName(); n != nil {
			have[*n] = true
		}
	}
	tools := slices.Clone(params.Tools)
	for _, d := range BetaToolDefinitions(ts) {
		if n := d.GetName(); n != nil && !have[*n] {
			tools = append(tools, d)
		}
	}
	params.Tools = tools
	return params
}

// builtinSchemas are the input schemas of the built-in tools, for a runner
// that advertises BetaTools as custom tools (when BetaToolDefinitions are
// not in params.Tools): a valid tool, though not the built-in one.
var builtinSchemas = map[string]sdk.BetaToolInputSchemaParam{
	toolexec.BashName: {Properties: map[string]any{
		"command": map[string]any{"type": "string", "description": "The bash command to run."},
		"restart": map[string]any{"type": "boolean", "description": "Restart the shell session."},
	}},
	toolexec.EditorName: {Properties: map[string]any{
		"command":     map[string]any{"type": "string", "enum": []string{"view", "create", "str_replace", "insert"}},
		"path":        map[string]any{"type": "string", "description": "Absolute path of the file or directory."},
		"view_range":  map[string]any{"type": "array", "items": map[string]any{"type": "integer"}},
		"file_text":   map[string]any{"type": "string"},
		"old_str":     map[string]any{"type": "string"},
		"new_str":     map[string]any{"type": "string"},
		"insert_line": map[string]any{"type": "integer"},
		"insert_text": map[string]any{"type": "string"},
	}, Required: []string{"command", "path"}},
	toolexec.MemoryName: {Properties: map[string]any{
		"command":     map[string]any{"type": "string", "enum": []string{"view", "create", "str_replace", "insert", "delete", "rename"}},
		"path":        map[string]any{"type": "string", "description": "A path under /memories."},
		"view_range":  map[string]any{"type": "array", "items": map[string]any{"type": "integer"}},
		"file_text":   map[string]any{"type": "string"},
		"old_str":     map[string]any{"type": "string"},
		"new_str":     map[string]any{"type": "string"},
		"insert_line": map[string]any{"type": "integer"},
		"insert_text": map[string]any{"type": "string"},
		"old_path":    map[string]any{"type": "string"},
		"new_path":    map[string]any{"type": "string"},
	}, Required: []string{"command"}},
}

// BetaTools returns one sdk.BetaTool per tool of ts; each executes through
// ts. Use [NewToolRunner], or put [BetaToolDefinitions] in the runner's
// params.Tools too: on their own, BetaTools are advertised by the runner as
// custom tools (with the built-ins' input schemas), not as the built-in
// tool types.
func BetaTools(ts *toolexec.Toolset) []sdk.BetaTool {
	defs := ts.Definitions()
	out := make([]sdk.BetaTool, 0, len(defs))
	for _, d := range defs {
		props, required := schemaParts(d.InputSchema)
		if b, ok := builtinSchemas[d.Name]; ok && d.Type != "" {
			props, required = b.Properties, b.Required
		}
		desc := d.Description
		if desc == "" {
			desc = "Anthropic's " + d.Type + " tool, executed in a Perimeter sandbox."
		}
		out = append(out, &betaTool{ts: ts, name: d.Name, desc: desc,
			schema: sdk.BetaToolInputSchemaParam{Properties: props, Required: required}})
	}
	return out
}

type betaTool struct {
	ts     *toolexec.Toolset
	name   string
	desc   string
	schema sdk.BetaToolInputSchemaParam
}

func (t *betaTool) Name() string                              { return t.name }
func (t *betaTool) Description() string                       { return t.desc }
func (t *betaTool) InputSchema() sdk.BetaToolInputSchemaParam { return t.schema }

// Execute runs the tool use through the toolset. The tool runner gives no
// tool use id to a BetaTool, and none is needed: the runner pairs results
// with their uses itself.
func (t *betaTool) Execute(ctx context.Context, input json.RawMessage) ([]sdk.BetaToolResultBlockParamContentUnion, error) {
	res, err := t.ts.Execute(ctx, toolexec.ToolUse{Name: t.name, Input: input})
	if err != nil {
		return nil, err
	}
	if res.IsError {
		return nil, errors.New(strings.TrimPrefix(res.Text(), "Error: "))
	}
	return BetaContent(res), nil
}

// ToolUse converts a tool_use block of a Messages API response.
func ToolUse(b sdk.ToolUseBlock) toolexec.ToolUse {
	return toolexec.ToolUse{Type: "tool_use", ID: b.ID, Name: b.Name, Input: b.Input}
}

// BetaToolUse converts a tool_use block of a beta Messages API response.
func BetaToolUse(b sdk.BetaToolUseBlock) toolexec.ToolUse {
	input, _ := json.Marshal(b.Input) // b.Input is decoded JSON: it re-encodes
	return toolexec.ToolUse{Type: "tool_use", ID: b.ID, Name: b.Name, Input: input}
}

// ToolResultBlock converts a result to a tool_result content block for the
// next user message.
func ToolResultBlock(r toolexec.ToolResult) sdk.ContentBlockParamUnion {
	p := sdk.ToolResultBlockParam{ToolUseID: r.ToolUseID}
	if r.IsError {
		p.IsError = sdk.Bool(true)
	}
	for _, c := range r.Content {
		if c.Type == "text" {
			p.Content = append(p.Content, sdk.ToolResultBlockParamContentUnion{OfText: &sdk.TextBlockParam{Text: c.Text}})
		}
	}
	return sdk.ContentBlockParamUnion{OfToolResult: &p}
}

// BetaToolResultBlock converts a result to a beta tool_result content block.
func BetaToolResultBlock(r toolexec.ToolResult) sdk.BetaContentBlockParamUnion {
	p := sdk.BetaToolResultBlockParam{ToolUseID: r.ToolUseID, Content: BetaContent(r)}
	if r.IsError {
		p.IsError = sdk.Bool(true)
	}
	return sdk.BetaContentBlockParamUnion{OfToolResult: &p}
}

// BetaContent converts a result's content blocks.
func BetaContent(r toolexec.ToolResult) []sdk.BetaToolResultBlockParamContentUnion {
	var out []sdk.BetaToolResultBlockParamContentUnion
	for _, c := range r.Content {
		if c.Type == "text" {
			out = append(out, sdk.BetaToolResultBlockParamContentUnion{OfText: &sdk.BetaTextBlockParam{Text: c.Text}})
		}
	}
	return out
}

// Answer executes every tool_use block of msg, in order, and returns the user
// message that answers them (the tool_result blocks, and nothing else) and
// whether msg had any tool use. A non-nil error is an infrastructure failure
// from [toolexec.Toolset.Execute]; the tool uses before it are answered, the
// rest are not, and the reply must not be sent as it is.
func Answer(ctx context.Context, ts *toolexec.Toolset, msg *sdk.Message) (sdk.MessageParam, bool, error) {
	var blocks []sdk.ContentBlockParamUnion
	for _, c := range msg.Content {
		if c.Type != "tool_use" {
			continue
		}
		res, err := ts.Execute(ctx, ToolUse(c.AsToolUse()))
		blocks = append(blocks, ToolResultBlock(res))
		if err != nil {
			return sdk.NewUserMessage(blocks...), true, err
		}
	}
	return sdk.NewUserMessage(blocks...), len(blocks) > 0, nil
}
