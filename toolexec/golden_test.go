package toolexec_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/toolexec"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestGoldenWireJSON replays each testdata/NAME.input.jsonl (tool_use
// blocks, one a line, in one conversation on a fresh local sandbox) and
// compares the tool_result blocks, as wire JSON one a line, with
// testdata/NAME.golden. Run with -update to rewrite them after a deliberate
// change, and review the diff.
func TestGoldenWireJSON(t *testing.T) {
	cases := map[string]func(t *testing.T) *toolexec.Options{
		"bash": func(t *testing.T) *toolexec.Options {
			return &toolexec.Options{Bash: toolexec.BashOptions{Timeout: time.Second}}
		},
		"editor": func(t *testing.T) *toolexec.Options { return nil },
		"memory": func(t *testing.T) *toolexec.Options {
			store, err := toolexec.HostDir(t.TempDir())
			require.NoError(t, err)
			t.Cleanup(func() { store.Close() })
			return &toolexec.Options{Memory: store}
		},
		"files": func(t *testing.T) *toolexec.Options { return nil },
		"dispatch": func(t *testing.T) *toolexec.Options {
			return &toolexec.Options{Tools: []string{"bash", toolexec.EditorName}}
		},
	}
	for name, opts := range cases {
		t.Run(name, func(t *testing.T) {
			ts := newToolset(t, newSandbox(t), opts(t))
			in, err := os.Open(filepath.Join("testdata", name+".input.jsonl"))
			require.NoError(t, err)
			defer in.Close()
			var out bytes.Buffer
			sc := bufio.NewScanner(in)
			for sc.Scan() {
				var use toolexec.ToolUse
				require.NoError(t, json.Unmarshal(sc.Bytes(), &use))
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				res, err := ts.Execute(ctx, use)
				cancel()
				require.NoError(t, err, "tool use %s", use.ID)
				enc := json.NewEncoder(&out)
				enc.SetEscapeHTML(false)
				require.NoError(t, enc.Encode(res))
			}
			require.NoError(t, sc.Err())
			golden := filepath.Join("testdata", name+".golden")
			if *update {
				require.NoError(t, os.WriteFile(golden, out.Bytes(), 0o644))
				return
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "run with -update to create it")
			require.Equal(t, string(want), out.String())
		})
	}
}
