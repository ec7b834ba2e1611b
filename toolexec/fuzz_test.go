package toolexec_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/perimeter-sdk/perimeter/toolexec"
)

// FuzzFileToolInput feeds arbitrary input to the editor, memory and file
// tools: the model's input, however wrong, must give a result, never a
// panic and never an infrastructure error.
func FuzzFileToolInput(f *testing.F) {
	seeds := []struct {
		tool  uint8
		input string
	}{
		{0, `{"command":"view","path":"/"}`},
		{0, `{"command":"create","path":"/a","file_text":"x\ny\n"}`},
		{0, `{"command":"str_replace","path":"/a","old_str":"x","new_str":"z"}`},
		{0, `{"command":"insert","path":"/a","insert_line":1,"insert_text":"q"}`},
		{0, `{"command":"view","path":"/a","view_range":[2,-1]}`},
		{0, `{"command":"view","path":"/a","view_range":[-5,1000000000000]}`},
		{0, `{"command":"insert","path":"/a","insert_line":-9223372036854775808,"new_str":""}`},
		{1, `{"command":"view","path":"/memories/../.."}`},
		{1, `{"command":"create","path":"/memories/x","file_text":""}`},
		{1, `{"command":"view","path":"/memories/x","view_range":[0,0]}`},
		{1, `{"command":"rename","old_path":"/memories/x","new_path":"/memories/x/y"}`},
		{2, `{"file_path":"a","view_range":[3,1]}`},
		{2, `{"file_path":"a","offset":-1}`},
		{3, `{"pattern":"**/**/*[","path":"."}`},
		{4, `{"pattern":"(?i)x{1000}"}`},
		{5, `{"file_path":"a","old_string":"","new_string":null}`},
		{6, `{"file_path":"","content":5}`},
	}
	for _, s := range seeds {
		f.Add(s.tool, s.input)
	}
	sb := newSandbox(f)
	store, err := toolexec.HostDir(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { store.Close() })
	ts, err := toolexec.New(sb, &toolexec.Options{Memory: store, Tools: []string{toolexec.EditorName, "memory", "read", "glob", "grep", "edit", "write"}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { ts.Close() })
	names := ts.Names()
	f.Fuzz(func(t *testing.T, tool uint8, input string) {
		name := names[int(tool)%len(names)]
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		res, err := ts.Execute(ctx, toolexec.ToolUse{ID: "f", Name: name, Input: json.RawMessage(input)})
		if err != nil {
			t.Fatalf("%s %s: infrastructure error %v (result %q)", name, input, err, res.Text())
		}
		if res.ToolUseID != "f" {
			t.Fatalf("tool_use_id = %q", res.ToolUseID)
		}
		if _, err := json.Marshal(res); err != nil {
			t.Fatal(err)
		}
	})
}
