package modal

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	sdk "github.com/modal-labs/libmodal/modal-go"

	"github.com/perimeter-sdk/perimeter/internal/posixfs"
	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

// The SDK (v0.7.0) can open, read, write and close files. Every other file
// operation runs one of these POSIX sh scripts in the sandbox; they report
// failures as exit codes read by scriptErr. Paths reach them as arguments,
// already cleaned and absolute, never inside the script text.
const (
	// statScript prints "MODE_HEX SIZE MTIME" without following a final
	// symbolic link.
	statScript = `f=$1
if [ ! -e "$f" ] && [ ! -L "$f" ]; then exit 2; fi
exec stat -c '%f %s %Y' -- "$f"`

	// readDirScript prints "MODE_HEX SIZE MTIME LEN:NAME" per entry; LEN
	// (bytes) makes names with newlines unambiguous.
	readDirScript = `LC_ALL=C; export LC_ALL
d=$1
if [ ! -e "$d" ]; then exit 2; fi
if [ ! -d "$d" ]; then exit 20; fi
cd -- "$d" 2>/dev/null || exit 13
for f in .* *; do
  case $f in .|..) continue;; esac
  if [ ! -e "$f" ] && [ ! -L "$f" ]; then continue; fi
  s=$(stat -c '%f %s %Y' -- "$f") || exit 1
  printf '%s %d:%s\n' "$s" "${#f}" "$f"
done`

	mkdirScript = `if [ -d "$1" ]; then exit 0; fi
if [ -e "$1" ] || [ -L "$1" ]; then exit 17; fi
mkdir -p -m "$2" -- "$1" 2>&1 || exit 1`

	removeScript = `f=$1
if [ ! -e "$f" ] && [ ! -L "$f" ]; then exit 2; fi
if [ -d "$f" ] && [ ! -L "$f" ]; then
  if rmdir -- "$f" 2>/dev/null; then exit 0; fi
  if [ -n "$(ls -A -- "$f" 2>/dev/null)" ]; then exit 39; fi
  exit 13
fi
rm -f -- "$f" 2>&1 || exit 1`

	removeAllScript = `rm -rf -- "$1" 2>&1 || exit 1`

	renameScript = `a=$1; b=$2
if [ ! -e "$a" ] && [ ! -L "$a" ]; then exit 2; fi
if [ "$a" = "$b" ]; then exit 0; fi
if [ ! -d "$(dirname -- "$b")" ]; then exit 2; fi
if [ -d "$b" ] && [ ! -L "$b" ]; then
  if [ -d "$a" ] && [ ! -L "$a" ]; then rmdir -- "$b" 2>/dev/null || exit 39
  else exit 21; fi
fi
mv -f -- "$a" "$b" 2>&1 || exit 1`

	// commitScript gives a fully written temporary file its mode and moves
	// it over the target, or removes it.
	commitScript = `t=$1; f=$2
if [ -d "$f" ] && [ ! -L "$f" ]; then rm -f -- "$t"; exit 21; fi
if chmod "$3" "$t" 2>&1 && mv -f -- "$t" "$f" 2>&1; then exit 0; fi
rm -f -- "$t"; exit 1`

	// probeScript tells why a file could not be opened for reading.
	probeScript = `f=$1
if [ ! -e "$f" ]; then exit 2; fi
if [ -d "$f" ]; then exit 21; fi
if [ ! -f "$f" ]; then exit 22; fi
if [ ! -r "$f" ]; then exit 13; fi
exit 0`

	// probeDirScript tells why a file could not be created in a directory.
	probeDirScript = `d=$1
if [ ! -e "$d" ]; then exit 2; fi
if [ ! -d "$d" ]; then exit 20; fi
if [ ! -w "$d" ]; then exit 13; fi
exit 0`
)

// scriptErr turns a helper script's exit code into an error, or nil for 0.
func (s *Sandbox) scriptErr(op, name string, code int, out []byte) error {
	var kind error
	var msg string
	switch code {
	case 0:
		return nil
	case 2:
		kind, msg = sandbox.ErrNotFound, "no such file or directory"
	case 13:
		kind, msg = sandbox.ErrPermissionDenied, "permission denied"
	case 17:
		kind, msg = sandbox.ErrAlreadyExists, "exists and is not a directory"
	case 20:
		kind, msg = sandbox.ErrInvalidArgument, "not a directory"
	case 21:
		kind, msg = sandbox.ErrInvalidArgument, "is a directory"
	case 22:
		kind, msg = sandbox.ErrInvalidArgument, "not a regular file"
	case 39:
		kind, msg = sandbox.ErrInvalidArgument, "directory not empty"
	case 126, 127:
		kind, msg = sandbox.ErrNotSupported, "the image lacks a POSIX sh or coreutils for file operations"
	default:
		text := string(bytes.TrimSpace(out))
		switch {
		case strings.Contains(text, "ermission denied"), strings.Contains(text, "ead-only file system"):
			kind = sandbox.ErrPermissionDenied
		case strings.Contains(text, "o space left"), strings.Contains(text, "uota exceeded"):
			kind = sandbox.ErrResourceExhausted
		case strings.Contains(text, "ot a directory"):
			kind = sandbox.ErrNotFound
		default:
			kind = sandbox.ErrInvalidArgument
		}
		msg = fmt.Sprintf("exit code %d: %s", code, text)
	}
	return sandbox.NewError(Name, s.id, op, kind, fmt.Errorf("%s: %s", name, msg))
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

// script runs one helper script with args and maps its failure.
func (s *Sandbox) script(ctx context.Context, op, name, script string, args ...string) ([]byte, error) {
	argv := append([]string{"sh", "-c", script, "perimeter"}, args...)
	out, errOut, code, err := s.run(ctx, argv, nil)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	if code != 0 {
		return nil, s.scriptErr(op, name, code, append(out, errOut...))
	}
	return out, nil
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
		_, perr := s.script(ctx, op, name, probeScript, clean)
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
			r.cerr = wrap(nil, r.s.id, "read file", err)
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
		_, perr := s.script(ctx, op, name, probeDirScript, path.Dir(clean))
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
	_, err = s.script(ctx, op, name, commitScript, tmp, clean, strconv.FormatUint(uint64(driver.ChmodBits(perm)), 8))
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
	out, err := s.script(ctx, op, name, statScript, clean)
	if err != nil {
		return sandbox.FileInfo{}, err
	}
	fi, err := parseStat(strings.TrimSuffix(string(out), "\n"), path.Base(clean))
	if err != nil {
		return sandbox.FileInfo{}, sandbox.NewError(Name, s.id, op, sandbox.ErrUnavailable, err)
	}
	return fi, nil
}

// parseStat reads "MODE_HEX SIZE MTIME".
func parseStat(line, name string) (sandbox.FileInfo, error) {
	f := strings.Fields(line)
	if len(f) != 3 {
		return sandbox.FileInfo{}, fmt.Errorf("unexpected stat output %q", line)
	}
	raw, err1 := strconv.ParseUint(f[0], 16, 32)
	size, err2 := strconv.ParseInt(f[1], 10, 64)
	mtime, err3 := strconv.ParseInt(f[2], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return sandbox.FileInfo{}, fmt.Errorf("unexpected stat output %q: %w", line, err)
	}
	return sandbox.FileInfo{Name: name, Size: size, Mode: posixfs.Mode(uint32(raw)), ModTime: time.Unix(mtime, 0)}, nil
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
	out, err := s.script(ctx, op, name, readDirScript, clean)
	if err != nil {
		return nil, err
	}
	list, err := parseReadDir(out)
	if err != nil {
		return nil, sandbox.NewError(Name, s.id, op, sandbox.ErrUnavailable, err)
	}
	return list, nil
}

func parseReadDir(out []byte) ([]sandbox.FileInfo, error) {
	var list []sandbox.FileInfo
	rest := string(out)
	for rest != "" {
		// MODE SIZE MTIME LEN:NAME\n
		var head [3]string
		for i := range head {
			sp := strings.IndexByte(rest, ' ')
			if sp < 0 {
				return nil, fmt.Errorf("unexpected directory listing near %q", trim(rest))
			}
			head[i], rest = rest[:sp], rest[sp+1:]
		}
		colon := strings.IndexByte(rest, ':')
		if colon < 0 {
			return nil, fmt.Errorf("unexpected directory listing near %q", trim(rest))
		}
		n, err := strconv.Atoi(rest[:colon])
		end := colon + 1 + n
		if err != nil || n < 0 || end >= len(rest) || rest[end] != '\n' {
			return nil, fmt.Errorf("unexpected directory listing near %q", trim(rest))
		}
		name := rest[colon+1 : end]
		rest = rest[end+1:]
		fi, err := parseStat(strings.Join(head[:], " "), name)
		if err != nil {
			return nil, err
		}
		list = append(list, fi)
	}
	slices.SortFunc(list, func(a, b sandbox.FileInfo) int { return strings.Compare(a.Name, b.Name) })
	return list, nil
}

func trim(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}

// MkdirAll creates the named directory and its parents with mkdir -p run in
// the sandbox; perm applies to the last element.
func (s *Sandbox) MkdirAll(ctx context.Context, name string, perm fs.FileMode) error {
	const op = "mkdir"
	clean, end, err := s.fileOp(ctx, op, name)
	if err != nil {
		return err
	}
	defer end()
	_, err = s.script(ctx, op, name, mkdirScript, clean, strconv.FormatUint(uint64(driver.ChmodBits(perm)), 8))
	return err
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
	_, err = s.script(ctx, op, name, removeScript, clean)
	return err
}

// RemoveAll removes the named file or tree with rm -rf, run in the sandbox.
func (s *Sandbox) RemoveAll(ctx context.Context, name string) error {
	const op = "remove all"
	clean, end, err := s.fileOp(ctx, op, name)
	if err != nil {
		return err
	}
	defer end()
	if clean == "/" {
		return sandbox.Errorf(Name, s.id, op, sandbox.ErrInvalidArgument, "refusing to remove /")
	}
	_, err = s.script(ctx, op, name, removeAllScript, clean)
	return err
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
	to := s.abs(newname)
	if from == "/" || to == "/" {
		return sandbox.Errorf(Name, s.id, op, sandbox.ErrInvalidArgument, "cannot rename /")
	}
	_, err = s.script(ctx, op, oldname, renameScript, from, to)
	return err
}
