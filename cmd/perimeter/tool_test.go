package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestToolJSONLines(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	mem := t.TempDir()
	in := strings.Join([]string{
		`{"type":"tool_use","id":"toolu_1","name":"bash","input":{"command":"export X=kept"}}`,
		`{"id":"toolu_2","name":"bash","input":{"command":"echo $X"}}`,
		``,
		`not json`,
		`{"id":"toolu_3","name":"str_replace_based_edit_tool","input":{"command":"create","path":"/workspace/a.txt","file_text":"<hello>\n"}}`,
		`{"id":"toolu_4","name":"str_replace_based_edit_tool","input":{"command":"view","path":"/workspace/a.txt"}}`,
		`{"id":"toolu_5","name":"memory","input":{"command":"create","path":"/memories/m.md","file_text":"remember"}}`,
		`{"id":"toolu_6","name":"nope","input":{}}`,
	}, "\n")
	code, out, errOut := cli(t, in, "tool", "--provider", "local://"+root, "--memory", mem)
	require.Equal(t, 0, code, errOut)
	want := strings.Join([]string{
		`{"type":"tool_result","tool_use_id":"toolu_1","content":[]}`,
		`{"type":"tool_result","tool_use_id":"toolu_2","content":[{"type":"text","text":"kept\n"}]}`,
		`{"type":"tool_result","tool_use_id":"","content":[{"type":"text","text":"Error: line 4 is not a tool use: invalid character 'o' in literal null (expecting 'u')"}],"is_error":true}`,
		`{"type":"tool_result","tool_use_id":"toolu_3","content":[{"type":"text","text":"File created successfully at: /workspace/a.txt"}]}`,
		"{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_4\",\"content\":[{\"type\":\"text\",\"text\":\"Here's the result of running `cat -n` on /workspace/a.txt:\\n     1\\t<hello>\\n\"}]}",
		`{"type":"tool_result","tool_use_id":"toolu_5","content":[{"type":"text","text":"File created successfully at: /memories/m.md"}]}`,
		`{"type":"tool_result","tool_use_id":"toolu_6","content":[{"type":"text","text":"Error: Tool 'nope' not found"}],"is_error":true}`,
	}, "\n") + "\n"
	assert.Equal(t, want, out)
	got, err := os.ReadFile(filepath.Join(mem, "m.md"))
	require.NoError(t, err)
	assert.Equal(t, "remember", string(got))
	entries, err := os.ReadDir(root)
	require.NoError(t, err)
	assert.Empty(t, entries, "tool must terminate its sandbox")
}

func TestToolFlags(t *testing.T) {
	t.Parallel()
	code, _, errOut := cli(t, "", "tool", "extra-arg")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, `unexpected argument "extra-arg"`)

	code, out, _ := cli(t, `{"id":"t","name":"read","input":{"file_path":"x"}}`, "tool", "--provider", providerURL(t), "--tools", "bash")
	assert.Equal(t, 0, code)
	assert.Contains(t, out, `"Error: Tool 'read' not found"`)

	code, _, errOut = cli(t, "", "tool", "--provider", providerURL(t), "--tools", "bash,bsah")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, `unknown tool "bsah"`)

	code, _, errOut = cli(t, "", "tool", "--provider", "nosuchscheme://x")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "nosuchscheme")
}
