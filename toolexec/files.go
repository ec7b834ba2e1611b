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
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// File tool limits, as in the reference executors of self-hosted agent
// environments.
const (
	// DefaultMaxFileBytes is the largest file read returns whole and edit
	// loads, unless FilesOptions.MaxFileBytes says otherwise. read with a
	// line range streams files of any size.
	DefaultMaxFileBytes = 256 << 10
	globResultLimit     = 200
	grepOutputLimit     = 100 << 10
	grepMaxFileBytes    = 8 << 20
	walkMaxEntries      = 50000
)

// FilesOptions configures the read, write, edit, glob and grep tools.
type FilesOptions struct {
	// Workdir is the sandbox directory relative paths are resolved against.
	// Empty means the sandbox's own working directory: relative paths are
	// passed to the sandbox as they are (cleaned), and it resolves them, as
	// it does for commands.
	Workdir string
	// Roots are further sandbox directories the tools may touch besides
	// Workdir. As with the editor, when the permitted directories are
	// narrower than "/" a path through a symbolic link is refused.
	Roots []string
	// MaxFileBytes is the largest file read returns whole and edit loads;
	// zero means DefaultMaxFileBytes.
	MaxFileBytes int64
}

// ReadInput is the read tool's input. A line range is given either as
// ViewRange [start, end] (1-based, inclusive, end -1 or 0 for the end of the
// file) or as Offset (1-based first line) and Limit (number of lines).
type ReadInput struct {
	FilePath  string `json:"file_path"`
	ViewRange []int  `json:"view_range,omitempty"`
	Offset    int    `json:"offset,omitempty"`
	Limit     int    `json:"limit,omitempty"`
}

// WriteInput is the write tool's input.
type WriteInput struct {
	FilePath string  `json:"file_path"`
	Content  *string `json:"content"`
}

// EditInput is the edit tool's input.
type EditInput struct {
	FilePath   string  `json:"file_path"`
	OldString  string  `json:"old_string"`
	NewString  *string `json:"new_string"`
	ReplaceAll bool    `json:"replace_all,omitempty"`
}

// GlobInput is the glob tool's input.
type GlobInput struct {
	Pattern string `json:"pattern"`
	Path    string `json:"path,omitempty"`
}

// GrepInput is the grep tool's input.
type GrepInput struct {
	Pattern string `json:"pattern"`
	Path    string `json:"path,omitempty"`
}

func schema(props string, required ...string) json.RawMessage {
	req, _ := json.Marshal(required)
	return json.RawMessage(`{"type":"object","properties":{` + props + `},"required":` + string(req) + `}`)
}

var fileToolDefinitions = map[string]Definition{
	ReadName: {Name: ReadName, Description: "Read a UTF-8 text file rooted at the workdir.",
		InputSchema: schema(`"file_path":{"type":"string","description":"Path of the file to read, rooted at the workdir (absolute paths inside it are allowed)."},"view_range":{"type":"array","items":{"type":"integer"},"description":"[start_line, end_line] 1-indexed inclusive"},"offset":{"type":"integer","description":"First line to read, 1-indexed (with limit, instead of view_range)."},"limit":{"type":"integer","description":"Number of lines to read from offset."}`, "file_path")},
	WriteName: {Name: WriteName, Description: "Write a UTF-8 text file rooted at the workdir, creating parent directories as needed.",
		InputSchema: schema(`"file_path":{"type":"string","description":"Path of the file to write, rooted at the workdir (absolute paths inside it are allowed)."},"content":{"type":"string","description":"The file's new content."}`, "file_path", "content")},
	EditName: {Name: EditName, Description: "Replace a unique occurrence of old_string with new_string in a file (set replace_all to replace every occurrence).",
		InputSchema: schema(`"file_path":{"type":"string","description":"Path of the file to edit, rooted at the workdir (absolute paths inside it are allowed)."},"old_string":{"type":"string","description":"Substring to find and replace."},"new_string":{"type":"string","description":"Replacement text."},"replace_all":{"type":"boolean","description":"Replace every occurrence instead of requiring a unique match."}`, "file_path", "old_string", "new_string")},
	GlobName: {Name: GlobName, Description: "List paths matching a glob pattern (e.g. **/*.go), newest first.",
		InputSchema: schema(`"pattern":{"type":"string","description":"Glob pattern, e.g. **/*.go (** matches any depth)."},"path":{"type":"string","description":"Directory to search in. Defaults to the workdir."}`, "pattern")},
	GrepName: {Name: GrepName, Description: "Search file contents for a regular expression (RE2 syntax).",
		InputSchema: schema(`"pattern":{"type":"string","description":"Regular expression to search for."},"path":{"type":"string","description":"Directory to search in. Defaults to the workdir."}`, "pattern")},
}

type fileTools struct {
	fsys    FS
	ownWD   bool // no Workdir and no Roots: relative paths go to the sandbox as they are
	workdir string
	roots   []string // workdir first
	extra   bool     // roots beyond workdir were given
	max     int64
}

func newFileTools(fsys FS, opts FilesOptions) *fileTools {
	wd := path.Clean("/" + opts.Workdir)
	roots := []string{wd}
	for _, r := range opts.Roots {
		if r != "" {
			roots = append(roots, path.Clean("/"+r))
		}
	}
	if opts.MaxFileBytes <= 0 {
		opts.MaxFileBytes = DefaultMaxFileBytes
	}
	return &fileTools{fsys: fsys, ownWD: opts.Workdir == "" && len(roots) == 1,
		workdir: wd, roots: roots, extra: len(roots) > 1, max: opts.MaxFileBytes}
}

// resolve turns the model's path into a sandbox name inside the permitted
// directories.
func (f *fileTools) resolve(ctx context.Context, p string) (string, error) {
	if f.ownWD && !strings.HasPrefix(p, "/") {
		// Every path is permitted and the sandbox resolves relative ones
		// against its working directory; it refuses a ".." there.
		if slices.Contains(strings.Split(p, "/"), "..") {
			return "", fmt.Errorf("path %q goes up with \"..\" from the working directory; give the absolute path", p)
		}
		return path.Clean(p), nil
	}
	abs := p
	if !strings.HasPrefix(p, "/") {
		abs = path.Join(f.workdir, p)
	}
	abs = path.Clean(abs) // ".." collapsed lexically, then contained
	var root string
	for _, r := range f.roots {
		if r == "/" || abs == r || strings.HasPrefix(abs, r+"/") {
			root = r
			break
		}
	}
	if root == "" {
		if f.extra {
			return "", fmt.Errorf("path %q is outside the session's working directory and its other permitted directories", p)
		}
		return "", fmt.Errorf("path %q is outside the session's working directory", p)
	}
	if root != "/" {
		cur := root
		for _, el := range strings.Split(strings.TrimPrefix(abs, root), "/") {
			if el == "" {
				continue
			}
			cur = path.Join(cur, el)
			fi, err := f.fsys.Stat(ctx, cur)
			if err != nil {
				if errors.Is(err, sandbox.ErrNotFound) {
					break
				}
				return "", err
			}
			if fi.Mode&fs.ModeSymlink != 0 {
				return "", fmt.Errorf("path %q goes through the symbolic link %s, which is not followed", p, cur)
			}
		}
	}
	return abs, nil
}

// fsMessage maps an error to wording that does not depend on the provider.
func fsMessage(err error) string {
	switch {
	case errors.Is(err, sandbox.ErrNotFound):
		return "no such file or directory"
	}
	return kindMessage(err)
}

// fileFailure is the is_error text for a failed file operation, and the Go
// error when the sandbox itself failed.
func fileFailure(prefix string, err error) (string, bool, error) {
	if isInfra(err) && !errors.Is(err, sandbox.ErrNotFound) {
		return prefix + ": " + infraMessage(err), true, err
	}
	return prefix + ": " + fsMessage(err), true, nil
}

func (f *fileTools) resolveFailure(tool string, err error) (string, bool, error) {
	if sandbox.KindOf(err) != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fileFailure(tool, err)
	}
	return tool + ": " + err.Error(), true, nil
}

func (f *fileTools) read(ctx context.Context, input json.RawMessage) (string, bool, error) {
	var in ReadInput
	if err := json.Unmarshal(input, &in); err != nil {
		return fmt.Sprintf("invalid read input: %v", err), true, nil
	}
	if in.FilePath == "" {
		return "read: file_path is required", true, nil
	}
	name, err := f.resolve(ctx, in.FilePath)
	if err != nil {
		return f.resolveFailure("read", err)
	}
	if len(in.ViewRange) != 0 && len(in.ViewRange) != 2 {
		return "read: view_range must be [start_line, end_line]", true, nil
	}
	ranged := len(in.ViewRange) == 2
	start, end := 1, 0
	if ranged {
		start, end = in.ViewRange[0], in.ViewRange[1]
	} else if in.Offset != 0 || in.Limit != 0 {
		if in.Offset < 0 || in.Limit < 0 {
			return "read: offset and limit must not be negative", true, nil
		}
		ranged = true
		start = max(in.Offset, 1)
		if in.Limit > 0 {
			end = start + in.Limit - 1
		}
	}
	fi, err := f.fsys.Stat(ctx, name)
	if err != nil {
		return fileFailure("read "+in.FilePath, err)
	}
	if !fi.Mode.IsRegular() {
		return fmt.Sprintf("read: %s is not a regular file", in.FilePath), true, nil
	}
	if !ranged && fi.Size > f.max {
		return fmt.Sprintf("read: %s is %d bytes, exceeds %d-byte limit. Use the view_range parameter to read specific line ranges, e.g. view_range: [1, 500].", in.FilePath, fi.Size, f.max), true, nil
	}
	rc, err := f.fsys.ReadFile(ctx, name)
	if err != nil {
		return fileFailure("read "+in.FilePath, err)
	}
	defer rc.Close()
	if !ranged {
		data, err := io.ReadAll(io.LimitReader(rc, f.max+1))
		if err != nil {
			return fileFailure("read "+in.FilePath, err)
		}
		if int64(len(data)) > f.max {
			return fmt.Sprintf("read: %s holds more than the %d-byte limit. Use the view_range parameter to read specific line ranges, e.g. view_range: [1, 500].", in.FilePath, f.max), true, nil
		}
		return string(data), false, nil
	}
	// Stream the range: memory stays bounded by the limit whatever the file's
	// size.
	first := max(start, 1)
	br := bufio.NewReaderSize(rc, 64<<10)
	var out []byte
	line := 0
	for end <= 0 || line < end {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			if line+1 >= first {
				out = append(out, chunk...)
				if int64(len(out)) > f.max {
					if end-first == 0 {
						return fmt.Sprintf("read: line %d of %s alone exceeds %d-byte limit. The read tool cannot return part of a line, so view_range cannot narrow this further.", first, in.FilePath, f.max), true, nil
					}
					return fmt.Sprintf("read: view_range [%d, %d] of %s exceeds %d-byte limit. Narrow the view_range to read a smaller portion.", start, end, in.FilePath, f.max), true, nil
				}
			}
			if err != bufio.ErrBufferFull {
				line++
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil && err != bufio.ErrBufferFull {
			return fileFailure("read "+in.FilePath, err)
		}
	}
	return string(bytes.TrimSuffix(out, []byte("\n"))), false, nil
}

func (f *fileTools) write(ctx context.Context, input json.RawMessage) (string, bool, error) {
	var in WriteInput
	if err := json.Unmarshal(input, &in); err != nil {
		return fmt.Sprintf("invalid write input: %v", err), true, nil
	}
	if in.FilePath == "" {
		return "write: file_path is required", true, nil
	}
	if in.Content == nil {
		return "write: content is required", true, nil
	}
	name, err := f.resolve(ctx, in.FilePath)
	if err != nil {
		return f.resolveFailure("write", err)
	}
	if err := f.fsys.MkdirAll(ctx, path.Dir(name), 0o755); err != nil {
		return fileFailure("write "+in.FilePath+": mkdir", err)
	}
	if err := writeAll(ctx, f.fsys, name, []byte(*in.Content), 0o644); err != nil {
		return fileFailure("write "+in.FilePath, err)
	}
	return fmt.Sprintf("wrote %d bytes to %s", len(*in.Content), in.FilePath), false, nil
}

func (f *fileTools) edit(ctx context.Context, input json.RawMessage) (string, bool, error) {
	var in EditInput
	if err := json.Unmarshal(input, &in); err != nil {
		return fmt.Sprintf("invalid edit input: %v", err), true, nil
	}
	if in.FilePath == "" {
		return "edit: file_path is required", true, nil
	}
	if in.OldString == "" {
		return "edit: old_string is required", true, nil
	}
	if in.NewString == nil {
		return "edit: new_string is required", true, nil
	}
	name, err := f.resolve(ctx, in.FilePath)
	if err != nil {
		return f.resolveFailure("edit", err)
	}
	fi, err := f.fsys.Stat(ctx, name)
	if err != nil {
		return fileFailure("edit "+in.FilePath, err)
	}
	if !fi.Mode.IsRegular() {
		return fmt.Sprintf("edit: %s is not a regular file", in.FilePath), true, nil
	}
	if fi.Size > f.max {
		return fmt.Sprintf("edit: %s is %d bytes, exceeds %d-byte limit. The edit tool loads the whole file and cannot modify a file this large.", in.FilePath, fi.Size, f.max), true, nil
	}
	data, tooBig, err := readAll(ctx, f.fsys, name, f.max)
	if err != nil {
		return fileFailure("edit "+in.FilePath, err)
	}
	if tooBig {
		return fmt.Sprintf("edit: %s holds more than the %d-byte limit. The edit tool loads the whole file and cannot modify a file this large.", in.FilePath, f.max), true, nil
	}
	old := []byte(in.OldString)
	count := bytes.Count(data, old)
	if count == 0 {
		return fmt.Sprintf("edit: old_string not found in %s", in.FilePath), true, nil
	}
	n := 1
	if in.ReplaceAll {
		n = -1
	} else if count > 1 {
		return fmt.Sprintf("edit: old_string appears %d times in %s (must be unique)", count, in.FilePath), true, nil
	}
	out := bytes.Replace(data, old, []byte(*in.NewString), n)
	if err := writeAll(ctx, f.fsys, name, out, 0o644); err != nil {
		return fileFailure("edit "+in.FilePath, err)
	}
	if !in.ReplaceAll {
		count = 1
	}
	return fmt.Sprintf("edited %s (%d replacement(s))", in.FilePath, count), false, nil
}

// walk visits the tree under root depth-first in name order, never
// following symbolic links, at most walkMaxEntries entries. fn gets the
// sandbox name, the path relative to root, and the entry.
func (f *fileTools) walk(ctx context.Context, root string, skipDir func(string) bool, fn func(name, rel string, fi sandbox.FileInfo) bool) error {
	visited := 0
	var rec func(dir, rel string) (bool, error)
	rec = func(dir, rel string) (bool, error) {
		entries, err := f.fsys.ReadDir(ctx, dir)
		if err != nil {
			if isInfra(err) && !errors.Is(err, sandbox.ErrNotFound) {
				return false, err
			}
			return true, nil // unreadable directory: skipped
		}
		for _, e := range entries {
			visited++
			if visited > walkMaxEntries {
				return false, nil
			}
			name := path.Join(dir, e.Name)
			r := e.Name
			if rel != "" {
				r = rel + "/" + e.Name
			}
			if !fn(name, r, e) {
				return false, nil
			}
			if e.IsDir() && (skipDir == nil || !skipDir(e.Name)) {
				if ok, err := rec(name, r); !ok || err != nil {
					return ok, err
				}
			}
		}
		return true, nil
	}
	_, err := rec(root, "")
	return err
}

func (f *fileTools) glob(ctx context.Context, input json.RawMessage) (string, bool, error) {
	var in GlobInput
	if err := json.Unmarshal(input, &in); err != nil {
		return fmt.Sprintf("invalid glob input: %v", err), true, nil
	}
	if in.Pattern == "" {
		return "glob: pattern is required", true, nil
	}
	if strings.HasPrefix(in.Pattern, "/") {
		return "glob: absolute pattern not permitted; pass a relative pattern (and optionally path)", true, nil
	}
	for _, seg := range strings.Split(in.Pattern, "/") {
		if seg == ".." {
			return fmt.Sprintf("glob: pattern %q must not contain a %q segment", in.Pattern, ".."), true, nil
		}
		if _, err := path.Match(seg, ""); err != nil {
			return fmt.Sprintf("glob: invalid pattern %q: %v", in.Pattern, err), true, nil
		}
	}
	dir := in.Path
	if dir == "" {
		dir = "."
	}
	root, err := f.resolve(ctx, dir)
	if err != nil {
		return f.resolveFailure("glob", err)
	}
	type entry struct {
		name  string
		mtime int64
	}
	var hits []entry
	err = f.walk(ctx, root, nil, func(name, rel string, fi sandbox.FileInfo) bool {
		if globMatch(strings.Split(in.Pattern, "/"), strings.Split(rel, "/"), map[[2]int]bool{}) {
			hits = append(hits, entry{name, fi.ModTime.UnixNano()})
		}
		return true
	})
	if err != nil {
		return fileFailure("glob", err)
	}
	if len(hits) == 0 {
		return "no matches", false, nil
	}
	sort.SliceStable(hits, func(i, j int) bool { return hits[i].mtime > hits[j].mtime })
	if len(hits) > globResultLimit {
		hits = hits[:globResultLimit]
	}
	out := make([]string, len(hits))
	for i, h := range hits {
		out[i] = h.name
	}
	return strings.Join(out, "\n"), false, nil
}

// globMatch matches path segments against pattern segments; "**" matches
// any number of segments (including none), other segments match one with
// path.Match semantics.
func globMatch(pat, name []string, memo map[[2]int]bool) bool {
	key := [2]int{len(pat), len(name)}
	if v, ok := memo[key]; ok {
		return v
	}
	res := func() bool {
		for len(pat) > 0 {
			if pat[0] == "**" {
				for len(pat) > 0 && pat[0] == "**" {
					pat = pat[1:]
				}
				if len(pat) == 0 {
					return true
				}
				for i := 0; i <= len(name); i++ {
					if globMatch(pat, name[i:], memo) {
						return true
					}
				}
				return false
			}
			if len(name) == 0 {
				return false
			}
			if ok, _ := path.Match(pat[0], name[0]); !ok {
				return false
			}
			pat, name = pat[1:], name[1:]
		}
		return len(name) == 0
	}()
	memo[key] = res
	return res
}

func (f *fileTools) grep(ctx context.Context, input json.RawMessage) (string, bool, error) {
	var in GrepInput
	if err := json.Unmarshal(input, &in); err != nil {
		return fmt.Sprintf("invalid grep input: %v", err), true, nil
	}
	if in.Pattern == "" {
		return "grep: pattern is required", true, nil
	}
	re, err := regexp.Compile(in.Pattern)
	if err != nil {
		return fmt.Sprintf("grep: invalid regex: %v", err), true, nil
	}
	dir := in.Path
	if dir == "" {
		dir = "."
	}
	root, err := f.resolve(ctx, dir)
	if err != nil {
		return f.resolveFailure("grep", err)
	}
	var hits []string
	budget := grepOutputLimit
	var infra error
	search := func(name string) bool {
		rc, err := f.fsys.ReadFile(ctx, name)
		if err != nil {
			if isInfra(err) && !errors.Is(err, sandbox.ErrNotFound) {
				infra = err
				return false
			}
			return true
		}
		defer rc.Close()
		br := bufio.NewReader(rc)
		if sniff, _ := br.Peek(512); bytes.IndexByte(sniff, 0) >= 0 {
			return true // binary
		}
		data, err := io.ReadAll(io.LimitReader(br, grepMaxFileBytes+1))
		if err != nil || len(data) > grepMaxFileBytes {
			return true
		}
		for i, line := range strings.Split(string(data), "\n") {
			if re.MatchString(line) {
				hit := fmt.Sprintf("%s:%d:%s", name, i+1, line)
				budget -= len(hit) + 1
				if budget < 0 {
					hits = append(hits, "[output truncated]")
					return false
				}
				hits = append(hits, hit)
			}
		}
		return true
	}
	fi, err := f.fsys.Stat(ctx, root)
	if err != nil {
		return fileFailure("grep "+dir, err)
	}
	if fi.Mode.IsRegular() {
		search(root)
	} else {
		skip := func(dir string) bool { return dir == ".git" || dir == "node_modules" }
		err = f.walk(ctx, root, skip, func(name, rel string, fi sandbox.FileInfo) bool {
			if fi.IsDir() {
				return true
			}
			if !fi.Mode.IsRegular() || fi.Size > grepMaxFileBytes {
				return true // links, devices, huge files
			}
			return search(name)
		})
		if err == nil {
			err = infra
		}
		if err != nil {
			return fileFailure("grep", err)
		}
	}
	if len(hits) == 0 {
		return "no matches", false, nil
	}
	return strings.Join(hits, "\n"), false, nil
}
