package toolexec_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/providers/local"
	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
	"github.com/perimeter-sdk/perimeter/toolexec"
)

// newSandbox returns a fresh local sandbox in the unisolated mode (the file
// methods' "/" is the workspace, commands run on pipes), terminated at the end
// of the test. The battery also runs on the isolated mode: TestBatteryLocal.
func newSandbox(t testing.TB) *sandbox.Sandbox {
	t.Helper()
	return newLocalSandbox(t, &local.Options{Root: t.TempDir(), Unisolated: true})
}

// openEgress is the spec the unisolated local mode needs: its plain host
// processes share the host's network.
var openEgress = &sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}}

// newIsolatedSandbox returns a fresh sandbox of the local provider's default,
// isolated mode (a PTY, "/workspace" as the working directory).
func newIsolatedSandbox(t testing.TB) *sandbox.Sandbox {
	t.Helper()
	return newLocalSandbox(t, &local.Options{Root: t.TempDir()})
}

func newLocalSandbox(t testing.TB, opts *local.Options) *sandbox.Sandbox {
	t.Helper()
	return newWrappedSandbox(t, opts, nil)
}

// wrapDriver is the local driver with its sandboxes wrapped, for test
// stand-ins of other providers.
type wrapDriver struct {
	*local.Provider
	wrap func(*local.Sandbox) driver.Sandbox
}

func (w wrapDriver) Create(ctx context.Context, spec *sandbox.Spec) (driver.Sandbox, error) {
	d, err := w.Provider.Create(ctx, spec)
	if err != nil {
		return nil, err
	}
	return w.wrap(d.(*local.Sandbox)), nil
}

// newWrappedSandbox returns a local sandbox, through wrap if not nil,
// terminated at the end of the test.
func newWrappedSandbox(t testing.TB, opts *local.Options, wrap func(*local.Sandbox) driver.Sandbox) *sandbox.Sandbox {
	t.Helper()
	d, err := local.NewDriver(opts)
	require.NoError(t, err)
	var dp driver.Provider = d
	if wrap != nil {
		dp = wrapDriver{d, wrap}
	}
	p := sandbox.NewProvider(dp, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var spec *sandbox.Spec
	if opts.Unisolated {
		spec = openEgress
	}
	sb, err := p.Create(ctx, spec)
	require.NoError(t, err)
	t.Cleanup(func() {
		sb.Terminate(context.Background())
		p.Close()
	})
	return sb
}

func newToolset(t testing.TB, sb toolexec.Target, opts *toolexec.Options) *toolexec.Toolset {
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
