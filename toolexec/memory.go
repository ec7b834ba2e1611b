package toolexec

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/bits"
	"path"
	"strconv"
	"strings"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// memoryMaxLines is the reference executor's limit on a viewed memory file.
const memoryMaxLines = 999999

// memoryMaxBytes bounds a memory file the tool loads.
const memoryMaxBytes = 64 << 20

// MemoryInput is the memory tool's input (memory_20250818).
type MemoryInput struct {
	Command    string  `json:"command"`
	Path       *string `json:"path,omitempty"`
	ViewRange  []int   `json:"view_range,omitempty"`
	FileText   *string `json:"file_text,omitempty"`
	OldStr     *string `json:"old_str,omitempty"`
	NewStr     *string `json:"new_str,omitempty"`
	InsertLine *int    `json:"insert_line,omitempty"`
	InsertText *string `json:"insert_text,omitempty"`
	OldPath    *string `json:"old_path,omitempty"`
	NewPath    *string `json:"new_path,omitempty"`
}

// memoryTool is the client side of the memory tool: /memories mapped onto a
// store the host chose ("/" of the store is /memories).
type memoryTool struct {
	store FS
}

func (m *memoryTool) run(ctx context.Context, input json.RawMessage) (string, bool, error) {
	var in MemoryInput
	if msg, bad := decode("memory", input, &in); bad {
		return msg, true, nil
	}
	return outcome(m.do(ctx, &in))
}

func required(field, command string, v *string) error {
	if v == nil {
		return toolErr(fmt.Sprintf("Error: Parameter `%s` is required for command: %s", field, command))
	}
	return nil
}

func (m *memoryTool) do(ctx context.Context, in *MemoryInput) (string, error) {
	switch in.Command {
	case "":
		return "", toolErr("Error: Parameter `command` is required")
	case "view", "create", "str_replace", "insert", "delete":
		if err := required("path", in.Command, in.Path); err != nil {
			return "", err
		}
	case "rename":
		if err := required("old_path", in.Command, in.OldPath); err != nil {
			return "", err
		}
		if err := required("new_path", in.Command, in.NewPath); err != nil {
			return "", err
		}
	default:
		return "", toolErr(fmt.Sprintf("Error: Unknown command: %s. The memory tool's commands are: view, create, str_replace, insert, delete, rename", in.Command))
	}
	if err := m.store.MkdirAll(ctx, "/", 0o700); err != nil {
		return "", storeFailure(err)
	}
	switch in.Command {
	case "view":
		return m.view(ctx, *in.Path, in.ViewRange)
	case "create":
		if err := required("file_text", "create", in.FileText); err != nil {
			return "", err
		}
		return m.create(ctx, *in.Path, *in.FileText)
	case "str_replace":
		if err := required("old_str", "str_replace", in.OldStr); err != nil {
			return "", err
		}
		newStr := ""
		if in.NewStr != nil {
			newStr = *in.NewStr
		}
		return m.strReplace(ctx, *in.Path, *in.OldStr, newStr)
	case "insert":
		if in.InsertLine == nil {
			return "", toolErr("Error: Parameter `insert_line` is required for command: insert")
		}
		if err := required("insert_text", "insert", in.InsertText); err != nil {
			return "", err
		}
		return m.insert(ctx, *in.Path, *in.InsertLine, *in.InsertText)
	case "delete":
		return m.delete(ctx, *in.Path)
	default:
		return m.rename(ctx, *in.OldPath, *in.NewPath)
	}
}

// resolve maps a /memories path to a store name, refusing anything outside.
func (m *memoryTool) resolve(ctx context.Context, p string) (string, error) {
	if p != "/memories" && !strings.HasPrefix(p, "/memories/") {
		return "", toolErr("Error: Path must start with /memories, got: " + p)
	}
	rel := strings.TrimLeft(strings.TrimPrefix(p, "/memories"), "/")
	if strings.IndexByte(rel, 0) >= 0 {
		return "", toolErr(fmt.Sprintf("Error: Path %s would escape /memories directory", p))
	}
	// Resolve ".." lexically, as the reference does, and refuse a result
	// outside the root.
	clean := path.Clean(rel)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", toolErr(fmt.Sprintf("Error: Path %s would escape /memories directory", p))
	}
	name := path.Clean("/" + clean)
	// A symbolic link's target cannot be checked through the store, so no
	// component may be one.
	cur := "/"
	for _, el := range strings.Split(strings.TrimPrefix(name, "/"), "/") {
		if el == "" {
			continue
		}
		cur = path.Join(cur, el)
		fi, err := m.store.Stat(ctx, cur)
		if err != nil {
			if errors.Is(err, sandbox.ErrNotFound) {
				break
			}
			return "", storeFailure(err)
		}
		if fi.Mode&fs.ModeSymlink != 0 {
			return "", toolErr("Error: Path would escape /memories directory via symlink")
		}
	}
	return name, nil
}

// storeFailure is the result of a failed store operation: the store's own
// failure (a Go error for the host), or an is_error text naming the kind of
// failure and nothing of the store's host paths.
func storeFailure(err error) error {
	if isInfra(err) {
		return infraErr{err}
	}
	return toolErr("Error: " + kindMessage(err))
}

// stat returns the entry at name, ok=false when missing.
func (m *memoryTool) stat(ctx context.Context, name string) (sandbox.FileInfo, bool, error) {
	fi, err := m.store.Stat(ctx, name)
	if err != nil {
		if errors.Is(err, sandbox.ErrNotFound) {
			return fi, false, nil
		}
		return fi, false, storeFailure(err)
	}
	return fi, true, nil
}

func (m *memoryTool) view(ctx context.Context, p string, viewRange []int) (string, error) {
	name, err := m.resolve(ctx, p)
	if err != nil {
		return "", err
	}
	fi, ok, err := m.stat(ctx, name)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", toolErr(fmt.Sprintf("The path %s does not exist. Please provide a valid path.", p))
	}
	if fi.IsDir() {
		lines := []string{humanSize(fi.Size) + "\t" + p}
		var walk func(dir, rel string, depth int) error
		walk = func(dir, rel string, depth int) error {
			entries, err := m.store.ReadDir(ctx, dir)
			if err != nil {
				if isInfra(err) {
					return infraErr{err}
				}
				return nil
			}
			for _, e := range entries {
				if strings.HasPrefix(e.Name, ".") || e.Name == "node_modules" {
					continue
				}
				r := e.Name
				if rel != "" {
					r = rel + "/" + e.Name
				}
				switch {
				case e.IsDir():
					lines = append(lines, humanSize(e.Size)+"\t"+p+"/"+r+"/")
					if depth < 2 {
						if err := walk(path.Join(dir, e.Name), r, depth+1); err != nil {
							return err
						}
					}
				case e.Mode.IsRegular():
					lines = append(lines, humanSize(e.Size)+"\t"+p+"/"+r)
				}
			}
			return nil
		}
		if err := walk(name, "", 1); err != nil {
			return "", err
		}
		return fmt.Sprintf("Here're the files and directories up to 2 levels deep in %s, excluding hidden items and node_modules:\n", p) + strings.Join(lines, "\n"), nil
	}
	if !fi.Mode.IsRegular() {
		return "", toolErr("Error: Unsupported file type for " + p)
	}
	data, err := m.load(ctx, name, p)
	if err != nil {
		return "", err
	}
	lines := strings.Split(string(data), "\n")
	if len(lines) > memoryMaxLines {
		return "", toolErr(fmt.Sprintf("File %s exceeds maximum line limit of 999,999 lines.", p))
	}
	start := 1
	if len(viewRange) == 2 {
		from := max(1, viewRange[0]) - 1
		to := len(lines)
		if viewRange[1] != -1 {
			to = viewRange[1]
		}
		lines = pySlice(lines, from, to)
		start = from + 1
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Here's the content of %s with line numbers:\n", p)
	for i, l := range lines {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%6d\t%s", start+i, l)
	}
	return b.String(), nil
}

// pySlice is Python's s[from:to] for non-negative from and any to.
func pySlice(s []string, from, to int) []string {
	if to < 0 {
		to += len(s)
	}
	from = min(max(from, 0), len(s))
	to = min(max(to, 0), len(s))
	if from >= to {
		return nil
	}
	return s[from:to]
}

func (m *memoryTool) load(ctx context.Context, name, p string) ([]byte, error) {
	data, tooBig, err := readAll(ctx, m.store, name, memoryMaxBytes)
	if err != nil {
		if errors.Is(err, sandbox.ErrNotFound) {
			return nil, toolErr(fmt.Sprintf("Error: The file %s no longer exists (may have been deleted or renamed concurrently).", p))
		}
		return nil, storeFailure(err)
	}
	if tooBig {
		return nil, toolErr(fmt.Sprintf("Error: %s is larger than the %d-byte limit of the memory tool", p, memoryMaxBytes))
	}
	return data, nil
}

func (m *memoryTool) create(ctx context.Context, p, text string) (string, error) {
	name, err := m.resolve(ctx, p)
	if err != nil {
		return "", err
	}
	if _, ok, err := m.stat(ctx, name); err != nil {
		return "", err
	} else if ok {
		return "", toolErr(fmt.Sprintf("Error: File %s already exists", p))
	}
	if err := m.store.MkdirAll(ctx, path.Dir(name), 0o700); err != nil {
		return "", storeFailure(err)
	}
	if err := m.store.WriteFile(ctx, name, strings.NewReader(text), 0o600); err != nil {
		return "", storeFailure(err)
	}
	return "File created successfully at: " + p, nil
}

// existingFile resolves p and checks it is a regular file; missing is the
// error text when it is not (the documentation answers a directory with the
// "does not exist" error too).
func (m *memoryTool) existingFile(ctx context.Context, p, missing string) (string, error) {
	name, err := m.resolve(ctx, p)
	if err != nil {
		return "", err
	}
	fi, ok, err := m.stat(ctx, name)
	if err != nil {
		return "", err
	}
	if !ok || !fi.Mode.IsRegular() {
		return "", toolErr(missing)
	}
	return name, nil
}

func (m *memoryTool) strReplace(ctx context.Context, p, oldStr, newStr string) (string, error) {
	name, err := m.existingFile(ctx, p, fmt.Sprintf("Error: The path %s does not exist. Please provide a valid path.", p))
	if err != nil {
		return "", err
	}
	data, err := m.load(ctx, name, p)
	if err != nil {
		return "", err
	}
	content := string(data)
	count := 0
	if oldStr != "" {
		count = strings.Count(content, oldStr)
	}
	if count == 0 {
		return "", toolErr(fmt.Sprintf("No replacement was performed, old_str `%s` did not appear verbatim in %s.", oldStr, p))
	}
	if count > 1 {
		var at []string
		for start := 0; ; {
			i := strings.Index(content[start:], oldStr)
			if i < 0 {
				break
			}
			pos := start + i
			at = append(at, strconv.Itoa(strings.Count(content[:pos], "\n")+1))
			start = pos + 1
		}
		return "", toolErr(fmt.Sprintf("No replacement was performed. Multiple occurrences of old_str `%s` in lines: %s. Please ensure it is unique", oldStr, strings.Join(at, ", ")))
	}
	pos := strings.Index(content, oldStr)
	changed := strings.Count(content[:pos], "\n")
	updated := strings.Replace(content, oldStr, newStr, 1)
	if err := m.store.WriteFile(ctx, name, strings.NewReader(updated), 0o600); err != nil {
		return "", storeFailure(err)
	}
	lines := strings.Split(updated, "\n")
	from, to := max(0, changed-2), min(len(lines), changed+3)
	var b strings.Builder
	b.WriteString("The memory file has been edited. Here is the snippet showing the change (with line numbers):\n")
	for n := from + 1; n <= to; n++ {
		if n > from+1 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%6d\t%s", n, lines[n-1])
	}
	return b.String(), nil
}

func (m *memoryTool) insert(ctx context.Context, p string, line int, text string) (string, error) {
	name, err := m.existingFile(ctx, p, fmt.Sprintf("Error: The path %s does not exist", p))
	if err != nil {
		return "", err
	}
	data, err := m.load(ctx, name, p)
	if err != nil {
		return "", err
	}
	var lines []string
	if s := strings.TrimSuffix(string(data), "\n"); len(data) > 0 {
		lines = strings.Split(s, "\n")
	}
	if line < 0 || line > len(lines) {
		return "", toolErr(fmt.Sprintf("Error: Invalid `insert_line` parameter: %d. It should be within the range of lines of the file: [0, %d]", line, len(lines)))
	}
	lines = append(lines[:line], append([]string{strings.TrimRight(text, "\n")}, lines[line:]...)...)
	updated := strings.Join(lines, "\n")
	if !strings.HasSuffix(updated, "\n") {
		updated += "\n"
	}
	if err := m.store.WriteFile(ctx, name, strings.NewReader(updated), 0o600); err != nil {
		return "", storeFailure(err)
	}
	return fmt.Sprintf("The file %s has been edited.", p), nil
}

func (m *memoryTool) delete(ctx context.Context, p string) (string, error) {
	name, err := m.resolve(ctx, p)
	if err != nil {
		return "", err
	}
	if name == "/" {
		return "", toolErr("Error: Cannot delete the /memories directory itself")
	}
	fi, ok, err := m.stat(ctx, name)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", toolErr(fmt.Sprintf("Error: The path %s does not exist", p))
	}
	if fi.IsDir() {
		err = m.store.RemoveAll(ctx, name)
	} else {
		err = m.store.Remove(ctx, name)
	}
	if err != nil {
		if errors.Is(err, sandbox.ErrNotFound) {
			return "", toolErr(fmt.Sprintf("Error: The path %s does not exist", p))
		}
		return "", storeFailure(err)
	}
	return "Successfully deleted " + p, nil
}

func (m *memoryTool) rename(ctx context.Context, oldPath, newPath string) (string, error) {
	oldName, err := m.resolve(ctx, oldPath)
	if err != nil {
		return "", err
	}
	newName, err := m.resolve(ctx, newPath)
	if err != nil {
		return "", err
	}
	if oldName == "/" {
		return "", toolErr("Error: Cannot rename the /memories directory itself")
	}
	if _, ok, err := m.stat(ctx, newName); err != nil {
		return "", err
	} else if ok {
		return "", toolErr(fmt.Sprintf("Error: The destination %s already exists", newPath))
	}
	if _, ok, err := m.stat(ctx, oldName); err != nil {
		return "", err
	} else if !ok {
		return "", toolErr(fmt.Sprintf("Error: The path %s does not exist", oldPath))
	}
	if newName == oldName || strings.HasPrefix(newName, oldName+"/") {
		return "", toolErr(fmt.Sprintf("Error: Cannot move %s into itself", oldPath))
	}
	if err := m.store.MkdirAll(ctx, path.Dir(newName), 0o700); err != nil {
		return "", storeFailure(err)
	}
	if err := m.store.Rename(ctx, oldName, newName); err != nil {
		if errors.Is(err, sandbox.ErrNotFound) {
			return "", toolErr(fmt.Sprintf("Error: The path %s does not exist", oldPath))
		}
		return "", storeFailure(err)
	}
	return fmt.Sprintf("Successfully renamed %s to %s", oldPath, newPath), nil
}

// humanSize formats a size as the reference does: 0B, 512B, 4.0K, 1.5M.
func humanSize(n int64) string {
	if n <= 0 {
		return "0B"
	}
	units := []string{"B", "K", "M", "G"}
	i := min((bits.Len64(uint64(n))-1)/10, len(units)-1)
	v := float64(n) / float64(int64(1)<<(10*i))
	if v == float64(int64(v)) {
		return strconv.FormatInt(int64(v), 10) + units[i]
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + units[i]
}
