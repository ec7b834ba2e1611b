package toolexectest

import (
	"strings"
	"testing"

	"github.com/perimeter-sdk/perimeter/toolexec"
)

const mem = toolexec.MemoryName

func (h *harness) memory(t *testing.T) {
	t.Run("sandbox-store", func(t *testing.T) {
		e := h.env(t, nil)
		store := e.base + "/memstore"
		e.reopen(&toolexec.Options{Memory: toolexec.Sub(e.sb, store)})
		MemoryCommands(t, func(name string, input any) toolexec.ToolResult { return e.call(name, input) })
		if got := string(e.readFile(store + "/notes/todo.md")); got != "zero\nfirst\nthird\nfourth\n" {
			t.Errorf("the store in the sandbox holds %q", got)
		}
	})
}

// MemoryCommands exercises every memory command and its documented strings
// against a toolset whose memory store is empty. call runs one tool use.
// It is exported so a host store (or any other) can be checked the same way.
func MemoryCommands(t *testing.T, call func(name string, input any) toolexec.ToolResult) {
	t.Helper()
	want := func(r toolexec.ToolResult, text string, isError bool) {
		t.Helper()
		if r.Text() != text || r.IsError != isError {
			t.Errorf("result = (%q, is_error=%v)\nwant     (%q, is_error=%v)", r.Text(), r.IsError, text, isError)
		}
	}
	type m = map[string]any
	// Strings are the documentation's (memory tool page, "Tool commands":
	// https://platform.claude.com/docs/en/agents-and-tools/tool-use/memory-tool)
	// where it gives one, with its "Error: " prefix where it has one.
	// Where the Python reference (_beta_builtin_memory_tool.py) differs,
	// the documentation wins: "File {path} already exists" (Python) is
	// "Error: File {path} already exists" (docs); its insert range "It should
	// be within the range [0, {n}]." is the docs' "It should be within the
	// range of lines of the file: [0, {n}]". Cases the documentation does
	// not cover keep the Python wording with the "Error: " prefix the
	// TypeScript SDK sends.
	// Creation, with parents.
	want(call(mem, m{"command": "create", "path": "/memories/notes/todo.md", "file_text": "first\nsecond\nthird\n"}),
		"File created successfully at: /memories/notes/todo.md", false)
	want(call(mem, m{"command": "create", "path": "/memories/notes/todo.md", "file_text": "x"}),
		"Error: File /memories/notes/todo.md already exists", true)
	// View of a file and a range.
	want(call(mem, m{"command": "view", "path": "/memories/notes/todo.md"}),
		"Here's the content of /memories/notes/todo.md with line numbers:\n     1\tfirst\n     2\tsecond\n     3\tthird\n     4\t", false)
	want(call(mem, m{"command": "view", "path": "/memories/notes/todo.md", "view_range": []int{2, -1}}),
		"Here's the content of /memories/notes/todo.md with line numbers:\n     2\tsecond\n     3\tthird\n     4\t", false)
	want(call(mem, m{"command": "view", "path": "/memories/notes/todo.md", "view_range": []int{1, 2}}),
		"Here's the content of /memories/notes/todo.md with line numbers:\n     1\tfirst\n     2\tsecond", false)
	want(call(mem, m{"command": "view", "path": "/memories/nothing"}),
		"The path /memories/nothing does not exist. Please provide a valid path.", true)
	// str_replace.
	want(call(mem, m{"command": "str_replace", "path": "/memories/notes/todo.md", "old_str": "fourth", "new_str": "x"}),
		"No replacement was performed, old_str `fourth` did not appear verbatim in /memories/notes/todo.md.", true)
	want(call(mem, m{"command": "str_replace", "path": "/memories/notes/todo.md", "old_str": "i", "new_str": "x"}),
		"No replacement was performed. Multiple occurrences of old_str `i` in lines: 1, 3. Please ensure it is unique", true)
	want(call(mem, m{"command": "str_replace", "path": "/memories/notes/todo.md", "old_str": "second\n", "new_str": ""}),
		"The memory file has been edited. Here is the snippet showing the change (with line numbers):\n     1\tfirst\n     2\tthird\n     3\t", false)
	want(call(mem, m{"command": "str_replace", "path": "/memories/none.md", "old_str": "a", "new_str": "b"}),
		"Error: The path /memories/none.md does not exist. Please provide a valid path.", true)
	// Docs: "If the path is a directory, return a 'file does not exist' error."
	want(call(mem, m{"command": "str_replace", "path": "/memories/notes", "old_str": "a", "new_str": "b"}),
		"Error: The path /memories/notes does not exist. Please provide a valid path.", true)
	// insert.
	want(call(mem, m{"command": "insert", "path": "/memories/notes/todo.md", "insert_line": 0, "insert_text": "zero\n"}),
		"The file /memories/notes/todo.md has been edited.", false)
	want(call(mem, m{"command": "insert", "path": "/memories/notes/todo.md", "insert_line": 3, "insert_text": "fourth"}),
		"The file /memories/notes/todo.md has been edited.", false)
	want(call(mem, m{"command": "insert", "path": "/memories/notes/todo.md", "insert_line": 5, "insert_text": "x"}),
		"Error: Invalid `insert_line` parameter: 5. It should be within the range of lines of the file: [0, 4]", true)
	want(call(mem, m{"command": "insert", "path": "/memories/gone.md", "insert_line": 0, "insert_text": "x"}),
		"Error: The path /memories/gone.md does not exist", true)
	want(call(mem, m{"command": "insert", "path": "/memories/notes", "insert_line": 0, "insert_text": "x"}),
		"Error: The path /memories/notes does not exist", true)
	// Directory view: sizes, sorted, hidden entries and node_modules
	// skipped, 2 levels.
	call(mem, m{"command": "create", "path": "/memories/a/b/c/deep.md", "file_text": "deep"})
	call(mem, m{"command": "create", "path": "/memories/node_modules/x/package.json", "file_text": "{}"})
	call(mem, m{"command": "create", "path": "/memories/.hidden", "file_text": "h"})
	call(mem, m{"command": "create", "path": "/memories/big.md", "file_text": strings.Repeat("x", 1536)})
	r := call(mem, m{"command": "view", "path": "/memories"})
	lines := strings.Split(r.Text(), "\n")
	var names []string
	for _, l := range lines[1:] {
		_, name, _ := strings.Cut(l, "\t")
		names = append(names, name)
	}
	if lines[0] != "Here're the files and directories up to 2 levels deep in /memories, excluding hidden items and node_modules:" ||
		strings.Join(names, " ") != "/memories /memories/a/ /memories/a/b/ /memories/big.md /memories/notes/ /memories/notes/todo.md" {
		t.Errorf("directory view = %q", r.Text())
	}
	if !strings.Contains(r.Text(), "1.5K\t/memories/big.md\n") {
		t.Errorf("directory view lacks the human-readable size 1.5K of big.md: %q", r.Text())
	}
	// Confinement.
	want(call(mem, m{"command": "view", "path": "/etc/passwd"}), "Error: Path must start with /memories, got: /etc/passwd", true)
	want(call(mem, m{"command": "view", "path": "/memoriesX"}), "Error: Path must start with /memories, got: /memoriesX", true)
	want(call(mem, m{"command": "view", "path": "/memories/../etc/passwd"}), "Error: Path /memories/../etc/passwd would escape /memories directory", true)
	want(call(mem, m{"command": "create", "path": "/memories/a/../../x", "file_text": "x"}), "Error: Path /memories/a/../../x would escape /memories directory", true)
	// rename.
	want(call(mem, m{"command": "rename", "old_path": "/memories/big.md", "new_path": "/memories/notes/todo.md"}),
		"Error: The destination /memories/notes/todo.md already exists", true)
	want(call(mem, m{"command": "rename", "old_path": "/memories/none", "new_path": "/memories/other"}),
		"Error: The path /memories/none does not exist", true)
	want(call(mem, m{"command": "rename", "old_path": "/memories/big.md", "new_path": "/memories/archive/big.md"}),
		"Successfully renamed /memories/big.md to /memories/archive/big.md", false)
	want(call(mem, m{"command": "rename", "old_path": "/memories/big.md", "new_path": "/tmp/x"}),
		"Error: Path must start with /memories, got: /tmp/x", true)
	// delete.
	want(call(mem, m{"command": "delete", "path": "/memories"}), "Error: Cannot delete the /memories directory itself", true)
	want(call(mem, m{"command": "delete", "path": "/memories/"}), "Error: Cannot delete the /memories directory itself", true)
	want(call(mem, m{"command": "delete", "path": "/memories/none"}), "Error: The path /memories/none does not exist", true)
	want(call(mem, m{"command": "delete", "path": "/memories/a"}), "Successfully deleted /memories/a", false)
	want(call(mem, m{"command": "delete", "path": "/memories/archive/big.md"}), "Successfully deleted /memories/archive/big.md", false)
	want(call(mem, m{"command": "view", "path": "/memories/a"}), "The path /memories/a does not exist. Please provide a valid path.", true)
	// Bad input.
	want(call(mem, m{"command": "create", "path": "/memories/x"}), "Error: Parameter `file_text` is required for command: create", true)
	want(call(mem, m{"command": "frobnicate", "path": "/memories"}),
		"Error: Unknown command: frobnicate. The memory tool's commands are: view, create, str_replace, insert, delete, rename", true)
}
