// Package toolexec executes an AI agent's tool calls inside a Perimeter
// sandbox and returns results ready to send back to the model.
//
// A host application's agent loop receives a tool_use block from the model
// (a name, an id and a JSON input), hands it to a [Toolset] bound to one
// sandbox and one conversation, and sends the returned [ToolResult] back as a
// tool_result block. The wire shapes are plain JSON, so this package needs no
// vendor SDK; the binding for the Anthropic Go SDK lives in the nested module
// toolexec/anthropic.
//
// The toolset implements Anthropic's schema-less client tools to the letter of
// their documentation and reference executors:
//
//   - "bash" (bash_20250124): one persistent shell per toolset;
//   - "str_replace_based_edit_tool" (text_editor_20250728);
//   - "memory" (memory_20250818), backed by a [FS] the host chooses;
//
// and the generic file tools of self-hosted agent environments: "read",
// "write", "edit", "glob" and "grep".
//
// # Errors
//
// The model's mistakes (an unknown tool, malformed input, a missing field, a
// file that does not exist) are results with IsError set whose text says
// exactly what was wrong; they are never Go errors and never panics.
// [Toolset.Execute] returns a Go error only for infrastructure failures: the
// sandbox cannot be reached, the context ended. Even then the returned result
// is a well-formed is_error result the host may send to the model.
//
// # Confinement
//
// toolexec depends on the sandbox contract only. Commands run through
// [sandbox.Sandbox.Start]; files go through the sandbox's file methods (the
// [FS] interface, which every [*sandbox.Sandbox] satisfies), whose names are
// sandbox paths. The editor and file tools additionally confine paths to the
// roots the host allows ([EditorOptions.Roots], [FilesOptions.Roots]); the
// memory tool confines every path to /memories.
package toolexec

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// Tool names, as the model sends them in tool_use blocks.
const (
	BashName   = "bash"
	EditorName = "str_replace_based_edit_tool"
	MemoryName = "memory"
	ReadName   = "read"
	WriteName  = "write"
	EditName   = "edit"
	GlobName   = "glob"
	GrepName   = "grep"
)

// Tool types, as they appear in a tool definition's "type" field.
const (
	BashType   = "bash_20250124"
	EditorType = "text_editor_20250728"
	MemoryType = "memory_20250818"
)

// ToolUse is a tool_use content block from an assistant message. Input stays
// raw JSON; each tool decodes and validates it.
type ToolUse struct {
	// Type is "tool_use" on the wire; it may be left empty when building a
	// ToolUse by hand.
	Type  string          `json:"type,omitempty"`
	ID    string          `json:"id"`
	Name  string          `json:"name"`
	Input json.RawMessage `json:"input"`
}

// Block is a content block of a tool result. toolexec produces text blocks.
type Block struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// TextBlock returns a text content block.
func TextBlock(text string) Block { return Block{Type: "text", Text: text} }

// ToolResult is a tool_result content block, to be sent in the next user
// message (before any text in it). It marshals as
// {"type":"tool_result","tool_use_id":...,"content":[...],"is_error":true},
// with is_error omitted on success and content an empty array when the tool
// produced no text.
type ToolResult struct {
	ToolUseID string  `json:"tool_use_id"`
	Content   []Block `json:"content"`
	IsError   bool    `json:"is_error,omitempty"`
}

// MarshalJSON writes the wire shape, with "type":"tool_result".
func (r ToolResult) MarshalJSON() ([]byte, error) {
	content := r.Content
	if content == nil {
		content = []Block{}
	}
	// HTML characters stay as they are (the caller's encoder decides), as
	// model output is full of them.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	err := enc.Encode(struct {
		Type      string  `json:"type"`
		ToolUseID string  `json:"tool_use_id"`
		Content   []Block `json:"content"`
		IsError   bool    `json:"is_error,omitempty"`
	}{"tool_result", r.ToolUseID, content, r.IsError})
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), err
}

// Text returns the concatenated text of the result's text blocks.
func (r ToolResult) Text() string {
	var b strings.Builder
	for _, c := range r.Content {
		if c.Type == "text" {
			b.WriteString(c.Text)
		}
	}
	return b.String()
}

// result builds a ToolResult from one text; empty text gives no blocks (the
// API refuses empty text blocks).
func result(id, text string, isError bool) ToolResult {
	r := ToolResult{ToolUseID: id, IsError: isError}
	if text != "" {
		r.Content = []Block{TextBlock(text)}
	}
	return r
}

// Definition is a tool definition for the request's tools array. The
// Anthropic client tools carry only Type and Name (their schema is built into
// the model); the generic file tools carry Name, Description and InputSchema.
type Definition struct {
	Type          string          `json:"type,omitempty"`
	Name          string          `json:"name"`
	MaxCharacters int             `json:"max_characters,omitempty"`
	Description   string          `json:"description,omitempty"`
	InputSchema   json.RawMessage `json:"input_schema,omitempty"`
}

// Target is what a toolset runs on: a sandbox's commands, files and declared
// capabilities. Every [*sandbox.Sandbox] is a Target.
type Target interface {
	// Start runs a command, as [sandbox.Sandbox.Start].
	Start(ctx context.Context, cmd *sandbox.Cmd) (*sandbox.Process, error)
	FS
	Capabilities() sandbox.Capabilities
}

// Options configures a [Toolset]. Nil means defaults.
type Options struct {
	// Tools lists the tool names the toolset answers to. Nil means bash, the
	// text editor and the five file tools, plus memory when Memory is set.
	// A tool use naming a tool not listed gets the unknown-tool result.
	Tools []string
	// Bash configures the bash tool.
	Bash BashOptions
	// Editor configures the text editor tool.
	Editor EditorOptions
	// Files configures the read, write, edit, glob and grep tools.
	Files FilesOptions
	// Memory is the store behind the memory tool: its "/" is /memories.
	// Use [Sub] for a directory in the sandbox (Sub(sb, "/memories")) or
	// [HostDir] for a host directory that outlives the sandbox. Nil disables
	// the memory tool.
	Memory FS
}

// Toolset executes tool uses for one conversation on one sandbox. Its bash
// tool keeps one shell session for the toolset's life. A Toolset is safe for
// concurrent use; bash calls are serialised on the one shell. Close it when
// the conversation ends.
type Toolset struct {
	target Target
	tools  map[string]func(ctx context.Context, input json.RawMessage) (string, bool, error)
	names  []string

	bash   *bashTool
	editor *editorTool
	memory *memoryTool
	files  *fileTools

	mu     sync.Mutex
	closed bool
}

// New returns a toolset running on target (usually a [sandbox.Sandbox]).
// It refuses, with an error naming the problem, a nil target, an unknown or
// repeated name in opts.Tools, the memory tool without opts.Memory, and
// negative limits.
func New(target Target, opts *Options) (*Toolset, error) {
	if target == nil {
		return nil, errors.New("toolexec: nil target")
	}
	if opts == nil {
		opts = &Options{}
	}
	switch {
	case opts.Bash.Timeout < 0:
		return nil, fmt.Errorf("toolexec: negative BashOptions.Timeout %v", opts.Bash.Timeout)
	case opts.Bash.OutputLimit < 0:
		return nil, fmt.Errorf("toolexec: negative BashOptions.OutputLimit %d", opts.Bash.OutputLimit)
	case opts.Editor.MaxCharacters < 0:
		return nil, fmt.Errorf("toolexec: negative EditorOptions.MaxCharacters %d", opts.Editor.MaxCharacters)
	case opts.Editor.MaxFileBytes < 0:
		return nil, fmt.Errorf("toolexec: negative EditorOptions.MaxFileBytes %d", opts.Editor.MaxFileBytes)
	case opts.Files.MaxFileBytes < 0:
		return nil, fmt.Errorf("toolexec: negative FilesOptions.MaxFileBytes %d", opts.Files.MaxFileBytes)
	}
	ts := &Toolset{target: target, tools: map[string]func(context.Context, json.RawMessage) (string, bool, error){}}
	ts.bash = newBashTool(target, opts.Bash)
	ts.editor = newEditorTool(target, opts.Editor)
	ts.files = newFileTools(target, opts.Files)
	all := map[string]func(context.Context, json.RawMessage) (string, bool, error){
		BashName:   ts.bash.run,
		EditorName: ts.editor.run,
		ReadName:   ts.files.read,
		WriteName:  ts.files.write,
		EditName:   ts.files.edit,
		GlobName:   ts.files.glob,
		GrepName:   ts.files.grep,
	}
	if opts.Memory != nil {
		ts.memory = &memoryTool{store: opts.Memory}
		all[MemoryName] = ts.memory.run
	}
	names := opts.Tools
	if names == nil {
		names = []string{BashName, EditorName, ReadName, WriteName, EditName, GlobName, GrepName}
		if opts.Memory != nil {
			names = append(names, MemoryName)
		}
	}
	for _, n := range names {
		f, ok := all[n]
		switch {
		case n == MemoryName && !ok:
			return nil, errors.New("toolexec: Options.Tools lists memory but Options.Memory is nil")
		case !ok:
			return nil, fmt.Errorf("toolexec: unknown tool %q in Options.Tools (known: %s, %s, %s, %s, %s, %s, %s, %s)",
				n, BashName, EditorName, MemoryName, ReadName, WriteName, EditName, GlobName, GrepName)
		case ts.tools[n] != nil:
			return nil, fmt.Errorf("toolexec: tool %q listed twice in Options.Tools", n)
		}
		ts.tools[n] = f
		ts.names = append(ts.names, n)
	}
	return ts, nil
}

// Names returns the names of the tools the toolset answers to, in the order
// of Options.Tools.
func (ts *Toolset) Names() []string { return slices.Clone(ts.names) }

// Definitions returns the tool definitions to put in a Messages API
// request's tools array for the toolset's tools.
func (ts *Toolset) Definitions() []Definition {
	var defs []Definition
	for _, n := range ts.names {
		switch n {
		case BashName:
			defs = append(defs, Definition{Type: BashType, Name: BashName})
		case EditorName:
			defs = append(defs, Definition{Type: EditorType, Name: EditorName, MaxCharacters: ts.editor.opts.MaxCharacters})
		case MemoryName:
			defs = append(defs, Definition{Type: MemoryType, Name: MemoryName})
		default:
			if d, ok := fileToolDefinitions[n]; ok {
				defs = append(defs, d)
			}
		}
	}
	return defs
}

// Execute runs one tool use and returns its result. The model's mistakes are
// results with IsError set. A non-nil error reports an infrastructure failure
// (the sandbox failed, ctx ended); the result is then still a well-formed
// is_error result naming the failure.
func (ts *Toolset) Execute(ctx context.Context, use ToolUse) (ToolResult, error) {
	ts.mu.Lock()
	closed := ts.closed
	ts.mu.Unlock()
	if closed {
		return result(use.ID, "Error: the toolset is closed", true), errors.New("toolexec: toolset is closed")
	}
	f, ok := ts.tools[use.Name]
	if !ok {
		return result(use.ID, fmt.Sprintf("Error: Tool '%s' not found", use.Name), true), nil
	}
	if err := checkObject(use.Input); err != nil {
		return result(use.ID, fmt.Sprintf("Error: invalid input for tool '%s': %v", use.Name, err), true), nil
	}
	return ts.run(ctx, use, f)
}

// run calls one tool. A panic in a tool is a bug of this package; it is
// reported as an error (and an is_error result) rather than taking the host
// down.
func (ts *Toolset) run(ctx context.Context, use ToolUse, f func(context.Context, json.RawMessage) (string, bool, error)) (res ToolResult, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("toolexec: internal error in tool %q: %v", use.Name, p)
			res = result(use.ID, "Error: "+err.Error(), true)
		}
	}()
	text, isErr, err := f(ctx, use.Input)
	return result(use.ID, text, isErr), err
}

// checkObject reports whether input is a JSON object.
func checkObject(input json.RawMessage) error {
	s := strings.TrimSpace(string(input))
	if s == "" {
		return errors.New("input is missing; want a JSON object")
	}
	if s[0] != '{' {
		return errors.New("input is not a JSON object")
	}
	if !json.Valid(input) {
		return errors.New("input is not valid JSON")
	}
	return nil
}

// Close ends the bash session (killing its process tree). It is idempotent.
// Execute fails after Close.
func (ts *Toolset) Close() error {
	ts.mu.Lock()
	if ts.closed {
		ts.mu.Unlock()
		return nil
	}
	ts.closed = true
	ts.mu.Unlock()
	return ts.bash.close()
}

// decode unmarshals input into v and returns the is_error text naming what
// was wrong. Unknown fields are ignored: the model may send fields of newer
// tool versions.
func decode(tool string, input json.RawMessage, v any) (string, bool) {
	if err := json.Unmarshal(input, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return fmt.Sprintf("Error: invalid %s input: field `%s` must be %s, not %s", tool, te.Field, jsonKind(te.Type.Kind().String()), te.Value), true
		}
		return fmt.Sprintf("Error: invalid %s input: %v", tool, err), true
	}
	return "", false
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "int", "int64":
		return "an integer"
	case "slice":
		return "an array"
	case "ptr":
		return "a value of the documented type"
	}
	return "a value of the documented type"
}
