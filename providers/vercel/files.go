package vercel

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"strings"
	"time"

	"github.com/perimeter-sdk/perimeter/internal/shellfs"
	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

func (s *Sandbox) clean(op, name string) (string, error) {
	if err := s.checkLive(op); err != nil {
		return "", err
	}
	return s.abs(name), nil
}

// abs resolves a name the portable layer checked (clean, without "..")
// against the working directory.
func (s *Sandbox) abs(name string) string {
	if path.IsAbs(name) {
		return name
	}
	return path.Join(s.dir(), name)
}

// ReadFile reads the named file with POST …/fs/read; the body streams.
func (s *Sandbox) ReadFile(ctx context.Context, name string) (io.ReadCloser, error) {
	const op = "read file"
	p, err := s.clean(op, name)
	if err != nil {
		return nil, err
	}
	var resp *http.Response
	err = s.onSession(ctx, op, func(sid string) error {
		var err error
		resp, err = s.p.c.Do(ctx, http.MethodPost, s.sessionPath(sid, "/fs/read"), nil, map[string]string{"path": p})
		return err
	})
	if err != nil {
		var ae *APIError
		if errors.As(err, &ae) && ae.Status == http.StatusBadRequest {
			// The API answers 400 for a directory; say so, checking it is one.
			if fi, serr := s.Stat(ctx, p); serr == nil && fi.IsDir() {
				return nil, sandbox.Errorf(providerName, s.name, op, sandbox.ErrInvalidArgument, "%s is a directory", p)
			}
		}
		return nil, wrap(s.name, op, fmt.Errorf("%s: %w", p, err))
	}
	return resp.Body, nil
}

// WriteFile writes the named file with POST …/fs/write: a gzip-compressed
// tar holding one entry, relative to "x-cwd: /". r is read whole into a
// temporary file on this host first, so a failing r sends nothing; the
// parent directory is checked with a command, as the API itself creates
// missing parents.
func (s *Sandbox) WriteFile(ctx context.Context, name string, r io.Reader, perm fs.FileMode) error {
	const op = "write file"
	p, err := s.clean(op, name)
	if err != nil {
		return err
	}
	if p == "/" {
		return sandbox.Errorf(providerName, s.name, op, sandbox.ErrInvalidArgument, "cannot write to /")
	}
	spool, err := os.CreateTemp("", "perimeter-vercel-*")
	if err != nil {
		return sandbox.NewError(providerName, s.name, op, sandbox.ErrUnavailable, err)
	}
	defer func() { spool.Close(); os.Remove(spool.Name()) }()
	// BestSpeed: the archive only carries the bytes; a higher level costs
	// several times the CPU (a 64 MiB file took seconds) for little gain.
	zw, _ := gzip.NewWriterLevel(spool, gzip.BestSpeed) // a valid level: no error
	tw := tar.NewWriter(zw)
	// The tar header needs the size, so the content goes to a second file.
	raw, err := os.CreateTemp("", "perimeter-vercel-*")
	if err != nil {
		return sandbox.NewError(providerName, s.name, op, sandbox.ErrUnavailable, err)
	}
	defer func() { raw.Close(); os.Remove(raw.Name()) }()
	n, err := io.Copy(raw, readerCtx{ctx, r})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return sandbox.NewError(providerName, s.name, op, sandbox.ErrInvalidArgument, fmt.Errorf("reading the content for %s: %w", p, err))
	}
	hdr := &tar.Header{Name: strings.TrimPrefix(p, "/"), Mode: int64(driver.ChmodBits(perm)), Size: n,
		Typeflag: tar.TypeReg, ModTime: time.Now(), Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return sandbox.NewError(providerName, s.name, op, sandbox.ErrInvalidArgument, err)
	}
	if _, err := raw.Seek(0, io.SeekStart); err != nil {
		return sandbox.NewError(providerName, s.name, op, sandbox.ErrUnavailable, err)
	}
	if _, err := io.Copy(tw, raw); err != nil {
		return sandbox.NewError(providerName, s.name, op, sandbox.ErrUnavailable, err)
	}
	if err := errors.Join(tw.Close(), zw.Close()); err != nil {
		return sandbox.NewError(providerName, s.name, op, sandbox.ErrUnavailable, err)
	}
	size, _ := spool.Seek(0, io.SeekCurrent)

	// The API creates missing parents; the contract wants ErrNotFound.
	if parent := path.Dir(p); parent != "/" {
		res, err := s.runInternal(ctx, op, "test", "-d", parent)
		if err != nil {
			return err
		}
		if res.code != 0 {
			return sandbox.Errorf(providerName, s.name, op, sandbox.ErrNotFound, "parent directory %s does not exist", parent)
		}
	}
	b := &body{contentType: "application/gzip", header: http.Header{"X-Cwd": {"/"}},
		open: func() (io.ReadCloser, error) {
			return io.NopCloser(io.NewSectionReader(spool, 0, size)), nil
		}}
	err = s.onSession(ctx, op, func(sid string) error {
		resp, err := s.p.c.do(ctx, http.MethodPost, s.sessionPath(sid, "/fs/write"), nil, b)
		if err == nil {
			resp.Body.Close()
		}
		return err
	})
	if err != nil {
		return wrap(s.name, op, fmt.Errorf("%s: %w", p, err))
	}
	return nil
}

// readerCtx stops a copy when ctx ends.
type readerCtx struct {
	ctx context.Context
	r   io.Reader
}

func (r readerCtx) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// result is an internal command's outcome.
type result struct {
	code           int
	stdout, stderr []byte
}

// runInternal runs a command for a file operation, keeping its output.
func (s *Sandbox) runInternal(ctx context.Context, op string, args ...string) (*result, error) {
	var stdout, stderr bytes.Buffer
	proc, err := s.Start(ctx, &sandbox.Cmd{Args: args, Stdout: &stdout, Stderr: &limitWriter{&stderr, 64 << 10}})
	if err != nil {
		return nil, relabel(err, op)
	}
	st, err := proc.Wait(ctx)
	if err != nil {
		return nil, relabel(err, op)
	}
	return &result{code: st.Code, stdout: stdout.Bytes(), stderr: stderr.Bytes()}, nil
}

func relabel(err error, op string) error {
	var se *sandbox.Error
	if errors.As(err, &se) && se.Op == "exec" {
		c := *se
		c.Op = op
		return &c
	}
	return err
}

type limitWriter struct {
	w *bytes.Buffer
	n int
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if room := l.n - l.w.Len(); room > 0 {
		l.w.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// shfs runs package shellfs's scripts through the sandbox's commands.
func (s *Sandbox) shfs(op string) *shellfs.FS {
	return &shellfs.FS{Run: func(ctx context.Context, argv []string) ([]byte, []byte, int, error) {
		res, err := s.runInternal(ctx, op, argv...)
		if err != nil {
			return nil, nil, 0, err
		}
		return res.stdout, res.stderr, res.code, nil
	}}
}

// shErr gives a script's failure the provider, sandbox and operation; a
// failure to run it is already decorated.
func (s *Sandbox) shErr(op string, err error) error {
	var se *shellfs.Error
	if errors.As(err, &se) {
		return sandbox.NewError(providerName, s.name, op, nil, err)
	}
	return err
}

// Stat runs stat(1) in the sandbox (a final symbolic link is not followed).
func (s *Sandbox) Stat(ctx context.Context, name string) (sandbox.FileInfo, error) {
	const op = "stat"
	p, err := s.clean(op, name)
	if err != nil {
		return sandbox.FileInfo{}, err
	}
	fi, err := s.shfs(op).Stat(ctx, p)
	return fi, s.shErr(op, err)
}

// ReadDir lists the directory with a shell loop and stat(1), sorted by name.
func (s *Sandbox) ReadDir(ctx context.Context, name string) ([]sandbox.FileInfo, error) {
	const op = "read dir"
	p, err := s.clean(op, name)
	if err != nil {
		return nil, err
	}
	list, err := s.shfs(op).ReadDir(ctx, p)
	return list, s.shErr(op, err)
}

// MkdirAll makes the directory and its missing parents, each with perm, with
// a script (the API's mkdir is not recursive).
func (s *Sandbox) MkdirAll(ctx context.Context, name string, perm fs.FileMode) error {
	const op = "mkdir"
	p, err := s.clean(op, name)
	if err != nil {
		return err
	}
	return s.shErr(op, s.shfs(op).MkdirAll(ctx, p, perm))
}

// Remove removes the file or empty directory with a script.
func (s *Sandbox) Remove(ctx context.Context, name string) error {
	const op = "remove"
	p, err := s.clean(op, name)
	if err != nil {
		return err
	}
	if p == "/" {
		return sandbox.Errorf(providerName, s.name, op, sandbox.ErrInvalidArgument, "refusing to remove /")
	}
	return s.shErr(op, s.shfs(op).Remove(ctx, p))
}

// RemoveAll runs rm -rf.
func (s *Sandbox) RemoveAll(ctx context.Context, name string) error {
	const op = "remove all"
	p, err := s.clean(op, name)
	if err != nil {
		return err
	}
	return s.shErr(op, s.shfs(op).RemoveAll(ctx, p))
}

// Rename moves oldname to newname with a script: a file or an empty
// directory at newname is replaced; a file does not replace a directory.
func (s *Sandbox) Rename(ctx context.Context, oldname, newname string) error {
	const op = "rename"
	from, err := s.clean(op, oldname)
	if err != nil {
		return err
	}
	return s.shErr(op, s.shfs(op).Rename(ctx, from, s.abs(newname)))
}
