package toolexec_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"

	"github.com/perimeter-sdk/perimeter/providers/local"
	"github.com/perimeter-sdk/perimeter/toolexec"
)

// A host's agent loop hands each tool_use block from the model to a Toolset
// bound to the conversation's sandbox and sends the result back as a
// tool_result block.
func ExampleToolset() {
	ctx := context.Background()
	root, err := os.MkdirTemp("", "perimeter-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(root)
	provider, err := local.New(&local.Options{Root: root})
	if err != nil {
		log.Fatal(err)
	}
	sb, err := provider.Create(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer sb.Terminate(ctx)

	tools, err := toolexec.New(sb, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer tools.Close()

	// As received in an assistant message.
	for _, block := range []string{
		`{"type":"tool_use","id":"toolu_01","name":"bash","input":{"command":"export NAME=world"}}`,
		`{"type":"tool_use","id":"toolu_02","name":"bash","input":{"command":"echo hello $NAME"}}`,
		`{"type":"tool_use","id":"toolu_03","name":"str_replace_based_edit_tool","input":{"command":"create","path":"/workspace/hello.txt","file_text":"hi\n"}}`,
		`{"type":"tool_use","id":"toolu_04","name":"str_replace_based_edit_tool","input":{"command":"str_replace","path":"/workspace/hello.txt","old_str":"bye","new_str":"x"}}`,
	} {
		var use toolexec.ToolUse
		if err := json.Unmarshal([]byte(block), &use); err != nil {
			log.Fatal(err)
		}
		res, err := tools.Execute(ctx, use)
		if err != nil {
			log.Fatal(err) // the sandbox failed, not the model
		}
		out, _ := json.Marshal(res)
		fmt.Println(string(out))
	}
	// Output:
	// {"type":"tool_result","tool_use_id":"toolu_01","content":[]}
	// {"type":"tool_result","tool_use_id":"toolu_02","content":[{"type":"text","text":"hello world\n"}]}
	// {"type":"tool_result","tool_use_id":"toolu_03","content":[{"type":"text","text":"File created successfully at: /workspace/hello.txt"}]}
	// {"type":"tool_result","tool_use_id":"toolu_04","content":[{"type":"text","text":"Error: No match found for replacement. Please check your text and try again."}],"is_error":true}
}
