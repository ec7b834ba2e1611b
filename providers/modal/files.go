package modal

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sync"
	"time"

	sdk "github.com/modal-labs/libmodal/modal-go"

	"github.com/perimeter-sdk/perimeter/internal/shellfs"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// The SDK (v0.7.0) can open, read, write and close files. Every other file
// operation runs one of package shellfs's POSIX sh scripts in the sandbox.

// shfs runs shellfs's scripts through Modal's exec.
func (s *Sandbox) shfs() *shellfs.FS {
	return &shellfs.FS{Run: func(ctx context.Context, argv []string) ([]byte, []byte, int, error) {
		return s.run(ctx, argv, nil)
	}}
}

// shErr decorates a shellfs error: a script's failure keeps its kind, a
// failure to run it is mapped as any SDK error.
func (s *Sandbox) shErr(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	var se *shellfs.Error
	if errors.As(err, &se) {
		return sandbox.NewError(Name, s.id, op, nil, err)
	}
	return s.fail(ctx, op, err)
}

// withCause returns the error of a failed open: the probe's finding (perr)
// gives the kind, and the SDK's error (native) stays reachable with errors.As.
// A probe that found nothing wrong leaves ErrInvalidArgument.
func withCause(id, op string, perr, native error) error {
	var pe *sandbox.Error
	if perr == nil || !errors.As(perr, &pe) || pe.Err == nil {
		if perr != nil && (errors.Is(perr, context.Canceled) || errors.Is(perr, context.DeadlineExceeded)) {
			return perr
		}
		return sandbox.NewError(Name, id, op, sandbox.ErrInvalidArgument, native)
	}
	return sandbox.NewError(Name, id, op, pe.Kind, fmt.Errorf("%s (%w)", pe.Err, native))
}

// fileOp starts a file operation: begin, ready, and the cleaned name.
func (s *Sandbox) fileOp(ctx context.Context, op, name string) (string, func(), error) {
	end, err := s.begin(ctx, op)
	if err != nil {
		return "", nil, err
	}
	if err := s.ready(ctx); err != nil {
		end()
		return "", nil, s.fail(ctx, op, err)
	}
	return s.abs(name), end, nil
}

// abs resolves a name the portable layer checked (clean, without "..")
// against the working directory.
func (s *Sandbox) abs(name string) string {
	if path.IsAbs(name) {
		return name
	}
	return path.Join(s.workdir, name)
}

// open opens name through the SDK, retrying while the sandbox is not yet
// scheduled.
func (s *Sandbox) open(ctx context.Context, name, mode string) (*sdk.SandboxFile, error) {
	var f *sdk.SandboxFile
	err := retryUnscheduled(ctx, func() error {
		var err error
		f, err = s.sb.Open(ctx, name, mode)
		return err
	})
	return f, err
}

// ReadFile opens the named file for reading through Modal's filesystem API.
// Reads are RPCs of up to 4 MiB; the returned reader stops once ctx is done.
func (s *Sandbox) ReadFile(ctx context.Context, name string) (io.ReadCloser, error) {
	const op = "read file"
	clean, end, err := s.fileOp(ctx, op, name)
	if err != nil {
		return nil, err
	}
	defer end()
	f, err := s.open(ctx, clean, "r")
	if err != nil {
		var fsErr sdk.SandboxFilesystemError
		if !errors.As(err, &fsErr) {
			return nil, s.fail(ctx, op, err)
		}
		// The SDK gives only the message; ask the sandbox what is wrong.
		perr := s.shErr(ctx, op, s.shfs().ProbeRead(ctx, clean))
		return nil, withCause(s.id, op, perr, err)
	}
	return &fileReader{ctx: ctx, s: s, f: f}, nil
}

// maxRead bounds one read RPC.
const maxRead = 4 << 20

type fileReader struct {
	ctx  context.Context
	s    *Sandbox
	f    *sdk.SandboxFile
	eof  bool
	once sync.Once
	cerr error
}

func (r *fileReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	if r.eof {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if len(p) > maxRead {
		p = p[:maxRead]
	}
	n, err := r.f.Read(p)
	if err == io.EOF {
		r.eof = true
		if n > 0 {
			return n, nil
		}
		return 0, io.EOF
	}
	if err != nil {
		return n, r.s.fail(r.ctx, "read file", err)
	}
	return n, nil
}

func (r *fileReader) Close() error {
	r.once.Do(func() {
		if err := r.f.Close(); err != nil {
			r.cerr = wrap(context.Background(), r.s.id, "read file", err)
		}
	})
	return r.cerr
}

// WriteFile writes r to a temporary file beside name through Modal's
// filesystem API, then sets perm and renames it over name with a helper
// command, so the file appears whole or not at all.
func (s *Sandbox) WriteFile(ctx context.Context, name string, r io.Reader, perm fs.FileMode) error {
	const op = "write file"
	clean, end, err := s.fileOp(ctx, op, name)
	if err != nil {
		return err
	}
	defer end()
	if clean == "/" {
		return sandbox.Errorf(Name, s.id, op, sandbox.ErrInvalidArgument, "/ is a directory")
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := path.Join(path.Dir(clean), ".perimeter-write-"+hex.EncodeToString(rnd[:]))
	f, err := s.open(ctx, tmp, "w")
	if err != nil {
		var fsErr sdk.SandboxFilesystemError
		if !errors.As(err, &fsErr) {
			return s.fail(ctx, op, err)
		}
		perr := s.shErr(ctx, op, s.shfs().ProbeDir(ctx, path.Dir(clean)))
		return withCause(s.id, op, perr, err)
	}
	discard := func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		s.run(cctx, []string{"rm", "-f", "--", tmp}, nil)
	}
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			f.Close()
			discard()
			return err
		}
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			if _, err := f.Write(buf[:n]); err != nil {
				f.Close()
				discard()
				return s.fail(ctx, op, err)
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			f.Close()
			discard()
			if errors.Is(rerr, context.Canceled) || errors.Is(rerr, context.DeadlineExceeded) {
				return rerr
			}
			return sandbox.NewError(Name, s.id, op, sandbox.ErrInvalidArgument, fmt.Errorf("reading the data to write: %w", rerr))
		}
	}
	if err := f.Close(); err != nil {
		discard()
		return s.fail(ctx, op, err)
	}
	if err := ctx.Err(); err != nil {
		discard()
		return err
	}
	err = s.shErr(ctx, op, s.shfs().Commit(ctx, tmp, clean, perm))
	if err != nil && ctx.Err() != nil {
		discard()
	}
	return err
}

// Stat describes the named file, without following a final symbolic link,
// with stat(1) run in the sandbox.
func (s *Sandbox) Stat(ctx context.Context, name string) (sandbox.FileInfo, error) {
	const op = "stat"
	clean, end, err := s.fileOp(ctx, op, name)
	if err != nil {
		return sandbox.FileInfo{}, err
	}
	defer end()
	fi, err := s.shfs().Stat(ctx, clean)
	return fi, s.shErr(ctx, op, err)
}

// ReadDir lists the named directory, sorted by name, with a shell loop and
// stat(1) run in the sandbox.
func (s *Sandbox) ReadDir(ctx context.Context, name string) ([]sandbox.FileInfo, error) {
	const op = "read dir"
	clean, end, err := s.fileOp(ctx, op, name)
	if err != nil {
		return nil, err
	}
	defer end()
	list, err := s.shfs().ReadDir(ctx, clean)
	return list, s.shErr(ctx, op, err)
}

// MkdirAll creates the named directory and its missing parents, each with
// perm, with a script run in the sandbox.
func (s *Sandbox) MkdirAll(ctx context.Context, name string, perm fs.FileMode) error {
	const op = "mkdir"
	clean, end, err := s.fileOp(ctx, op, name)
	if err != nil {
		return err
	}
	defer end()
	return s.shErr(ctx, op, s.shfs().MkdirAll(ctx, clean, perm))
}

// Remove removes the named file or empty directory, run in the sandbox.
func (s *Sandbox) Remove(ctx context.Context, name string) error {
	const op = "remove"
	clean, end, err := s.fileOp(ctx, op, name)
	if err != nil {
		return err
	}
	defer end()
	if clean == "/" {
		return sandbox.Errorf(Name, s.id, op, sandbox.ErrInvalidArgument, "refusing to remove /")
	}
	return s.shErr(ctx, op, s.shfs().Remove(ctx, clean))
}

// RemoveAll removes the named file or tree with rm -rf, run in the sandbox.
func (s *Sandbox) RemoveAll(ctx context.Context, name string) error {
	const op = "remove all"
	clean, end, err := s.fileOp(ctx, op, name)
	if err != nil {
		return err
	}
	defer end()
	return s.shErr(ctx, op, s.shfs().RemoveAll(ctx, clean))
}

// Rename moves oldname to newname with mv, run in the sandbox. A directory
// replaces an empty directory; a file does not replace a directory.
func (s *Sandbox) Rename(ctx context.Context, oldname, newname string) error {
	const op = "rename"
	from, end, err := s.fileOp(ctx, op, oldname)
	if err != nil {
		return err
	}
	defer end()
	return s.shErr(ctx, op, s.shfs().Rename(ctx, from, s.abs(newname)))
}
