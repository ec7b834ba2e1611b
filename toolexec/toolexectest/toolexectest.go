// Package toolexectest is a battery of tests that runs every toolexec tool
// against a sandbox provider, so that any provider (the local one, a cloud
// adapter, a third party's) can show that the agent tools behave on it as
// documented. Call [Run] from a provider's own test:
//
//	func TestToolexec(t *testing.T) {
//		toolexectest.Run(t, func(t *testing.T) *sandbox.Sandbox {
//			sb, err := provider.Create(ctx, nil)
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { sb.Terminate(context.Background()) })
//			return sb
//		}, nil)
//	}
//
// The battery uses the sandbox's file methods under /tmp and runs
// /bin/bash; the sandbox needs both. Subtest names are stable.
package toolexectest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/toolexec"
)

// Options tunes the battery. Nil means defaults.
type Options struct {
	// CallTimeout bounds each tool call; zero means two minutes.
	CallTimeout time.Duration
}

// Run runs the battery. newSandbox returns a fresh sandbox for a subtest and
// arranges its termination with t.Cleanup.
func Run(t *testing.T, newSandbox func(t *testing.T) *sandbox.Sandbox, opts *Options) {
	if opts == nil {
		opts = &Options{}
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 2 * time.Minute
	}
	h := &harness{newSandbox: newSandbox, opts: opts}
	t.Run("bash", h.bash)
	t.Run("editor", h.editor)
	t.Run("memory", h.memory)
	t.Run("files", h.files)
	t.Run("dispatch", h.dispatch)
}

type harness struct {
	newSandbox func(t *testing.T) *sandbox.Sandbox
	opts       *Options
}

// env is one subtest's sandbox, toolset and scratch directory.
type env struct {
	t    *testing.T
	h    *harness
	sb   *sandbox.Sandbox
	ts   *toolexec.Toolset
	base string // a fresh directory for this subtest, in sandbox terms
}

func (h *harness) env(t *testing.T, opts *toolexec.Options) *env {
	t.Helper()
	sb := h.newSandbox(t)
	base := "/tmp/toolexectest-" + randHex(t)
	ctx, cancel := context.WithTimeout(context.Background(), h.opts.CallTimeout)
	defer cancel()
	if err := sb.MkdirAll(ctx, base, 0o755); err != nil {
		t.Fatalf("MkdirAll(%s): %v", base, err)
	}
	if opts == nil {
		opts = &toolexec.Options{}
	}
	ts, err := toolexec.New(sb, opts)
	if err != nil {
		t.Fatalf("toolexec.New: %v", err)
	}
	t.Cleanup(func() {
		if err := ts.Close(); err != nil {
			t.Errorf("Toolset.Close: %v", err)
		}
	})
	return &env{t: t, h: h, sb: sb, ts: ts, base: base}
}

// reopen replaces the subtest's toolset with one made with opts.
func (e *env) reopen(opts *toolexec.Options) {
	e.t.Helper()
	e.ts.Close()
	ts, err := toolexec.New(e.sb, opts)
	if err != nil {
		e.t.Fatalf("toolexec.New: %v", err)
	}
	e.ts = ts
	e.t.Cleanup(func() { ts.Close() })
}

func randHex(t *testing.T) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// call executes a tool use and fails the test on an infrastructure error.
func (e *env) call(name string, input any) toolexec.ToolResult {
	e.t.Helper()
	raw, err := json.Marshal(input)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.callRaw(name, raw)
}

func (e *env) callRaw(name string, raw json.RawMessage) toolexec.ToolResult {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), e.h.opts.CallTimeout)
	defer cancel()
	res, err := e.ts.Execute(ctx, toolexec.ToolUse{ID: "toolu_battery", Name: name, Input: raw})
	if err != nil {
		e.t.Fatalf("Execute(%s, %s): infrastructure error: %v (result %q)", name, raw, err, res.Text())
	}
	if res.ToolUseID != "toolu_battery" {
		e.t.Fatalf("Execute(%s): tool_use_id = %q, want toolu_battery", name, res.ToolUseID)
	}
	return res
}

// want checks a result's text and error flag exactly.
func (e *env) want(res toolexec.ToolResult, text string, isError bool) {
	e.t.Helper()
	if res.Text() != text || res.IsError != isError {
		e.t.Errorf("result = (%q, is_error=%v)\nwant     (%q, is_error=%v)", res.Text(), res.IsError, text, isError)
	}
}

func (e *env) wantPrefix(res toolexec.ToolResult, prefix string, isError bool) {
	e.t.Helper()
	if !strings.HasPrefix(res.Text(), prefix) || res.IsError != isError {
		e.t.Errorf("result = (%q, is_error=%v)\nwant prefix (%q, is_error=%v)", res.Text(), res.IsError, prefix, isError)
	}
}

// readFile reads a sandbox file through the file API.
func (e *env) readFile(name string) []byte {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), e.h.opts.CallTimeout)
	defer cancel()
	rc, err := e.sb.ReadFile(ctx, name)
	if err != nil {
		e.t.Fatalf("ReadFile(%s): %v", name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		e.t.Fatalf("ReadFile(%s): %v", name, err)
	}
	return b
}

func (e *env) writeFile(name string, data []byte) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), e.h.opts.CallTimeout)
	defer cancel()
	if err := e.sb.WriteFile(ctx, name, bytes.NewReader(data), 0o644); err != nil {
		e.t.Fatalf("WriteFile(%s): %v", name, err)
	}
}

func (e *env) exists(name string) bool {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), e.h.opts.CallTimeout)
	defer cancel()
	_, err := e.sb.Stat(ctx, name)
	return err == nil
}

// binaryData is every byte value, twice, with CR, LF and NUL runs.
func binaryData() []byte {
	var b []byte
	for i := 0; i < 512; i++ {
		b = append(b, byte(i))
	}
	return append(b, "\r\n\x00\x00\n\r"...)
}

func (h *harness) dispatch(t *testing.T) {
	e := h.env(t, nil)
	e.want(e.call("no_such_tool", map[string]any{}), "Error: Tool 'no_such_tool' not found", true)
	e.want(e.callRaw("bash", json.RawMessage(`[1,2]`)), "Error: invalid input for tool 'bash': input is not a JSON object", true)
	e.want(e.callRaw("bash", json.RawMessage(`{"command":`)), "Error: invalid input for tool 'bash': input is not valid JSON", true)
	e.want(e.callRaw("bash", nil), "Error: invalid input for tool 'bash': input is missing; want a JSON object", true)
	e.want(e.call("bash", map[string]any{"command": 5}), "Error: invalid bash input: field `command` must be a string, not number", true)
	e.want(e.call(toolexec.EditorName, map[string]any{"command": "view", "path": 7}), "Error: invalid str_replace_based_edit_tool input: field `path` must be a string, not number", true)
}

var _ = fmt.Sprintf
