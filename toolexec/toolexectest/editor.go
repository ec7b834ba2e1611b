package toolexectest

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/perimeter-sdk/perimeter/toolexec"
)

const ed = toolexec.EditorName

const truncated = "<response clipped><NOTE>To save on context only part of this file has been shown to you. You should retry this tool after you have searched inside the file with `grep -n` in order to find the line numbers of what you are looking for.</NOTE>"

func (h *harness) editor(t *testing.T) {
	t.Run("create-and-view", func(t *testing.T) {
		e := h.env(t, nil)
		p := e.base + "/sub/dir/prime.py"
		e.want(e.call(ed, map[string]any{"command": "create", "path": p, "file_text": "def is_prime(n):\n    return n > 1\n"}), "File created successfully at: "+p, false)
		if got := string(e.readFile(p)); got != "def is_prime(n):\n    return n > 1\n" {
			t.Errorf("created file holds %q", got)
		}
		e.want(e.call(ed, map[string]any{"command": "view", "path": p}),
			"Here's the result of running `cat -n` on "+p+":\n     1\tdef is_prime(n):\n     2\t    return n > 1\n", false)
		e.want(e.call(ed, map[string]any{"command": "create", "path": p, "file_text": "x"}),
			"File already exists at: "+p+". Cannot overwrite files using command `create`.", true)
		e.want(e.call(ed, map[string]any{"command": "create", "path": e.base + "/sub", "file_text": "x"}),
			"The path "+e.base+"/sub is a directory and only the `view` command can be used on directories", true)
		e.want(e.call(ed, map[string]any{"command": "create", "path": p}), "Parameter `file_text` is required for command: create", true)
	})
	t.Run("create-overwrite-policy", func(t *testing.T) {
		e := h.env(t, &toolexec.Options{Editor: toolexec.EditorOptions{AllowOverwrite: true}})
		p := e.base + "/f.txt"
		e.call(ed, map[string]any{"command": "create", "path": p, "file_text": "one"})
		e.want(e.call(ed, map[string]any{"command": "create", "path": p, "file_text": "two"}), "File created successfully at: "+p, false)
		if got := string(e.readFile(p)); got != "two" {
			t.Errorf("overwritten file holds %q", got)
		}
	})
	t.Run("view-range", func(t *testing.T) {
		e := h.env(t, nil)
		p := e.base + "/five.txt"
		e.writeFile(p, []byte("one\ntwo\nthree\nfour\nfive\n"))
		hdr := "Here's the result of running `cat -n` on " + p + ":\n"
		e.want(e.call(ed, map[string]any{"command": "view", "path": p, "view_range": []int{2, 3}}), hdr+"     2\ttwo\n     3\tthree\n", false)
		e.want(e.call(ed, map[string]any{"command": "view", "path": p, "view_range": []int{4, -1}}), hdr+"     4\tfour\n     5\tfive\n", false)
		e.want(e.call(ed, map[string]any{"command": "view", "path": p, "view_range": []int{5, 5}}), hdr+"     5\tfive\n", false)
		e.want(e.call(ed, map[string]any{"command": "view", "path": p, "view_range": []int{0, 2}}),
			"Invalid `view_range`: [0, 2]. Its first element `0` should be within the range of lines of the file: [1, 5]", true)
		e.want(e.call(ed, map[string]any{"command": "view", "path": p, "view_range": []int{6, -1}}),
			"Invalid `view_range`: [6, -1]. Its first element `6` should be within the range of lines of the file: [1, 5]", true)
		e.want(e.call(ed, map[string]any{"command": "view", "path": p, "view_range": []int{2, 9}}),
			"Invalid `view_range`: [2, 9]. Its second element `9` should be smaller than the number of lines in the file: `5`", true)
		e.want(e.call(ed, map[string]any{"command": "view", "path": p, "view_range": []int{3, 2}}),
			"Invalid `view_range`: [3, 2]. Its second element `2` should be larger or equal than its first `3`", true)
		e.want(e.call(ed, map[string]any{"command": "view", "path": p, "view_range": []int{1}}),
			"Invalid `view_range`. It should be a list of two integers.", true)
	})
	t.Run("view-directory", func(t *testing.T) {
		e := h.env(t, nil)
		for _, f := range []string{"/a.txt", "/d/b.txt", "/d/e/deep.txt", "/.hidden/x", "/d/.h"} {
			e.want(e.call(ed, map[string]any{"command": "create", "path": e.base + f, "file_text": "x"}), "File created successfully at: "+e.base+f, false)
		}
		b := e.base
		e.want(e.call(ed, map[string]any{"command": "view", "path": b}),
			"Here's the files and directories up to 2 levels deep in "+b+", excluding hidden items:\n"+
				b+"\n"+b+"/a.txt\n"+b+"/d\n"+b+"/d/b.txt\n"+b+"/d/e\n", false)
		e.want(e.call(ed, map[string]any{"command": "view", "path": b, "view_range": []int{1, 2}}),
			"The `view_range` parameter is not allowed when `path` points to a directory.", true)
	})
	t.Run("view-errors", func(t *testing.T) {
		e := h.env(t, nil)
		e.want(e.call(ed, map[string]any{"command": "view", "path": e.base + "/missing"}),
			"The path "+e.base+"/missing does not exist. Please provide a valid path.", true)
		// A relative path is resolved against the sandbox's working
		// directory (the documentation's examples send "primes.py"); the
		// reference executor refuses it and suggests the same relative path.
		e.want(e.call(ed, map[string]any{"command": "view", "path": "relative/file.txt"}),
			"The path relative/file.txt does not exist. Please provide a valid path.", true)
		e.want(e.call(ed, map[string]any{"command": "view", "path": "../file.txt"}),
			"The path ../file.txt is not an absolute path, it should start with `/`. A relative path may not go up with `..`; give the absolute path.", true)
		e.want(e.call(ed, map[string]any{"command": "view"}), "Parameter `path` is required for command: view", true)
		e.want(e.call(ed, map[string]any{"path": e.base}), "Parameter `command` is required", true)
		e.want(e.call(ed, map[string]any{"command": "delete", "path": e.base}),
			"Unrecognized command delete. The allowed commands for the str_replace_based_edit_tool tool are: view, create, str_replace, insert", true)
		e.want(e.call(ed, map[string]any{"command": "undo_edit", "path": e.base + "/x"}), "undo_edit command is not supported in Claude 4", true)
	})
	t.Run("max-characters", func(t *testing.T) {
		e := h.env(t, &toolexec.Options{Editor: toolexec.EditorOptions{MaxCharacters: 10}})
		p := e.base + "/long.txt"
		e.writeFile(p, []byte("abcdef\nghijkl\nmnopqr\n"))
		e.want(e.call(ed, map[string]any{"command": "view", "path": p}),
			"Here's the result of running `cat -n` on "+p+":\n     1\tabcdef\n     2\tghi<response clipped><NOTE>To save on context only part of this file has been shown to you. You should retry this tool after you have searched inside the file with `grep -n` in order to find the line numbers of what you are looking for.</NOTE>\n", false)
	})
	t.Run("str-replace", func(t *testing.T) {
		e := h.env(t, nil)
		p := e.base + "/code.py"
		e.writeFile(p, []byte("a = 1\nb = 1\nc = 1\n\tindented = 1\n"))
		// The documented text, then the lines of the matches (the
		// reference executor's edit.py: "Multiple occurrences of old_str
		// `= 1` in lines [1, 2, 3, 4]").
		e.want(e.call(ed, map[string]any{"command": "str_replace", "path": p, "old_str": "= 1", "new_str": "= 2"}),
			"Error: Found 4 matches for replacement text. Please provide more context to make a unique match. The matches start in lines [1, 2, 3, 4].", true)
		e.want(e.call(ed, map[string]any{"command": "str_replace", "path": p, "old_str": "z = 1", "new_str": "z = 2"}),
			"Error: No match found for replacement. Please check your text and try again.", true)
		e.want(e.call(ed, map[string]any{"command": "str_replace", "path": p, "old_str": "    indented", "new_str": "x"}),
			"Error: No match found for replacement. Please check your text and try again.", true)
		// The documented text, then the reference executor's snippet
		// (edit.py str_replace: "The file {path} has been edited. " +
		// _make_output(snippet, f"a snippet of {path}", start_line + 1) +
		// "Review the changes and make sure they are as expected. Edit the
		// file again if necessary."), 4 lines each side.
		e.want(e.call(ed, map[string]any{"command": "str_replace", "path": p, "old_str": "b = 1", "new_str": "b = 2"}),
			"Successfully replaced text at exactly one location. The file "+p+" has been edited. Here's the result of running `cat -n` on a snippet of "+p+":\n"+
				"     1\ta = 1\n     2\tb = 2\n     3\tc = 1\n     4\t\tindented = 1\n"+
				"Review the changes and make sure they are as expected. Edit the file again if necessary.", false)
		e.want(e.call(ed, map[string]any{"command": "str_replace", "path": p, "old_str": "c = 1\n"}),
			"Successfully replaced text at exactly one location. The file "+p+" has been edited. Here's the result of running `cat -n` on a snippet of "+p+":\n"+
				"     1\ta = 1\n     2\tb = 2\n     3\t\tindented = 1\n"+
				"Review the changes and make sure they are as expected. Edit the file again if necessary.", false)
		if got := string(e.readFile(p)); got != "a = 1\nb = 2\n\tindented = 1\n" {
			t.Errorf("file after replacements = %q", got)
		}
		e.want(e.call(ed, map[string]any{"command": "str_replace", "path": p, "new_str": "x"}),
			"Parameter `old_str` is required for command: str_replace", true)
		e.want(e.call(ed, map[string]any{"command": "str_replace", "path": e.base + "/nope", "old_str": "a", "new_str": "b"}),
			"Error: File not found", true)
		e.want(e.call(ed, map[string]any{"command": "str_replace", "path": e.base, "old_str": "a", "new_str": "b"}),
			"The path "+e.base+" is a directory and only the `view` command can be used on directories", true)
	})
	t.Run("str-replace-three-matches-doc-example", func(t *testing.T) {
		e := h.env(t, nil)
		p := e.base + "/f.py"
		e.writeFile(p, []byte("x = 0\nx = 0\nx = 0\n"))
		e.want(e.call(ed, map[string]any{"command": "str_replace", "path": p, "old_str": "x = 0", "new_str": "x = 1"}),
			"Error: Found 3 matches for replacement text. Please provide more context to make a unique match. The matches start in lines [1, 2, 3].", true)
	})
	t.Run("insert", func(t *testing.T) {
		e := h.env(t, nil)
		p := e.base + "/ins.txt"
		e.writeFile(p, []byte("one\ntwo\nthree"))
		r := e.call(ed, map[string]any{"command": "insert", "path": p, "insert_line": 0, "insert_text": "zero"})
		e.wantPrefix(r, "The file "+p+" has been edited. Here's the result of running `cat -n` on a snippet of the edited file:\n     1\tzero\n     2\tone\n", false)
		if !strings.HasSuffix(r.Text(), "Review the changes and make sure they are as expected (correct indentation, no duplicate lines, etc). Edit the file again if necessary.") {
			t.Errorf("insert result lacks the review note: %q", r.Text())
		}
		e.call(ed, map[string]any{"command": "insert", "path": p, "insert_line": 4, "insert_text": "four\n"})
		e.call(ed, map[string]any{"command": "insert", "path": p, "insert_line": 2, "new_str": "one and a half"}) // legacy field
		if got := string(e.readFile(p)); got != "zero\none\none and a half\ntwo\nthree\nfour\n" {
			t.Errorf("file after inserts = %q", got)
		}
		e.want(e.call(ed, map[string]any{"command": "insert", "path": p, "insert_line": 7, "insert_text": "x"}),
			"Invalid `insert_line` parameter: 7. It should be within the range of lines of the file: [0, 6]", true)
		e.want(e.call(ed, map[string]any{"command": "insert", "path": p, "insert_line": -1, "insert_text": "x"}),
			"Invalid `insert_line` parameter: -1. It should be within the range of lines of the file: [0, 6]", true)
		e.want(e.call(ed, map[string]any{"command": "insert", "path": p, "insert_text": "x"}),
			"Parameter `insert_line` is required for command: insert", true)
		e.want(e.call(ed, map[string]any{"command": "insert", "path": p, "insert_line": 1}),
			"Parameter `insert_text` is required for command: insert", true)
		e.want(e.call(ed, map[string]any{"command": "insert", "path": e.base + "/nope", "insert_line": 0, "insert_text": "x"}),
			"Error: File not found", true)
	})
	t.Run("binary-file-not-corrupted", func(t *testing.T) {
		e := h.env(t, nil)
		p := e.base + "/blob.bin"
		data := append(binaryData(), "MARKER-OLD"...)
		data = append(data, binaryData()...)
		e.writeFile(p, data)
		e.want(e.call(ed, map[string]any{"command": "str_replace", "path": p, "old_str": "MARKER-OLD", "new_str": "new"}),
			"Successfully replaced text at exactly one location. The file "+p+" has been edited; it is a binary file, so no snippet is shown.", false)
		want := bytes.Replace(data, []byte("MARKER-OLD"), []byte("new"), 1)
		if got := e.readFile(p); !bytes.Equal(got, want) {
			t.Errorf("binary file corrupted: %d bytes, want %d", len(got), len(want))
		}
		e.want(e.call(ed, map[string]any{"command": "view", "path": p}),
			"Error: "+p+" is a binary file; the `view` command shows text files only.", true)
	})
	t.Run("large-file", func(t *testing.T) {
		e := h.env(t, nil)
		p := e.base + "/big.txt"
		var b bytes.Buffer
		for i := 1; i <= 200000; i++ {
			fmt.Fprintf(&b, "line %d\n", i)
		}
		e.writeFile(p, b.Bytes())
		e.want(e.call(ed, map[string]any{"command": "view", "path": p, "view_range": []int{199999, -1}}),
			"Here's the result of running `cat -n` on "+p+":\n199999\tline 199999\n200000\tline 200000\n", false)
		var snip strings.Builder
		for i := 123452; i <= 123461; i++ {
			if i == 123456 {
				fmt.Fprintf(&snip, "%6d\tchanged\n", i)
				continue
			}
			fmt.Fprintf(&snip, "%6d\tline %d\n", i, i)
		}
		e.want(e.call(ed, map[string]any{"command": "str_replace", "path": p, "old_str": "line 123456\n", "new_str": "changed\n"}),
			"Successfully replaced text at exactly one location. The file "+p+" has been edited. Here's the result of running `cat -n` on a snippet of "+p+":\n"+
				snip.String()+"Review the changes and make sure they are as expected. Edit the file again if necessary.", false)
		want := bytes.Replace(b.Bytes(), []byte("line 123456\n"), []byte("changed\n"), 1)
		if got := e.readFile(p); !bytes.Equal(got, want) {
			t.Errorf("large file after str_replace: %d bytes, want %d", len(got), len(want))
		}
		r := e.call(ed, map[string]any{"command": "view", "path": p})
		// 16000 characters of content, each line with its 7-character number.
		if !strings.HasSuffix(r.Text(), "</NOTE>\n") || len(r.Text()) > 16000+7*2000+len(truncated)+200 {
			t.Errorf("view of a large file is not clipped: %d bytes, ends %q", len(r.Text()), tail(r.Text()))
		}
	})
	t.Run("roots-confine-paths", func(t *testing.T) {
		e := h.env(t, nil)
		e2 := &env{t: t, h: h, sb: e.sb, base: e.base, ts: e.ts}
		e2.reopen(&toolexec.Options{Editor: toolexec.EditorOptions{Roots: []string{e.base + "/allowed"}}})
		e2.want(e2.call(ed, map[string]any{"command": "create", "path": e.base + "/allowed/ok.txt", "file_text": "ok"}),
			"File created successfully at: "+e.base+"/allowed/ok.txt", false)
		e2.want(e2.call(ed, map[string]any{"command": "create", "path": e.base + "/outside.txt", "file_text": "no"}),
			"Error: the path "+e.base+"/outside.txt is outside the directories this tool may access: "+e.base+"/allowed", true)
		// ".." is resolved, then confined like any path.
		e2.want(e2.call(ed, map[string]any{"command": "view", "path": e.base + "/allowed/../outside.txt"}),
			"Error: the path "+e.base+"/allowed/../outside.txt is outside the directories this tool may access: "+e.base+"/allowed", true)
		e2.want(e2.call(ed, map[string]any{"command": "view", "path": e.base + "/allowed/sub/../ok.txt"}),
			"Here's the result of running `cat -n` on "+e.base+"/allowed/sub/../ok.txt:\n     1\tok\n", false)
		// Relative paths resolve against the first root when roots are
		// narrower than the sandbox (EditorOptions.Workdir unset).
		e2.want(e2.call(ed, map[string]any{"command": "view", "path": "ok.txt"}),
			"Here's the result of running `cat -n` on ok.txt:\n     1\tok\n", false)
		e2.want(e2.call(ed, map[string]any{"command": "view", "path": "../outside.txt"}),
			"Error: the path ../outside.txt is outside the directories this tool may access: "+e.base+"/allowed", true)
		e2.want(e2.call(ed, map[string]any{"command": "view", "path": e.base + "/allowedx"}),
			"Error: the path "+e.base+"/allowedx is outside the directories this tool may access: "+e.base+"/allowed", true)
		if e.exists(e.base + "/outside.txt") {
			t.Errorf("a file was created outside the allowed root")
		}
	})
	t.Run("crlf-file", func(t *testing.T) {
		// The reference executor reads files with Python's universal
		// newlines, so a CRLF file views without "\r" and "\n" in old_str
		// matches its line breaks; its line endings are kept on write.
		e := h.env(t, nil)
		p := e.base + "/win.txt"
		e.writeFile(p, []byte("one\r\ntwo\r\nthree\r\n"))
		e.want(e.call(ed, map[string]any{"command": "view", "path": p}),
			"Here's the result of running `cat -n` on "+p+":\n     1\tone\n     2\ttwo\n     3\tthree\n", false)
		e.want(e.call(ed, map[string]any{"command": "str_replace", "path": p, "old_str": "one\ntwo", "new_str": "1\n2"}),
			"Successfully replaced text at exactly one location. The file "+p+" has been edited. Here's the result of running `cat -n` on a snippet of "+p+":\n"+
				"     1\t1\n     2\t2\n     3\tthree\n"+
				"Review the changes and make sure they are as expected. Edit the file again if necessary.", false)
		e.want(e.call(ed, map[string]any{"command": "insert", "path": p, "insert_line": 3, "insert_text": "four\n"}),
			"The file "+p+" has been edited. Here's the result of running `cat -n` on a snippet of the edited file:\n"+
				"     1\t1\n     2\t2\n     3\tthree\n     4\tfour\n"+
				"Review the changes and make sure they are as expected (correct indentation, no duplicate lines, etc). Edit the file again if necessary.", false)
		if got := string(e.readFile(p)); got != "1\r\n2\r\nthree\r\nfour\r\n" {
			t.Errorf("CRLF file after edits = %q, want CRLF line endings kept", got)
		}
		// A file with mixed endings is edited byte for byte.
		mixed := e.base + "/mixed.txt"
		e.writeFile(mixed, []byte("a\r\nb\nc\n"))
		e.want(e.call(ed, map[string]any{"command": "str_replace", "path": mixed, "old_str": "b\nc", "new_str": "B\nC"}),
			"Successfully replaced text at exactly one location. The file "+mixed+" has been edited. Here's the result of running `cat -n` on a snippet of "+mixed+":\n"+
				"     1\ta\r\n     2\tB\n     3\tC\n"+
				"Review the changes and make sure they are as expected. Edit the file again if necessary.", false)
		if got := string(e.readFile(mixed)); got != "a\r\nB\nC\n" {
			t.Errorf("mixed file after edit = %q", got)
		}
	})
	t.Run("directory-view-clipped", func(t *testing.T) {
		// The reference clips a directory listing like a file view
		// (edit.py: run(..., truncate_after=MAX_RESPONSE_LEN)).
		e := h.env(t, &toolexec.Options{Editor: toolexec.EditorOptions{MaxCharacters: 40}})
		d := e.base + "/d"
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := e.sb.MkdirAll(ctx, d, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"/aaaaaaaaaa", "/bbbbbbbbbb", "/cccccccccc"} {
			e.writeFile(d+f, []byte("x"))
		}
		full := d + "\n" + d + "/aaaaaaaaaa\n" + d + "/bbbbbbbbbb\n" + d + "/cccccccccc"
		e.want(e.call(ed, map[string]any{"command": "view", "path": d}),
			"Here's the files and directories up to 2 levels deep in "+d+", excluding hidden items:\n"+full[:40]+truncated+"\n", false)
	})
	t.Run("definition-states-view-limit", func(t *testing.T) {
		// The API reads an absent max_characters as "the full file", so
		// the definition always states the limit the toolset applies.
		e := h.env(t, nil)
		for _, d := range e.ts.Definitions() {
			if d.Name == ed && d.MaxCharacters != toolexec.DefaultViewCharacters {
				t.Errorf("editor definition max_characters = %d, want %d", d.MaxCharacters, toolexec.DefaultViewCharacters)
			}
		}
	})
	t.Run("relative-and-dot-dot-paths", func(t *testing.T) {
		e := h.env(t, nil)
		name := "toolexectest-rel-" + randHex(t) + ".txt"
		e.want(e.call(ed, map[string]any{"command": "create", "path": name, "file_text": "rel\n"}),
			"File created successfully at: "+name, false)
		e.want(e.call(ed, map[string]any{"command": "view", "path": name}),
			"Here's the result of running `cat -n` on "+name+":\n     1\trel\n", false)
		// The sandbox resolved the name as it resolves it for its file
		// methods: the same file.
		if !e.exists(name) {
			t.Errorf("%s was not created where the sandbox resolves relative names", name)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		e.sb.Remove(ctx, name)
		// With the whole sandbox allowed, ".." is resolved, not refused.
		p := e.base + "/sub/../dd.txt"
		e.want(e.call(ed, map[string]any{"command": "create", "path": p, "file_text": "x"}), "File created successfully at: "+p, false)
		if !e.exists(e.base + "/dd.txt") {
			t.Errorf("%s did not create %s/dd.txt", p, e.base)
		}
	})
}
