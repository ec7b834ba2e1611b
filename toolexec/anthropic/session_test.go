package anthropic_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	sdk "github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/tools/agenttoolset"

	"github.com/perimeter-sdk/perimeter/providers/local"
	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
	perimeter "github.com/perimeter-sdk/perimeter/toolexec/anthropic"
)

func toolByName(tools []sdk.BetaTool, name string) sdk.BetaTool {
	for _, t := range tools {
		if t.Name() == name {
			return t
		}
	}
	return nil
}

func TestToolsFuncGivesEachSessionASandbox(t *testing.T) {
	root := t.TempDir()
	p, err := local.New(&local.Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	toolsFunc := perimeter.ToolsFunc(ctx, p, nil, nil)
	tools := toolsFunc(&agenttoolset.AgentToolContext{Workdir: t.TempDir(), MaxFileBytes: 10})
	for _, name := range []string{"bash", "read", "write", "edit", "glob", "grep"} {
		if toolByName(tools, name) == nil {
			t.Fatalf("no %s tool among %d", name, len(tools))
		}
	}
	out, err := toolByName(tools, "bash").Execute(ctx, json.RawMessage(`{"command":"echo in-sandbox > f.txt; cat f.txt"}`))
	if err != nil || len(out) != 1 || out[0].OfText.Text != "in-sandbox\n" {
		t.Fatalf("bash = %v, %v", out, err)
	}
	_, err = toolByName(tools, "read").Execute(ctx, json.RawMessage(`{"file_path":"f.txt"}`))
	if err == nil || !strings.Contains(err.Error(), "exceeds 10-byte limit") {
		t.Errorf("read with the session's MaxFileBytes = %v", err)
	}
	entries, _ := os.ReadDir(root)
	if len(entries) != 1 {
		t.Fatalf("%d sandboxes under the provider root, want 1", len(entries))
	}
	agenttoolset.CloseAll(tools)
	agenttoolset.CloseAll(tools) // twice: harmless
	entries, _ = os.ReadDir(root)
	if len(entries) != 0 {
		t.Errorf("the session's sandbox was not terminated by CloseAll: %v", entries)
	}
}

// brokenProvider is a driver whose every creation fails.
type brokenProvider struct{ driver.Provider }

func (brokenProvider) Name() string { return "broken" }

func (brokenProvider) Create(context.Context, *sandbox.Spec) (driver.Sandbox, error) {
	return nil, errors.New("quota exceeded")
}

func TestToolsFuncReportsAFailedSandbox(t *testing.T) {
	tools := perimeter.ToolsFunc(context.Background(), sandbox.NewProvider(brokenProvider{}, nil), nil, nil)(&agenttoolset.AgentToolContext{})
	if len(tools) != 6 {
		t.Fatalf("%d tools, want the six agent tools", len(tools))
	}
	_, err := toolByName(tools, "bash").Execute(context.Background(), json.RawMessage(`{"command":"true"}`))
	if err == nil || err.Error() != "creating the session's sandbox: broken: create: unavailable: quota exceeded" {
		t.Errorf("err = %v", err)
	}
}
