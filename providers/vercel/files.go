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
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/perimeter-sdk/perimeter/internal/posixfs"
	"github.com/perimeter-sdk/perimeter/sandbox"
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
	if r == nil {
		r = bytes.NewReader(nil)
	}
	spool, err := os.CreateTemp("", "perimeter-vercel-*")
	if err != nil {
		return sandbox.NewError(providerName, s.name, op, sandbox.ErrUnavailable, err)
	}
	defer func() { spool.Close(); os.Remove(spool.Name()) }()
	zw := gzip.NewWriter(spool)
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
	if perm == 0 {
		perm = 0o644
	}
	hdr := &tar.Header{Name: strings.TrimPrefix(p, "/"), Mode: int64(perm.Perm()), Size: n,
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
			return sandbox.Errorf(providerName, s.name, op, sandbox.ErrNotFound, "%s", "parent directory "+parent+" does not exist")
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

// failed turns a failed file command into an error whose kind is read from
// the message coreutils print.
func (s *Sandbox) failed(op, name string, res *result) error {
	msg := strings.TrimSpace(string(res.stderr))
	if msg == "" {
		msg = "exit status " + strconv.Itoa(res.code)
	}
	var kind error
	switch {
	case strings.Contains(msg, "No such file or directory"):
		kind = sandbox.ErrNotFound
	case strings.Contains(msg, "Permission denied"), strings.Contains(msg, "Operation not permitted"):
		kind = sandbox.ErrPermissionDenied
	case strings.Contains(msg, "File exists"):
		kind = sandbox.ErrAlreadyExists
	case res.code == 127:
		kind = sandbox.ErrNotSupported // the image lacks the tool
		msg = "the sandbox's image lacks a tool this operation runs: " + msg
	default:
		kind = sandbox.ErrInvalidArgument
	}
	return sandbox.Errorf(providerName, s.name, op, kind, "%s", name+": "+msg)
}

// statFormat prints size, raw mode in hex, modification time and name,
// NUL-terminated (GNU stat).
const statFormat = `%s %f %Y %n\0`

// Stat runs `stat` (which does not follow a final symbolic link).
func (s *Sandbox) Stat(ctx context.Context, name string) (sandbox.FileInfo, error) {
	const op = "stat"
	p, err := s.clean(op, name)
	if err != nil {
		return sandbox.FileInfo{}, err
	}
	res, err := s.runInternal(ctx, op, "stat", "--printf", statFormat, "--", p)
	if err != nil {
		return sandbox.FileInfo{}, err
	}
	if res.code != 0 {
		return sandbox.FileInfo{}, s.failed(op, p, res)
	}
	infos, err := parseStat(res.stdout)
	if err != nil || len(infos) != 1 {
		return sandbox.FileInfo{}, sandbox.Errorf(providerName, s.name, op, sandbox.ErrUnavailable,
			"%s: unexpected stat output %q", p, res.stdout)
	}
	fi := infos[0]
	fi.Name = path.Base(p)
	return fi, nil
}

// readDirScript lists a directory's entries with stat, failing clearly for
// a missing name or one that is not a directory.
const readDirScript = `if [ ! -e "$1" ]; then echo "$1: No such file or directory" >&2; exit 2; fi
if [ ! -d "$1" ]; then echo "$1: Not a directory" >&2; exit 3; fi
cd -- "$1" || exit 1
find . -mindepth 1 -maxdepth 1 -exec stat --printf '` + statFormat + `' {} +`

// ReadDir runs `find … -exec stat` and sorts the entries by name.
func (s *Sandbox) ReadDir(ctx context.Context, name string) ([]sandbox.FileInfo, error) {
	const op = "read dir"
	p, err := s.clean(op, name)
	if err != nil {
		return nil, err
	}
	res, err := s.runInternal(ctx, op, "sh", "-c", readDirScript, "sh", p)
	if err != nil {
		return nil, err
	}
	switch res.code {
	case 0:
	case 2:
		return nil, sandbox.Errorf(providerName, s.name, op, sandbox.ErrNotFound, "%s: no such directory", p)
	case 3:
		return nil, sandbox.Errorf(providerName, s.name, op, sandbox.ErrInvalidArgument, "%s is not a directory", p)
	default:
		return nil, s.failed(op, p, res)
	}
	infos, err := parseStat(res.stdout)
	if err != nil {
		return nil, sandbox.NewError(providerName, s.name, op, sandbox.ErrUnavailable, err)
	}
	for i := range infos {
		infos[i].Name = path.Base(infos[i].Name)
	}
	slices.SortFunc(infos, func(a, b sandbox.FileInfo) int { return strings.Compare(a.Name, b.Name) })
	return infos, nil
}

// parseStat reads records of statFormat.
func parseStat(out []byte) ([]sandbox.FileInfo, error) {
	var infos []sandbox.FileInfo
	for _, rec := range bytes.Split(out, []byte{0}) {
		if len(rec) == 0 {
			continue
		}
		f := strings.SplitN(string(rec), " ", 4)
		if len(f) != 4 {
			return nil, fmt.Errorf("bad stat record %q", rec)
		}
		size, err1 := strconv.ParseInt(f[0], 10, 64)
		raw, err2 := strconv.ParseUint(f[1], 16, 32)
		mtime, err3 := strconv.ParseInt(f[2], 10, 64)
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("bad stat record %q: %w", rec, err)
		}
		infos = append(infos, sandbox.FileInfo{Name: f[3], Size: size, Mode: posixfs.Mode(uint32(raw)), ModTime: time.Unix(mtime, 0)})
	}
	return infos, nil
}

// MkdirAll runs `mkdir -p` (the API's mkdir is not recursive). perm applies
// to the directories it creates.
func (s *Sandbox) MkdirAll(ctx context.Context, name string, perm fs.FileMode) error {
	const op = "mkdir"
	p, err := s.clean(op, name)
	if err != nil {
		return err
	}
	if perm == 0 {
		perm = 0o755
	}
	res, err := s.runInternal(ctx, op, "sh", "-c", `umask $2 && mkdir -p -- "$1"`, "sh", p,
		fmt.Sprintf("%04o", ^uint32(perm.Perm())&0o777))
	if err != nil {
		return err
	}
	if res.code != 0 {
		return s.failed(op, p, res)
	}
	return nil
}

// Remove runs `rmdir` for a directory, `rm` otherwise.
func (s *Sandbox) Remove(ctx context.Context, name string) error {
	const op = "remove"
	p, err := s.clean(op, name)
	if err != nil {
		return err
	}
	res, err := s.runInternal(ctx, op, "sh", "-c",
		`if [ -d "$1" ] && [ ! -L "$1" ]; then rmdir -- "$1"; else rm -- "$1"; fi`, "sh", p)
	if err != nil {
		return err
	}
	if res.code != 0 {
		return s.failed(op, p, res)
	}
	return nil
}

// RemoveAll runs `rm -rf`.
func (s *Sandbox) RemoveAll(ctx context.Context, name string) error {
	const op = "remove all"
	p, err := s.clean(op, name)
	if err != nil {
		return err
	}
	if p == "/" {
		return sandbox.Errorf(providerName, s.name, op, sandbox.ErrInvalidArgument, "refusing to remove /")
	}
	res, err := s.runInternal(ctx, op, "rm", "-rf", "--", p)
	if err != nil {
		return err
	}
	if res.code != 0 {
		return s.failed(op, p, res)
	}
	return nil
}

// Rename runs `mv -f -T` (newname is replaced, never entered).
func (s *Sandbox) Rename(ctx context.Context, oldname, newname string) error {
	const op = "rename"
	from, err := s.clean(op, oldname)
	if err != nil {
		return err
	}
	to, err := s.clean(op, newname)
	if err != nil {
		return err
	}
	res, err := s.runInternal(ctx, op, "mv", "-f", "-T", "--", from, to)
	if err != nil {
		return err
	}
	if res.code != 0 {
		return s.failed(op, from+" -> "+to, res)
	}
	return nil
}
