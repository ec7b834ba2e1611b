package sshbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/pkg/sftp"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

// errEscape is the cause of a name that leads out of the sandbox.
var errEscape = errors.New("leads outside the sandbox directory")

// resolve returns the remote path of name: relative names start at the
// workdir, absolute ones must lie in the root, and symbolic links are
// resolved component by component (the last one only when follow is true),
// each staying in the root. Components that do not exist end the walk.
func (s *Sandbox) resolve(name string, follow bool) (string, error) {
	if !path.IsAbs(name) {
		name = path.Join(s.meta.Workdir, name)
	}
	name = path.Clean(name)
	if !s.inside(name) {
		return "", pathErr("resolve", name, errEscape)
	}
	rest := strings.Split(strings.TrimPrefix(strings.TrimPrefix(name, s.root), "/"), "/")
	if len(rest) == 1 && rest[0] == "" {
		rest = nil
	}
	cur := s.root
	for links := 0; len(rest) > 0; {
		comp := rest[0]
		rest = rest[1:]
		next := path.Join(cur, comp)
		if len(rest) == 0 && !follow {
			return next, nil
		}
		fi, err := s.p.sftp.Lstat(next)
		if errors.Is(err, fs.ErrNotExist) {
			return path.Join(append([]string{next}, rest...)...), nil
		}
		if err != nil {
			return "", pathErr("lstat", next, err)
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		if links++; links > 40 {
			return "", pathErr("resolve", name, errors.New("too many levels of symbolic links"))
		}
		target, err := s.p.sftp.ReadLink(next)
		if err != nil {
			return "", pathErr("readlink", next, err)
		}
		if !path.IsAbs(target) {
			// cur holds no links, so ".." in target is lexical here.
			target = path.Join(cur, target)
		}
		target = path.Clean(target)
		if !s.inside(target) {
			return "", pathErr("resolve", name, fmt.Errorf("%s links to %s, which %w", next, target, errEscape))
		}
		t := strings.TrimPrefix(strings.TrimPrefix(target, s.root), "/")
		cur = s.root
		var parts []string
		if t != "" {
			parts = strings.Split(t, "/")
		}
		rest = append(parts, rest...)
	}
	return cur, nil
}

func (s *Sandbox) fileErr(op string, err error) error {
	if errors.Is(err, errEscape) {
		return sandbox.NewError(Name, s.meta.ID, op, sandbox.ErrPermissionDenied, err)
	}
	return s.err(op, err)
}

// ReadFile opens the named file over SFTP.
func (s *Sandbox) ReadFile(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := s.resolve(name, true)
	if err != nil {
		return nil, s.fileErr("read", err)
	}
	f, err := s.p.sftp.Open(p)
	if err != nil {
		return nil, s.fileErr("read", pathErr("open", p, err))
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, s.fileErr("read", pathErr("stat", p, err))
	}
	if fi.IsDir() {
		f.Close()
		return nil, sandbox.NewError(Name, s.meta.ID, "read", sandbox.ErrInvalidArgument, pathErr("read", p, errors.New("is a directory")))
	}
	return &reader{f: f}, nil
}

// reader passes WriteTo through, so io.Copy uses SFTP's concurrent reads.
type reader struct{ f *sftp.File }

func (r *reader) Read(p []byte) (int, error)              { return r.f.Read(p) }
func (r *reader) WriteTo(w io.Writer) (int64, error)      { return r.f.WriteTo(w) }
func (r *reader) Close() error                            { return r.f.Close() }
func (r *reader) Seek(o int64, whence int) (int64, error) { return r.f.Seek(o, whence) }

// WriteFile writes a temporary file beside the named one and renames it into
// place.
func (s *Sandbox) WriteFile(ctx context.Context, name string, r io.Reader, perm fs.FileMode) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := s.resolve(name, true)
	if err != nil {
		return s.fileErr("write", err)
	}
	if fi, err := s.p.sftp.Lstat(p); err == nil && fi.IsDir() {
		return sandbox.NewError(Name, s.meta.ID, "write", sandbox.ErrInvalidArgument, pathErr("write", p, errors.New("is a directory")))
	}
	if err := s.writeAtomic(p, ctxReader{ctx, r}, perm); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return s.fileErr("write", err)
	}
	return nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func (s *Sandbox) writeAtomic(p string, r io.Reader, perm fs.FileMode) error {
	var rnd [6]byte
	rand.Read(rnd[:])
	tmp := path.Join(path.Dir(p), ".perimeter-write-"+hex.EncodeToString(rnd[:]))
	f, err := s.p.sftp.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return pathErr("create", tmp, err)
	}
	_, err = f.ReadFrom(r)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err == nil {
		err = s.p.sftp.Chmod(tmp, sftpPerm(perm))
	}
	if err == nil {
		err = s.p.sftp.PosixRename(tmp, p)
	}
	if err != nil {
		s.p.sftp.Remove(tmp)
		return pathErr("write", p, err)
	}
	return nil
}

// sftpPerm converts fs.FileMode's setuid, setgid and sticky bits, which
// pkg/sftp's Chmod understands in this spelling.
func sftpPerm(perm fs.FileMode) os.FileMode {
	return perm & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
}

// Stat describes the named file without following a final link.
func (s *Sandbox) Stat(ctx context.Context, name string) (driver.FileInfo, error) {
	p, err := s.resolve(name, false)
	if err != nil {
		return driver.FileInfo{}, s.fileErr("stat", err)
	}
	fi, err := s.p.sftp.Lstat(p)
	if err != nil {
		return driver.FileInfo{}, s.fileErr("stat", pathErr("lstat", p, err))
	}
	return fileInfo(fi, path.Base(name)), nil
}

func fileInfo(fi fs.FileInfo, name string) driver.FileInfo {
	return driver.FileInfo{Name: name, Size: fi.Size(), Mode: fi.Mode(), ModTime: fi.ModTime()}
}

// ReadDir lists the named directory, sorted by name.
func (s *Sandbox) ReadDir(ctx context.Context, name string) ([]driver.FileInfo, error) {
	p, err := s.resolve(name, true)
	if err != nil {
		return nil, s.fileErr("readdir", err)
	}
	list, err := s.p.sftp.ReadDirContext(ctx, p)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, s.fileErr("readdir", pathErr("readdir", p, err))
	}
	out := make([]driver.FileInfo, 0, len(list))
	for _, fi := range list {
		out = append(out, fileInfo(fi, fi.Name()))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// MkdirAll creates the named directory and its missing parents, each with
// perm.
func (s *Sandbox) MkdirAll(ctx context.Context, name string, perm fs.FileMode) error {
	p, err := s.resolve(name, true)
	if err != nil {
		return s.fileErr("mkdir", err)
	}
	if _, err := s.p.sftp.Lstat(s.root); err != nil {
		return s.fileErr("mkdir", pathErr("lstat", s.root, err))
	}
	cur := s.root
	for _, comp := range strings.Split(strings.TrimPrefix(strings.TrimPrefix(p, s.root), "/"), "/") {
		if comp == "" {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		cur = path.Join(cur, comp)
		fi, err := s.p.sftp.Stat(cur)
		if err == nil {
			if !fi.IsDir() {
				return sandbox.NewError(Name, s.meta.ID, "mkdir", sandbox.ErrAlreadyExists, pathErr("mkdir", cur, errors.New("exists and is not a directory")))
			}
			continue
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return s.fileErr("mkdir", pathErr("stat", cur, err))
		}
		if err := s.p.sftp.Mkdir(cur); err != nil {
			if fi, e := s.p.sftp.Stat(cur); e == nil && fi.IsDir() {
				continue // made by someone else meanwhile
			}
			return s.fileErr("mkdir", pathErr("mkdir", cur, err))
		}
		if err := s.p.sftp.Chmod(cur, sftpPerm(perm)); err != nil {
			return s.fileErr("mkdir", pathErr("chmod", cur, err))
		}
	}
	return nil
}

// Remove removes the named file, link or empty directory.
func (s *Sandbox) Remove(ctx context.Context, name string) error {
	p, err := s.resolve(name, false)
	if err != nil {
		return s.fileErr("remove", err)
	}
	if p == s.root {
		return sandbox.Errorf(Name, s.meta.ID, "remove", sandbox.ErrInvalidArgument, "cannot remove the sandbox's root directory")
	}
	fi, err := s.p.sftp.Lstat(p)
	if err != nil {
		return s.fileErr("remove", pathErr("lstat", p, err))
	}
	if fi.IsDir() {
		// SFTP reports a non-empty directory as a bare failure.
		if list, err := s.p.sftp.ReadDirContext(ctx, p); err == nil && len(list) > 0 {
			return sandbox.NewError(Name, s.meta.ID, "remove", sandbox.ErrInvalidArgument, pathErr("remove", p, errors.New("directory not empty")))
		}
		err = s.p.sftp.RemoveDirectory(p)
	} else {
		err = s.p.sftp.Remove(p)
	}
	if err != nil {
		return s.fileErr("remove", pathErr("remove", p, err))
	}
	return nil
}

// RemoveAll removes the named file or tree; links are removed, not followed.
func (s *Sandbox) RemoveAll(ctx context.Context, name string) error {
	p, err := s.resolve(name, false)
	if err != nil {
		return s.fileErr("removeall", err)
	}
	if p == s.root {
		return sandbox.Errorf(Name, s.meta.ID, "removeall", sandbox.ErrInvalidArgument, "cannot remove the sandbox's root directory")
	}
	if _, err := s.p.sftp.Lstat(s.root); err != nil {
		return s.fileErr("removeall", pathErr("lstat", s.root, err))
	}
	if err := s.removeTree(ctx, p); err != nil {
		return s.fileErr("removeall", err)
	}
	return nil
}

func (s *Sandbox) removeTree(ctx context.Context, p string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	fi, err := s.p.sftp.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return pathErr("lstat", p, err)
	}
	if !fi.IsDir() {
		if err := s.p.sftp.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return pathErr("remove", p, err)
		}
		return nil
	}
	list, err := s.p.sftp.ReadDirContext(ctx, p)
	if err != nil {
		return pathErr("readdir", p, err)
	}
	for _, e := range list {
		if err := s.removeTree(ctx, path.Join(p, e.Name())); err != nil {
			return err
		}
	}
	if err := s.p.sftp.RemoveDirectory(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return pathErr("rmdir", p, err)
	}
	return nil
}

// Rename moves oldname to newname, replacing a file at newname.
func (s *Sandbox) Rename(ctx context.Context, oldname, newname string) error {
	from, err := s.resolve(oldname, false)
	if err != nil {
		return s.fileErr("rename", err)
	}
	to, err := s.resolve(newname, false)
	if err != nil {
		return s.fileErr("rename", err)
	}
	if from == s.root || to == s.root {
		return sandbox.Errorf(Name, s.meta.ID, "rename", sandbox.ErrInvalidArgument, "cannot rename the sandbox's root directory")
	}
	if err := s.p.sftp.PosixRename(from, to); err != nil {
		return s.fileErr("rename", pathErr("rename", from, err))
	}
	return nil
}
