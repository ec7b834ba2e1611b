package toolexec

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// Text editor defaults.
const (
	// DefaultViewCharacters is how many characters of a file a view shows
	// when neither the tool definition nor EditorOptions sets
	// max_characters (the reference executor's limit).
	DefaultViewCharacters = 16000
	// DefaultMaxEditBytes is the largest file str_replace and insert load
	// unless EditorOptions.MaxFileBytes says otherwise. view streams files
	// of any size.
	DefaultMaxEditBytes = 64 << 20
)

// truncatedNote follows a view cut short, as the reference executor says it.
const truncatedNote = "<response clipped><NOTE>To save on context only part of this file has been shown to you. You should retry this tool after you have searched inside the file with `grep -n` in order to find the line numbers of what you are looking for.</NOTE>"

// EditorOptions configures the text editor tool.
type EditorOptions struct {
	// Roots are the sandbox directories the editor may touch; nil means
	// ["/"], the whole sandbox (itself the boundary). With narrower roots a
	// path through a symbolic link is refused, since the link's target
	// cannot be checked through the sandbox contract.
	Roots []string
	// AllowOverwrite lets create replace an existing file. The documentation
	// leaves overwriting unspecified; the reference executor refuses, and so
	// does the default.
	AllowOverwrite bool
	// MaxCharacters caps a view's length (file or directory); zero means
	// DefaultViewCharacters. The toolset's definition always carries the
	// limit as max_characters, since the API reads an absent max_characters
	// as "the full file".
	MaxCharacters int
	// Workdir is the sandbox directory relative paths are resolved against
	// (the documentation's examples send "primes.py"). Empty means the
	// sandbox's own working directory when Roots is the whole sandbox (the
	// path is passed to the sandbox, which resolves it as it does for
	// commands), and the first root otherwise.
	Workdir string
	// MaxFileBytes is the largest file str_replace and insert load; zero
	// means DefaultMaxEditBytes.
	MaxFileBytes int64
}

// EditorInput is the text editor tool's input (text_editor_20250728). Insert
// accepts InsertText and, from older tool versions, NewStr.
type EditorInput struct {
	Command    string  `json:"command"`
	Path       *string `json:"path,omitempty"`
	ViewRange  []int   `json:"view_range,omitempty"`
	FileText   *string `json:"file_text,omitempty"`
	OldStr     *string `json:"old_str,omitempty"`
	NewStr     *string `json:"new_str,omitempty"`
	InsertLine *int    `json:"insert_line,omitempty"`
	InsertText *string `json:"insert_text,omitempty"`
}

type editorTool struct {
	fsys  FS
	opts  EditorOptions
	roots []string
}

func newEditorTool(fsys FS, opts EditorOptions) *editorTool {
	roots := cleanRoots(opts.Roots)
	if opts.MaxFileBytes <= 0 {
		opts.MaxFileBytes = DefaultMaxEditBytes
	}
	if opts.MaxCharacters <= 0 {
		opts.MaxCharacters = DefaultViewCharacters
	}
	switch {
	case opts.Workdir != "":
		opts.Workdir = path.Clean("/" + opts.Workdir)
	case !(len(roots) == 1 && roots[0] == "/"):
		opts.Workdir = roots[0]
	}
	return &editorTool{fsys: fsys, opts: opts, roots: roots}
}

func cleanRoots(in []string) []string {
	if len(in) == 0 {
		return []string{"/"}
	}
	out := make([]string, 0, len(in))
	for _, r := range in {
		out = append(out, path.Clean("/"+r))
	}
	return out
}

// toolErr is an is_error text for the model.
type toolErr string

func (e toolErr) Error() string { return string(e) }

// infraErr marks a failure of the sandbox rather than of the model's input.
type infraErr struct{ err error }

func (e infraErr) Error() string { return e.err.Error() }
func (e infraErr) Unwrap() error { return e.err }

// outcome turns a command's text or error into the tool's return values.
func outcome(text string, err error) (string, bool, error) {
	if err == nil {
		return text, false, nil
	}
	var te toolErr
	if errors.As(err, &te) {
		return string(te), true, nil
	}
	var ie infraErr
	if errors.As(err, &ie) {
		err = ie.err
	}
	return "Error: " + infraMessage(err), true, err
}

// infraMessage is what the model is told of a failure of the sandbox or of
// the call: its kind, never the provider's or the host's details (the host
// gets those as the Go error).
func infraMessage(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "the call timed out before the sandbox answered"
	case errors.Is(err, context.Canceled):
		return "the call was cancelled"
	}
	return "the sandbox could not complete the operation: " + kindMessage(err)
}

// isInfra reports whether err is a failure of the sandbox or of ctx rather
// than an answer about the file.
func isInfra(err error) bool {
	k := sandbox.KindOf(err)
	return k == nil || k == sandbox.ErrUnavailable || k == sandbox.ErrTerminated || k == sandbox.ErrTimeout
}

func (t *editorTool) run(ctx context.Context, input json.RawMessage) (string, bool, error) {
	var in EditorInput
	if msg, bad := decode("str_replace_based_edit_tool", input, &in); bad {
		return msg, true, nil
	}
	return outcome(t.do(ctx, &in))
}

func (t *editorTool) do(ctx context.Context, in *EditorInput) (string, error) {
	switch in.Command {
	case "":
		return "", toolErr("Parameter `command` is required")
	case "view", "create", "str_replace", "insert":
	case "undo_edit":
		return "", toolErr("undo_edit command is not supported in Claude 4")
	default:
		return "", toolErr(fmt.Sprintf("Unrecognized command %s. The allowed commands for the %s tool are: view, create, str_replace, insert", in.Command, EditorName))
	}
	if in.Path == nil || *in.Path == "" {
		return "", toolErr("Parameter `path` is required for command: " + in.Command)
	}
	// p is the path as the model sent it, and what every message names;
	// name is the sandbox path the file methods get.
	p := *in.Path
	name, err := t.resolve(ctx, p)
	if err != nil {
		return "", err
	}
	fi, statErr := t.fsys.Stat(ctx, name)
	exists := statErr == nil
	if statErr != nil && !errors.Is(statErr, sandbox.ErrNotFound) {
		return "", fileErr(p, statErr)
	}
	switch in.Command {
	case "view":
		if !exists {
			return "", toolErr(fmt.Sprintf("The path %s does not exist. Please provide a valid path.", p))
		}
		if fi.IsDir() {
			if in.ViewRange != nil {
				return "", toolErr("The `view_range` parameter is not allowed when `path` points to a directory.")
			}
			return viewDir(ctx, t.fsys, name, p, t.opts.MaxCharacters)
		}
		return viewFile(ctx, t.fsys, name, p, in.ViewRange, t.opts.MaxCharacters)
	case "create":
		if in.FileText == nil {
			return "", toolErr("Parameter `file_text` is required for command: create")
		}
		if exists && fi.IsDir() {
			return "", toolErr(fmt.Sprintf("The path %s is a directory and only the `view` command can be used on directories", p))
		}
		if exists && !t.opts.AllowOverwrite {
			return "", toolErr(fmt.Sprintf("File already exists at: %s. Cannot overwrite files using command `create`.", p))
		}
		if err := t.fsys.MkdirAll(ctx, path.Dir(name), 0o755); err != nil {
			return "", writeFailure(p, err)
		}
		if err := writeAll(ctx, t.fsys, name, []byte(*in.FileText), 0o644); err != nil {
			return "", writeFailure(p, err)
		}
		return "File created successfully at: " + p, nil
	}
	// str_replace and insert edit an existing file.
	if !exists {
		return "", toolErr("Error: File not found")
	}
	if fi.IsDir() {
		return "", toolErr(fmt.Sprintf("The path %s is a directory and only the `view` command can be used on directories", p))
	}
	if in.Command == "str_replace" {
		if in.OldStr == nil {
			return "", toolErr("Parameter `old_str` is required for command: str_replace")
		}
	} else {
		if in.InsertLine == nil {
			return "", toolErr("Parameter `insert_line` is required for command: insert")
		}
		if in.InsertText == nil && in.NewStr == nil {
			return "", toolErr("Parameter `insert_text` is required for command: insert")
		}
	}
	data, err := t.load(ctx, name, p)
	if err != nil {
		return "", err
	}
	// A file with CRLF line endings throughout is edited as the reference
	// executor reads it (Python's universal newlines: CRLF is "\n"), and
	// written back with CRLF endings. Other files are edited byte for byte.
	crlf := isCRLF(data)
	lf := func(s string) string {
		if crlf {
			return strings.ReplaceAll(s, "\r\n", "\n")
		}
		return s
	}
	if crlf {
		data = bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n"))
	}
	var out []byte
	var msg string
	if in.Command == "str_replace" {
		old := []byte(lf(*in.OldStr))
		var at []int // first line of each occurrence
		if len(old) > 0 {
			for off := 0; ; {
				i := bytes.Index(data[off:], old)
				if i < 0 {
					break
				}
				at = append(at, bytes.Count(data[:off+i], []byte("\n"))+1)
				off += i + 1
			}
		}
		switch {
		case len(at) == 0:
			return "", toolErr("Error: No match found for replacement. Please check your text and try again.")
		case len(at) > 1:
			// The documented text, then the lines the reference executor
			// lists ("... in lines [3, 7]. Please ensure it is unique").
			return "", toolErr(fmt.Sprintf("Error: Found %d matches for replacement text. Please provide more context to make a unique match. The matches start in lines %s.", len(at), pyList(at)))
		}
		newStr := ""
		if in.NewStr != nil {
			newStr = lf(*in.NewStr)
		}
		out = bytes.Replace(data, old, []byte(newStr), 1)
		// The documented success text, then the reference executor's
		// snippet: 4 lines around the change, cat -n style.
		line := at[0] - 1 // 0-based line of the replacement
		from := max(0, line-snippetLines)
		to := line + snippetLines + strings.Count(newStr, "\n")
		msg = "Successfully replaced text at exactly one location. " +
			fmt.Sprintf("The file %s has been edited. ", p) +
			numbered(snippet(out, from+1, to+1), "a snippet of "+p, from+1) +
			"Review the changes and make sure they are as expected. Edit the file again if necessary."
		if isBinary(out) {
			msg = "Successfully replaced text at exactly one location. " +
				fmt.Sprintf("The file %s has been edited; it is a binary file, so no snippet is shown.", p)
		}
	} else {
		text := in.InsertText
		if text == nil {
			text = in.NewStr
		}
		insert := lf(*text)
		lines := countLines(data)
		n := *in.InsertLine
		if n < 0 || n > lines {
			return "", toolErr(fmt.Sprintf("Invalid `insert_line` parameter: %d. It should be within the range of lines of the file: [0, %d]", n, lines))
		}
		out = insertAfter(data, n, insert)
		msg = fmt.Sprintf("The file %s has been edited. ", p) +
			numbered(snippet(out, max(1, n-3), n+strings.Count(strings.TrimSuffix(insert, "\n"), "\n")+5), "a snippet of the edited file", max(1, n-3)) +
			"Review the changes and make sure they are as expected (correct indentation, no duplicate lines, etc). Edit the file again if necessary."
	}
	if crlf {
		out = bytes.ReplaceAll(out, []byte("\n"), []byte("\r\n"))
	}
	if err := writeAll(ctx, t.fsys, name, out, 0o644); err != nil {
		return "", writeFailure(p, err)
	}
	return msg, nil
}

// isBinary reports whether data is not text: a NUL byte or invalid UTF-8.
func isBinary(data []byte) bool {
	return bytes.IndexByte(data, 0) >= 0 || !utf8.Valid(data)
}

// snippetLines is how many lines the reference executor shows on each side
// of an edit (SNIPPET_LINES).
const snippetLines = 4

// isCRLF reports whether data has CRLF line endings and no bare LF.
func isCRLF(data []byte) bool {
	n := bytes.Count(data, []byte("\n"))
	return n > 0 && bytes.Count(data, []byte("\r\n")) == n
}

// pyList formats ints as Python prints a list, [3, 7], showing at most the
// first 50 and saying how many more there are.
func pyList(v []int) string {
	const most = 50
	s := make([]string, 0, min(len(v), most))
	for _, n := range v[:min(len(v), most)] {
		s = append(s, strconv.Itoa(n))
	}
	out := "[" + strings.Join(s, ", ") + "]"
	if len(v) > most {
		out += fmt.Sprintf(" and %d more", len(v)-most)
	}
	return out
}

// load reads a file for editing, refusing one over the size limit.
func (t *editorTool) load(ctx context.Context, name, p string) ([]byte, error) {
	data, tooBig, err := readAll(ctx, t.fsys, name, t.opts.MaxFileBytes)
	if err != nil {
		if errors.Is(err, sandbox.ErrNotFound) {
			return nil, toolErr("Error: File not found")
		}
		if errors.Is(err, sandbox.ErrPermissionDenied) {
			return nil, toolErr("Error: Permission denied. Cannot read file.")
		}
		return nil, fileErr(p, err)
	}
	if tooBig {
		return nil, toolErr(fmt.Sprintf("Error: %s is larger than the %d-byte limit for editing; view it with view_range or change it with the bash tool.", p, t.opts.MaxFileBytes))
	}
	return data, nil
}

func writeFailure(p string, err error) error {
	if errors.Is(err, sandbox.ErrPermissionDenied) {
		return toolErr("Error: Permission denied. Cannot write to file.")
	}
	return fileErr(p, err)
}

// fileErr is the result for a failed file operation on the path the model
// sent: a failure of the sandbox itself (a Go error for the host), or an
// is_error text naming p and the kind of failure, and nothing of the
// provider, the sandbox or the host.
func fileErr(p string, err error) error {
	if isInfra(err) {
		return infraErr{err}
	}
	return toolErr(fmt.Sprintf("Error: %s: %s", p, kindMessage(err)))
}

// kindMessage describes an error by its kind only.
func kindMessage(err error) string {
	switch k := sandbox.KindOf(err); {
	case k == sandbox.ErrNotFound:
		return "no such file or directory"
	case k == sandbox.ErrPermissionDenied:
		return "permission denied"
	case k == sandbox.ErrAlreadyExists:
		return "file exists"
	case k != nil:
		return k.Error()
	}
	return "the operation failed"
}

// resolve turns the path the model sent into the sandbox name the file
// methods get, confined to the roots: ".." elements are resolved lexically
// (then confined like any path), a relative path is resolved against the
// working directory.
func (t *editorTool) resolve(ctx context.Context, p string) (string, error) {
	if strings.IndexByte(p, 0) >= 0 {
		return "", toolErr(fmt.Sprintf("Error: the path %q contains a NUL byte", p))
	}
	abs := p
	if !strings.HasPrefix(p, "/") {
		if t.opts.Workdir == "" {
			// The whole sandbox is allowed: it resolves the name against
			// its working directory, as for commands; it refuses a ".."
			// there, since where that leads is its own business.
			if slices.Contains(strings.Split(p, "/"), "..") {
				return "", toolErr(fmt.Sprintf("The path %s is not an absolute path, it should start with `/`. A relative path may not go up with `..`; give the absolute path.", p))
			}
			return path.Clean(p), nil
		}
		abs = path.Join(t.opts.Workdir, p)
	}
	abs = path.Clean(abs)
	if err := confine(ctx, t.fsys, t.roots, p, abs); err != nil {
		return "", err
	}
	return abs, nil
}

// confine refuses abs (the clean form of the model's path p) outside roots
// or, when roots are narrower than the whole sandbox, through a symbolic
// link.
func confine(ctx context.Context, fsys FS, roots []string, p, abs string) error {
	var root string
	for _, r := range roots {
		if r == "/" || abs == r || strings.HasPrefix(abs, r+"/") {
			root = r
			break
		}
	}
	if root == "" {
		return toolErr(fmt.Sprintf("Error: the path %s is outside the directories this tool may access: %s", p, strings.Join(roots, ", ")))
	}
	if root == "/" {
		return nil
	}
	// Check every component from the root down; stop at the first missing
	// one (nothing below it exists to be a link).
	cur := root
	for _, el := range strings.Split(strings.TrimPrefix(abs, root), "/") {
		if el == "" {
			continue
		}
		cur = path.Join(cur, el)
		fi, err := fsys.Stat(ctx, cur)
		if err != nil {
			if errors.Is(err, sandbox.ErrNotFound) {
				return nil
			}
			return fileErr(p, err)
		}
		if fi.Mode&fs.ModeSymlink != 0 {
			return toolErr(fmt.Sprintf("Error: the path %s goes through the symbolic link %s, which this tool does not follow", p, cur))
		}
	}
	return nil
}

// viewDir lists a directory two levels deep, hidden entries excluded, as the
// reference executor's find does (sorted here), under the path p the model
// sent. Like the reference (whose command output is clipped by
// maybe_truncate), the listing is clipped at limit characters with the
// reference's note.
func viewDir(ctx context.Context, fsys FS, name, p string, limit int) (string, error) {
	var b strings.Builder
	chars := 0
	clipped := false
	add := func(line string) {
		if clipped {
			return
		}
		if chars > 0 {
			line = "\n" + line
		}
		n := utf8.RuneCountInString(line)
		if chars+n > limit {
			b.WriteString(truncateRunes(line, limit-chars))
			b.WriteString(truncatedNote)
			clipped = true
			return
		}
		chars += n
		b.WriteString(line)
	}
	add(p)
	var walk func(dir, shown string, depth int) error
	walk = func(dir, shown string, depth int) error {
		entries, err := fsys.ReadDir(ctx, dir)
		if err != nil {
			if isInfra(err) {
				return infraErr{err}
			}
			return nil // unreadable: listed without its contents
		}
		for _, e := range entries {
			if clipped {
				return nil
			}
			if strings.HasPrefix(e.Name, ".") {
				continue
			}
			child := strings.TrimSuffix(shown, "/") + "/" + e.Name
			add(child)
			if e.IsDir() && depth < 2 {
				if err := walk(path.Join(dir, e.Name), child, depth+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(name, p, 1); err != nil {
		return "", err
	}
	return fmt.Sprintf("Here's the files and directories up to 2 levels deep in %s, excluding hidden items:\n%s\n", p, b.String()), nil
}

// viewFile shows a file with cat -n style line numbers, streaming it so that
// files of any size can be viewed; it keeps at most limit characters of the
// selected text.
func viewFile(ctx context.Context, fsys FS, name, p string, viewRange []int, limit int) (string, error) {
	rc, err := fsys.ReadFile(ctx, name)
	if err != nil {
		if errors.Is(err, sandbox.ErrNotFound) {
			return "", toolErr(fmt.Sprintf("The path %s does not exist. Please provide a valid path.", p))
		}
		if errors.Is(err, sandbox.ErrPermissionDenied) {
			return "", toolErr("Error: Permission denied. Cannot read file.")
		}
		return "", fileErr(p, err)
	}
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 64<<10)
	if head, _ := br.Peek(8 << 10); bytes.IndexByte(head, 0) >= 0 || !utf8.Valid(trimPartialRune(head)) {
		return "", toolErr(fmt.Sprintf("Error: %s is a binary file; the `view` command shows text files only.", p))
	}
	start, end := 1, -1
	if viewRange != nil {
		if len(viewRange) != 2 {
			return "", toolErr("Invalid `view_range`. It should be a list of two integers.")
		}
		start, end = viewRange[0], viewRange[1]
	}
	var sel []string // selected lines
	chars, clipped := 0, false
	total := 0
	for {
		line, err := br.ReadString('\n')
		if len(line) > 0 {
			total++
			if total >= start && (end == -1 || total <= end) && !clipped {
				// A CRLF ending shows as the end of the line, as the
				// reference reads files (universal newlines).
				text := strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
				n := utf8.RuneCountInString(text) + 1
				if chars+n > limit {
					text = truncateRunes(text, limit-chars)
					clipped = true
				}
				chars += n
				sel = append(sel, text)
			}
			if clipped && viewRange == nil {
				break // no range to validate: stop reading
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fileErr(p, err)
		}
	}
	if viewRange != nil {
		if start < 1 || start > total {
			return "", toolErr(fmt.Sprintf("Invalid `view_range`: [%d, %d]. Its first element `%d` should be within the range of lines of the file: [1, %d]", start, end, start, total))
		}
		if end > total {
			return "", toolErr(fmt.Sprintf("Invalid `view_range`: [%d, %d]. Its second element `%d` should be smaller than the number of lines in the file: `%d`", start, end, end, total))
		}
		if end != -1 && end < start {
			return "", toolErr(fmt.Sprintf("Invalid `view_range`: [%d, %d]. Its second element `%d` should be larger or equal than its first `%d`", start, end, end, start))
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Here's the result of running `cat -n` on %s:\n", p)
	for i, l := range sel {
		if clipped && i == len(sel)-1 {
			fmt.Fprintf(&b, "%6d\t%s%s\n", start+i, l, truncatedNote)
			continue
		}
		fmt.Fprintf(&b, "%6d\t%s\n", start+i, l)
	}
	return b.String(), nil
}

func trimPartialRune(b []byte) []byte {
	for i := 0; i < utf8.UTFMax && len(b) > 0; i++ {
		r, size := utf8.DecodeLastRune(b)
		if r != utf8.RuneError || size != 1 {
			break
		}
		b = b[:len(b)-1]
	}
	return b
}

func truncateRunes(s string, n int) string {
	if n <= 0 {
		return ""
	}
	i := 0
	for j := range s {
		if i == n {
			return s[:j]
		}
		i++
	}
	return s
}

// countLines counts lines, a final newline ending the last line rather than
// starting an empty one.
func countLines(data []byte) int {
	if len(data) == 0 {
		return 0
	}
	n := bytes.Count(data, []byte("\n"))
	if data[len(data)-1] != '\n' {
		n++
	}
	return n
}

// insertAfter inserts text as whole lines after line n (0: at the top),
// leaving every other byte of data as it was.
func insertAfter(data []byte, n int, text string) []byte {
	if !strings.HasSuffix(text, "\n") {
		text += "\n"
	}
	off := 0
	for i := 0; i < n; i++ {
		j := bytes.IndexByte(data[off:], '\n')
		if j < 0 {
			off = len(data)
			break
		}
		off += j + 1
	}
	out := make([]byte, 0, len(data)+len(text)+1)
	out = append(out, data[:off]...)
	if off > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	out = append(out, text...)
	return append(out, data[off:]...)
}

// snippet returns lines from..to (1-based, inclusive, clipped) of data.
func snippet(data []byte, from, to int) []string {
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if from < 1 {
		from = 1
	}
	if to > len(lines) {
		to = len(lines)
	}
	if from > to {
		return nil
	}
	return lines[from-1 : to]
}

// numbered formats lines as the reference executor's _make_output does.
func numbered(lines []string, what string, first int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Here's the result of running `cat -n` on %s:\n", what)
	for i, l := range lines {
		fmt.Fprintf(&b, "%6d\t%s\n", first+i, l)
	}
	return b.String()
}
