package toolexectest

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/perimeter-sdk/perimeter/toolexec"
)

func (h *harness) files(t *testing.T) {
	newEnv := func(t *testing.T, max int64) *env {
		e := h.env(t, nil)
		for _, d := range []string{"/work", "/shared"} {
			ctx, cancel := context.WithTimeout(context.Background(), h.opts.CallTimeout)
			if err := e.sb.MkdirAll(ctx, e.base+d, 0o755); err != nil {
				t.Fatal(err)
			}
			cancel()
		}
		e.reopen(&toolexec.Options{Files: toolexec.FilesOptions{Workdir: e.base + "/work", Roots: []string{e.base + "/shared"}, MaxFileBytes: max}})
		return e
	}
	t.Run("write-read-edit", func(t *testing.T) {
		e := newEnv(t, 0)
		w := e.base + "/work"
		e.want(e.call("write", map[string]any{"file_path": "src/main.go", "content": "package main\n\nfunc main() {}\n"}), "wrote 29 bytes to src/main.go", false)
		e.want(e.call("read", map[string]any{"file_path": w + "/src/main.go"}), "package main\n\nfunc main() {}\n", false)
		e.want(e.call("read", map[string]any{"file_path": "src/main.go", "view_range": []int{3, 3}}), "func main() {}", false)
		e.want(e.call("read", map[string]any{"file_path": "src/main.go", "offset": 2, "limit": 2}), "\nfunc main() {}", false)
		e.want(e.call("read", map[string]any{"file_path": "src/main.go", "view_range": []int{1}}), "read: view_range must be [start_line, end_line]", true)
		e.want(e.call("edit", map[string]any{"file_path": "src/main.go", "old_string": "main", "new_string": "app"}),
			"edit: old_string appears 2 times in src/main.go (must be unique)", true)
		e.want(e.call("edit", map[string]any{"file_path": "src/main.go", "old_string": "main", "new_string": "app", "replace_all": true}),
			"edited src/main.go (2 replacement(s))", false)
		e.want(e.call("edit", map[string]any{"file_path": "src/main.go", "old_string": "nothing", "new_string": "x"}),
			"edit: old_string not found in src/main.go", true)
		e.want(e.call("edit", map[string]any{"file_path": "src/main.go", "old_string": "func app() {}", "new_string": "func app() { run() }"}),
			"edited src/main.go (1 replacement(s))", false)
		if got := string(e.readFile(w + "/src/main.go")); got != "package app\n\nfunc app() { run() }\n" {
			t.Errorf("file after edits = %q", got)
		}
		e.want(e.call("write", map[string]any{"file_path": e.base + "/shared/x.txt", "content": ""}), "wrote 0 bytes to "+e.base+"/shared/x.txt", false)
	})
	t.Run("errors", func(t *testing.T) {
		e := newEnv(t, 0)
		e.want(e.call("read", map[string]any{}), "read: file_path is required", true)
		e.want(e.call("write", map[string]any{"file_path": "x"}), "write: content is required", true)
		e.want(e.call("write", map[string]any{"content": "x"}), "write: file_path is required", true)
		e.want(e.call("edit", map[string]any{"file_path": "x", "new_string": "y"}), "edit: old_string is required", true)
		e.want(e.call("read", map[string]any{"file_path": "missing.txt"}), "read missing.txt: no such file or directory", true)
		e.want(e.call("edit", map[string]any{"file_path": "missing.txt", "old_string": "a", "new_string": "b"}), "edit missing.txt: no such file or directory", true)
		e.want(e.call("read", map[string]any{"file_path": "/etc/passwd"}), `read: path "/etc/passwd" is outside the session's working directory and its other permitted directories`, true)
		e.want(e.call("read", map[string]any{"file_path": "../secret"}), `read: path "../secret" is outside the session's working directory and its other permitted directories`, true)
		e.want(e.call("write", map[string]any{"file_path": "../../escape.txt", "content": "x"}), `write: path "../../escape.txt" is outside the session's working directory and its other permitted directories`, true)
		e.want(e.call("read", map[string]any{"file_path": "."}), "read: . is not a regular file", true)
		e.want(e.call("read", map[string]any{"file_path": 3}), "invalid read input: json: cannot unmarshal number into Go struct field ReadInput.file_path of type string", true)
		if e.exists(e.base + "/escape.txt") {
			t.Error("write escaped the working directory")
		}
	})
	t.Run("sandbox-working-directory", func(t *testing.T) {
		// Without a Workdir, relative paths go to the sandbox; a ".." there
		// is refused with a message naming the path sent and nothing of the
		// provider, the sandbox or the host.
		e := h.env(t, nil)
		e.want(e.call("read", map[string]any{"file_path": "../../etc/passwd"}),
			`read: path "../../etc/passwd" goes up with ".." from the working directory; give the absolute path`, true)
		e.want(e.call("write", map[string]any{"file_path": "a/../../x", "content": "x"}),
			`write: path "a/../../x" goes up with ".." from the working directory; give the absolute path`, true)
		// An absolute path with ".." is resolved.
		p := e.base + "/sub/../abs.txt"
		e.want(e.call("write", map[string]any{"file_path": p, "content": "y"}), "wrote 1 bytes to "+p, false)
		e.want(e.call("read", map[string]any{"file_path": e.base + "/abs.txt"}), "y", false)
	})
	t.Run("size-limits", func(t *testing.T) {
		e := newEnv(t, 100)
		w := e.base + "/work"
		var b bytes.Buffer
		for i := 1; i <= 50; i++ {
			fmt.Fprintf(&b, "%d\n", i)
		}
		e.writeFile(w+"/big.txt", b.Bytes())
		e.want(e.call("read", map[string]any{"file_path": "big.txt"}),
			fmt.Sprintf("read: big.txt is %d bytes, exceeds 100-byte limit. Use the view_range parameter to read specific line ranges, e.g. view_range: [1, 500].", b.Len()), true)
		e.want(e.call("read", map[string]any{"file_path": "big.txt", "view_range": []int{48, -1}}), "48\n49\n50", false)
		e.want(e.call("read", map[string]any{"file_path": "big.txt", "view_range": []int{1, 50}}),
			"read: view_range [1, 50] of big.txt exceeds 100-byte limit. Narrow the view_range to read a smaller portion.", true)
		e.writeFile(w+"/line.txt", []byte(strings.Repeat("x", 200)+"\n"))
		e.want(e.call("read", map[string]any{"file_path": "line.txt", "view_range": []int{1, 1}}),
			"read: line 1 of line.txt alone exceeds 100-byte limit. The read tool cannot return part of a line, so view_range cannot narrow this further.", true)
		e.want(e.call("edit", map[string]any{"file_path": "big.txt", "old_string": "1", "new_string": "2"}),
			fmt.Sprintf("edit: big.txt is %d bytes, exceeds 100-byte limit. The edit tool loads the whole file and cannot modify a file this large.", b.Len()), true)
	})
	t.Run("binary-roundtrip", func(t *testing.T) {
		e := newEnv(t, 0)
		w := e.base + "/work"
		data := append(binaryData(), "OLD"...)
		e.writeFile(w+"/b.bin", data)
		e.want(e.call("edit", map[string]any{"file_path": "b.bin", "old_string": "OLD", "new_string": "NEW"}), "edited b.bin (1 replacement(s))", false)
		if got := e.readFile(w + "/b.bin"); !bytes.Equal(got, append(binaryData(), "NEW"...)) {
			t.Errorf("binary file corrupted by edit")
		}
	})
	t.Run("glob", func(t *testing.T) {
		e := newEnv(t, 0)
		w := e.base + "/work"
		for _, f := range []string{"a.go", "b.txt", "pkg/c.go", "pkg/deep/d.go"} {
			e.writeFileAll(w+"/"+f, "package x\n")
		}
		r := e.call("glob", map[string]any{"pattern": "**/*.go"})
		got := strings.Split(r.Text(), "\n")
		if r.IsError || !sameSet(got, []string{w + "/a.go", w + "/pkg/c.go", w + "/pkg/deep/d.go"}) {
			t.Errorf("glob **/*.go = %q", r.Text())
		}
		e.want(e.call("glob", map[string]any{"pattern": "*.txt"}), w+"/b.txt", false)
		e.want(e.call("glob", map[string]any{"pattern": "*.go", "path": "pkg"}), w+"/pkg/c.go", false)
		e.want(e.call("glob", map[string]any{"pattern": "*.rs"}), "no matches", false)
		e.want(e.call("glob", map[string]any{"pattern": "/etc/*"}), "glob: absolute pattern not permitted; pass a relative pattern (and optionally path)", true)
		e.want(e.call("glob", map[string]any{"pattern": "../*"}), `glob: pattern "../*" must not contain a ".." segment`, true)
		e.want(e.call("glob", map[string]any{"pattern": "*", "path": "/"}), `glob: path "/" is outside the session's working directory and its other permitted directories`, true)
		e.want(e.call("glob", map[string]any{}), "glob: pattern is required", true)
	})
	t.Run("grep", func(t *testing.T) {
		e := newEnv(t, 0)
		w := e.base + "/work"
		e.writeFileAll(w+"/one.txt", "alpha\nbeta\ngamma beta\n")
		e.writeFileAll(w+"/sub/two.txt", "no\nbeta here\n")
		e.writeFileAll(w+"/bin.dat", "beta\x00beta")
		e.writeFileAll(w+"/.git/config", "beta")
		e.writeFileAll(w+"/node_modules/m/index.js", "beta")
		r := e.call("grep", map[string]any{"pattern": "be+ta"})
		if r.IsError || !sameSet(strings.Split(r.Text(), "\n"), []string{w + "/one.txt:2:beta", w + "/one.txt:3:gamma beta", w + "/sub/two.txt:2:beta here"}) {
			t.Errorf("grep = %q", r.Text())
		}
		e.want(e.call("grep", map[string]any{"pattern": "^gamma", "path": "one.txt"}), w+"/one.txt:3:gamma beta", false)
		e.want(e.call("grep", map[string]any{"pattern": "zeta"}), "no matches", false)
		e.want(e.call("grep", map[string]any{"pattern": "("}), "grep: invalid regex: error parsing regexp: missing closing ): `(`", true)
		e.want(e.call("grep", map[string]any{}), "grep: pattern is required", true)
	})
}

func (e *env) writeFileAll(name, content string) {
	e.t.Helper()
	r := e.call("write", map[string]any{"file_path": name, "content": content})
	if r.IsError {
		e.t.Fatalf("write %s: %s", name, r.Text())
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]int{}
	for _, s := range a {
		seen[s]++
	}
	for _, s := range b {
		seen[s]--
	}
	for _, n := range seen {
		if n != 0 {
			return false
		}
	}
	return true
}
