package toolexec

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// FS is the file access the editor, memory and file tools need. Every
// [sandbox.Sandbox] satisfies it; [Sub] narrows one to a directory and
// [HostDir] provides one on the host. Names are slash-separated; relative
// names are resolved as the implementation documents (a sandbox resolves them
// against its working directory). Errors carry the sandbox error kinds
// (ErrNotFound, ErrAlreadyExists, ErrPermissionDenied, ErrInvalidArgument).
type FS interface {
	ReadFile(ctx context.Context, name string) (io.ReadCloser, error)
	WriteFile(ctx context.Context, name string, r io.Reader, perm fs.FileMode) error
	Stat(ctx context.Context, name string) (sandbox.FileInfo, error)
	ReadDir(ctx context.Context, name string) ([]sandbox.FileInfo, error)
	MkdirAll(ctx context.Context, name string, perm fs.FileMode) error
	Remove(ctx context.Context, name string) error
	RemoveAll(ctx context.Context, name string) error
	Rename(ctx context.Context, oldname, newname string) error
}

// Sub returns an FS whose "/" is dir in fsys: every name is cleaned with
// [sandbox.CleanName] against "/" (so ".." elements are refused) and then
// joined under dir. It is how a directory in a sandbox becomes the memory
// tool's store: Sub(sb, "/memories").
func Sub(fsys FS, dir string) FS {
	return &subFS{fsys: fsys, dir: path.Clean("/" + dir)}
}

type subFS struct {
	fsys FS
	dir  string
}

func (s *subFS) name(name string) (string, error) {
	n, err := sandbox.CleanName("/", name)
	if err != nil {
		return "", err
	}
	return path.Join(s.dir, n), nil
}

func (s *subFS) ReadFile(ctx context.Context, name string) (io.ReadCloser, error) {
	n, err := s.name(name)
	if err != nil {
		return nil, err
	}
	return s.fsys.ReadFile(ctx, n)
}

func (s *subFS) WriteFile(ctx context.Context, name string, r io.Reader, perm fs.FileMode) error {
	n, err := s.name(name)
	if err != nil {
		return err
	}
	return s.fsys.WriteFile(ctx, n, r, perm)
}

func (s *subFS) Stat(ctx context.Context, name string) (sandbox.FileInfo, error) {
	n, err := s.name(name)
	if err != nil {
		return sandbox.FileInfo{}, err
	}
	return s.fsys.Stat(ctx, n)
}

func (s *subFS) ReadDir(ctx context.Context, name string) ([]sandbox.FileInfo, error) {
	n, err := s.name(name)
	if err != nil {
		return nil, err
	}
	return s.fsys.ReadDir(ctx, n)
}

func (s *subFS) MkdirAll(ctx context.Context, name string, perm fs.FileMode) error {
	n, err := s.name(name)
	if err != nil {
		return err
	}
	return s.fsys.MkdirAll(ctx, n, perm)
}

func (s *subFS) Remove(ctx context.Context, name string) error {
	n, err := s.name(name)
	if err != nil {
		return err
	}
	return s.fsys.Remove(ctx, n)
}

func (s *subFS) RemoveAll(ctx context.Context, name string) error {
	n, err := s.name(name)
	if err != nil {
		return err
	}
	return s.fsys.RemoveAll(ctx, n)
}

func (s *subFS) Rename(ctx context.Context, oldname, newname string) error {
	o, err := s.name(oldname)
	if err != nil {
		return err
	}
	n, err := s.name(newname)
	if err != nil {
		return err
	}
	return s.fsys.Rename(ctx, o, n)
}

// HostDir returns an FS over a directory on the host, for a memory store that
// outlives the sandbox. dir is created (mode 0700) if missing. Every access
// goes through an [os.Root], so neither ".." nor a symbolic link can lead
// out of dir. Close the returned FS when done with it.
func HostDir(dir string) (*HostFS, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, sandbox.NewError("host", "", "open host dir", nil, err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, sandbox.NewError("host", "", "open host dir", nil, err)
	}
	return &HostFS{root: root}, nil
}

// HostFS is a host directory as an [FS]; see [HostDir]. Its names are
// relative to the directory ("/" is the directory itself).
type HostFS struct {
	root *os.Root
}

var _ FS = (*HostFS)(nil)

// Close releases the directory.
func (h *HostFS) Close() error { return h.root.Close() }

func (h *HostFS) rel(op, name string) (string, error) {
	n, err := sandbox.CleanName("/", name)
	if err != nil {
		return "", sandbox.NewError("host", "", op, sandbox.ErrInvalidArgument, err)
	}
	if n == "/" {
		return ".", nil
	}
	return strings.TrimPrefix(n, "/"), nil
}

func hostErr(op string, err error) error {
	var kind error
	switch {
	case errors.Is(err, fs.ErrNotExist):
		kind = sandbox.ErrNotFound
	case errors.Is(err, fs.ErrExist):
		kind = sandbox.ErrAlreadyExists
	case errors.Is(err, fs.ErrPermission):
		kind = sandbox.ErrPermissionDenied
	default:
		kind = sandbox.ErrInvalidArgument
	}
	return sandbox.NewError("host", "", op, kind, err)
}

// ReadFile opens the named regular file.
func (h *HostFS) ReadFile(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rel, err := h.rel("read file", name)
	if err != nil {
		return nil, err
	}
	f, err := h.root.Open(rel)
	if err != nil {
		return nil, hostErr("read file", err)
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		if err == nil {
			return nil, sandbox.Errorf("host", "", "read file", sandbox.ErrInvalidArgument, "%s is not a regular file", name)
		}
		return nil, hostErr("read file", err)
	}
	return f, nil
}

// WriteFile writes the named file atomically (a temporary file renamed over
// it).
func (h *HostFS) WriteFile(ctx context.Context, name string, r io.Reader, perm fs.FileMode) error {
	const op = "write file"
	if err := ctx.Err(); err != nil {
		return err
	}
	rel, err := h.rel(op, name)
	if err != nil {
		return err
	}
	if rel == "." {
		return sandbox.Errorf("host", "", op, sandbox.ErrInvalidArgument, "cannot write to the directory itself")
	}
	if fi, err := h.root.Lstat(rel); err == nil && fi.IsDir() {
		return sandbox.Errorf("host", "", op, sandbox.ErrInvalidArgument, "%s is a directory", name)
	}
	suffix, err := newSentinel()
	if err != nil {
		return hostErr(op, err)
	}
	tmp := path.Join(path.Dir(rel), ".toolexec-write-"+suffix[12:36])
	f, err := h.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return hostErr(op, err)
	}
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		err = h.root.Rename(tmp, rel)
	}
	if err != nil {
		h.root.Remove(tmp)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return hostErr(op, err)
	}
	return nil
}

// Stat describes the named file without following a final symbolic link.
func (h *HostFS) Stat(ctx context.Context, name string) (sandbox.FileInfo, error) {
	if err := ctx.Err(); err != nil {
		return sandbox.FileInfo{}, err
	}
	rel, err := h.rel("stat", name)
	if err != nil {
		return sandbox.FileInfo{}, err
	}
	fi, err := h.root.Lstat(rel)
	if err != nil {
		return sandbox.FileInfo{}, hostErr("stat", err)
	}
	return sandbox.FileInfo{Name: path.Base("/" + rel), Size: fi.Size(), Mode: fi.Mode(), ModTime: fi.ModTime()}, nil
}

// ReadDir lists the named directory, sorted by name.
func (h *HostFS) ReadDir(ctx context.Context, name string) ([]sandbox.FileInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rel, err := h.rel("read dir", name)
	if err != nil {
		return nil, err
	}
	f, err := h.root.Open(rel)
	if err != nil {
		return nil, hostErr("read dir", err)
	}
	defer f.Close()
	entries, err := f.ReadDir(-1)
	if err != nil {
		return nil, hostErr("read dir", err)
	}
	out := make([]sandbox.FileInfo, 0, len(entries))
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			continue
		}
		out = append(out, sandbox.FileInfo{Name: e.Name(), Size: fi.Size(), Mode: fi.Mode(), ModTime: fi.ModTime()})
	}
	slices.SortFunc(out, func(a, b sandbox.FileInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// MkdirAll creates the named directory and its parents.
func (h *HostFS) MkdirAll(ctx context.Context, name string, perm fs.FileMode) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	rel, err := h.rel("mkdir", name)
	if err != nil {
		return err
	}
	if rel == "." {
		return nil
	}
	if err := h.root.MkdirAll(rel, perm); err != nil {
		return hostErr("mkdir", err)
	}
	return nil
}

// Remove removes the named file or empty directory.
func (h *HostFS) Remove(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	rel, err := h.rel("remove", name)
	if err != nil {
		return err
	}
	if err := h.root.Remove(rel); err != nil {
		return hostErr("remove", err)
	}
	return nil
}

// RemoveAll removes the named tree; a missing name is not an error.
func (h *HostFS) RemoveAll(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	rel, err := h.rel("remove all", name)
	if err != nil {
		return err
	}
	if rel == "." {
		return sandbox.Errorf("host", "", "remove all", sandbox.ErrInvalidArgument, "cannot remove the directory itself")
	}
	if err := h.root.RemoveAll(rel); err != nil {
		return hostErr("remove all", err)
	}
	return nil
}

// Rename moves oldname to newname.
func (h *HostFS) Rename(ctx context.Context, oldname, newname string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	o, err := h.rel("rename", oldname)
	if err != nil {
		return err
	}
	n, err := h.rel("rename", newname)
	if err != nil {
		return err
	}
	if err := h.root.Rename(o, n); err != nil {
		return hostErr("rename", err)
	}
	return nil
}

// readAll reads the named file whole, refusing one larger than limit bytes
// (limit <= 0: no limit). tooBig reports the refusal.
func readAll(ctx context.Context, fsys FS, name string, limit int64) (data []byte, tooBig bool, err error) {
	rc, err := fsys.ReadFile(ctx, name)
	if err != nil {
		return nil, false, err
	}
	defer rc.Close()
	var r io.Reader = rc
	if limit > 0 {
		r = io.LimitReader(rc, limit+1)
	}
	data, err = io.ReadAll(r)
	if err != nil {
		return nil, false, err
	}
	if limit > 0 && int64(len(data)) > limit {
		return nil, true, nil
	}
	return data, false, nil
}

// writeAll writes data to the named file, keeping the existing file's
// permissions when there is one.
func writeAll(ctx context.Context, fsys FS, name string, data []byte, perm fs.FileMode) error {
	if fi, err := fsys.Stat(ctx, name); err == nil && fi.Mode.IsRegular() {
		perm = fi.Mode.Perm()
	}
	return fsys.WriteFile(ctx, name, bytes.NewReader(data), perm)
}
