package toolexec_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/providers/local"
	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/toolexec"
)

// newSandbox returns a fresh local sandbox, terminated at the end of the test.
func newSandbox(t testing.TB) sandbox.Sandbox {
	t.Helper()
	p, err := local.New(&local.Options{Root: t.TempDir()})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sb, err := p.Create(ctx, nil)
	require.NoError(t, err)
	t.Cleanup(func() {
		sb.Terminate(context.Background())
		p.Close()
	})
	return sb
}

func newToolset(t testing.TB, sb sandbox.Sandbox, opts *toolexec.Options) *toolexec.Toolset {
	t.Helper()
	ts, err := toolexec.New(sb, opts)
	require.NoError(t, err)
	t.Cleanup(func() { ts.Close() })
	return ts
}

// call runs one tool use with the given input (marshalled to JSON) and
// requires no infrastructure error.
func call(t testing.TB, ts *toolexec.Toolset, name string, input any) toolexec.ToolResult {
	t.Helper()
	raw, err := json.Marshal(input)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := ts.Execute(ctx, toolexec.ToolUse{ID: "toolu_test", Name: name, Input: raw})
	require.NoError(t, err)
	require.Equal(t, "toolu_test", res.ToolUseID)
	return res
}

type m = map[string]any
