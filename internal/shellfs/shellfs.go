// Package shellfs implements a sandbox's file operations with POSIX sh
// scripts run in the sandbox, for providers whose API runs commands but has no
// call for stat, listing, mkdir, remove or rename (Vercel, Modal; later
// Daytona and Cloudflare where they need it).
//
// Names reach the scripts as arguments, absolute and clean (as the portable
// layer passes them, joined to the working directory), never inside the
// script text. Each script reports a failure as an exit code that maps to an
// error kind; the scripts need sh, stat (-c, as GNU coreutils and BusyBox
// have it), mkdir, chmod, rm, rmdir, mv and ls.
package shellfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/perimeter-sdk/perimeter/internal/posixfs"
	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

// Runner runs argv (no shell of its own: argv[0] is "sh") in the sandbox and
// returns its output and exit code. err is for the provider failing to run
// it, not for a non-zero exit.
type Runner func(ctx context.Context, argv []string) (stdout, stderr []byte, code int, err error)

// FS runs file operations through Run. Errors from the scripts match a
// sandbox error kind and carry the name and the script's message; errors from
// Run are returned as they are, for the provider to decorate.
type FS struct {
	Run Runner
}

// Exit codes the scripts use, after errno names.
const (
	exitNotFound = 2  // ENOENT
	exitAccess   = 13 // EACCES
	exitExist    = 17 // EEXIST
	exitNotDir   = 20 // ENOTDIR
	exitIsDir    = 21 // EISDIR
	exitInval    = 22 // EINVAL
	exitNotEmpty = 39 // ENOTEMPTY
	exitNoTool   = 127
)

const (
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

	// mkdirScript walks the path from the root and makes each missing
	// directory with mode $2 exactly (mkdir -m ignores the umask).
	mkdirScript = `p=$1; m=$2
if [ -d "$p" ]; then exit 0; fi
if [ -e "$p" ] || [ -L "$p" ]; then exit 17; fi
set -f; IFS=/
cur=
for el in $p; do
  [ -z "$el" ] && continue
  cur="$cur/$el"
  [ -d "$cur" ] && continue
  if [ -e "$cur" ] || [ -L "$cur" ]; then exit 20; fi
  mkdir -m "$m" -- "$cur" 2>&1 || { [ -d "$cur" ] && continue; [ -w "$(dirname -- "$cur")" ] || exit 13; exit 1; }
done`

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
if chmod "$3" -- "$t" 2>&1 && mv -f -- "$t" "$f" 2>&1; then exit 0; fi
rm -f -- "$t"; exit 1`

	// probeReadScript tells why a file could not be opened for reading.
	probeReadScript = `f=$1
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

// Error is a failed script: its kind (a sandbox error kind) and message.
type Error struct {
	Kind error
	Msg  string
}

func (e *Error) Error() string        { return e.Msg }
func (e *Error) Is(target error) bool { return target == e.Kind }

// script runs one script with args and maps a non-zero exit to an *Error.
func (f *FS) script(ctx context.Context, name, script string, args ...string) ([]byte, error) {
	argv := append([]string{"sh", "-c", script, "perimeter"}, args...)
	out, errOut, code, err := f.Run(ctx, argv)
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return nil, exitErr(name, code, append(out, errOut...))
	}
	return out, nil
}

// exitErr turns a script's exit code into an error.
func exitErr(name string, code int, out []byte) error {
	var kind error
	var msg string
	switch code {
	case exitNotFound:
		kind, msg = sandbox.ErrNotFound, "no such file or directory"
	case exitAccess:
		kind, msg = sandbox.ErrPermissionDenied, "permission denied"
	case exitExist:
		kind, msg = sandbox.ErrAlreadyExists, "exists and is not a directory"
	case exitNotDir:
		kind, msg = sandbox.ErrInvalidArgument, "not a directory"
	case exitIsDir:
		kind, msg = sandbox.ErrInvalidArgument, "is a directory"
	case exitInval:
		kind, msg = sandbox.ErrInvalidArgument, "not a regular file"
	case exitNotEmpty:
		kind, msg = sandbox.ErrInvalidArgument, "directory not empty"
	case 126, exitNoTool:
		kind, msg = sandbox.ErrNotSupported, "the sandbox's image lacks a POSIX sh or coreutils for file operations"
	default:
		// A tool failed; its message tells why.
		text := string(out)
		switch {
		case strings.Contains(text, "ermission denied"), strings.Contains(text, "ead-only file system"),
			strings.Contains(text, "peration not permitted"):
			kind = sandbox.ErrPermissionDenied
		case strings.Contains(text, "o space left"), strings.Contains(text, "uota exceeded"):
			kind = sandbox.ErrResourceExhausted
		case strings.Contains(text, "o such file or directory"):
			kind = sandbox.ErrNotFound
		default:
			kind = sandbox.ErrInvalidArgument
		}
		msg = "exit status " + strconv.Itoa(code)
	}
	if s := strings.TrimSpace(string(out)); s != "" {
		if len(s) > 300 {
			s = s[:300] + "..."
		}
		msg += ": " + s
	}
	return &Error{Kind: kind, Msg: name + ": " + msg}
}

// Stat describes abs without following a final symbolic link.
func (f *FS) Stat(ctx context.Context, abs string) (sandbox.FileInfo, error) {
	out, err := f.script(ctx, abs, statScript, abs)
	if err != nil {
		return sandbox.FileInfo{}, err
	}
	return parseStat(strings.TrimSuffix(string(out), "\n"), path.Base(abs))
}

// ReadDir lists the directory abs, sorted by name.
func (f *FS) ReadDir(ctx context.Context, abs string) ([]sandbox.FileInfo, error) {
	out, err := f.script(ctx, abs, readDirScript, abs)
	if err != nil {
		return nil, err
	}
	return parseReadDir(out)
}

// MkdirAll makes abs and its missing parents, each with perm exactly.
func (f *FS) MkdirAll(ctx context.Context, abs string, perm fs.FileMode) error {
	_, err := f.script(ctx, abs, mkdirScript, abs, Octal(perm))
	return err
}

// Remove removes the file or empty directory abs.
func (f *FS) Remove(ctx context.Context, abs string) error {
	_, err := f.script(ctx, abs, removeScript, abs)
	return err
}

// RemoveAll removes abs and everything under it; a missing abs is not an
// error. It refuses "/".
func (f *FS) RemoveAll(ctx context.Context, abs string) error {
	if abs == "/" {
		return &Error{Kind: sandbox.ErrInvalidArgument, Msg: "refusing to remove /"}
	}
	_, err := f.script(ctx, abs, removeAllScript, abs)
	return err
}

// Rename moves from to to, replacing a file or an empty directory at to; a
// file does not replace a directory.
func (f *FS) Rename(ctx context.Context, from, to string) error {
	if from == "/" || to == "/" {
		return &Error{Kind: sandbox.ErrInvalidArgument, Msg: "cannot rename /"}
	}
	_, err := f.script(ctx, from+" -> "+to, renameScript, from, to)
	return err
}

// Commit gives the fully written temporary file tmp the mode perm and moves
// it over abs, or removes it, so abs appears whole or not at all.
func (f *FS) Commit(ctx context.Context, tmp, abs string, perm fs.FileMode) error {
	_, err := f.script(ctx, abs, commitScript, tmp, abs, Octal(perm))
	return err
}

// ProbeRead tells why abs could not be opened for reading (nil if it can).
func (f *FS) ProbeRead(ctx context.Context, abs string) error {
	_, err := f.script(ctx, abs, probeReadScript, abs)
	return err
}

// ProbeDir tells why a file could not be created in the directory abs (nil
// if it can).
func (f *FS) ProbeDir(ctx context.Context, abs string) error {
	_, err := f.script(ctx, abs, probeDirScript, abs)
	return err
}

// Octal returns perm as chmod's octal argument, such as "4755".
func Octal(perm fs.FileMode) string {
	return strconv.FormatUint(uint64(driver.ChmodBits(perm)), 8)
}

// parseStat reads "MODE_HEX SIZE MTIME".
func parseStat(line, name string) (sandbox.FileInfo, error) {
	f := strings.Fields(line)
	if len(f) != 3 {
		return sandbox.FileInfo{}, &Error{Kind: sandbox.ErrUnavailable, Msg: fmt.Sprintf("unexpected stat output %q", line)}
	}
	raw, err1 := strconv.ParseUint(f[0], 16, 32)
	size, err2 := strconv.ParseInt(f[1], 10, 64)
	mtime, err3 := strconv.ParseInt(f[2], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return sandbox.FileInfo{}, &Error{Kind: sandbox.ErrUnavailable, Msg: fmt.Sprintf("unexpected stat output %q: %v", line, err)}
	}
	return sandbox.FileInfo{Name: name, Size: size, Mode: posixfs.Mode(uint32(raw)), ModTime: time.Unix(mtime, 0)}, nil
}

func parseReadDir(out []byte) ([]sandbox.FileInfo, error) {
	var list []sandbox.FileInfo
	rest := string(out)
	bad := func() error {
		near := rest
		if len(near) > 60 {
			near = near[:60] + "..."
		}
		return &Error{Kind: sandbox.ErrUnavailable, Msg: fmt.Sprintf("unexpected directory listing near %q", near)}
	}
	for rest != "" {
		// MODE SIZE MTIME LEN:NAME\n
		var head [3]string
		for i := range head {
			sp := strings.IndexByte(rest, ' ')
			if sp < 0 {
				return nil, bad()
			}
			head[i], rest = rest[:sp], rest[sp+1:]
		}
		colon := strings.IndexByte(rest, ':')
		if colon < 0 {
			return nil, bad()
		}
		n, err := strconv.Atoi(rest[:colon])
		end := colon + 1 + n
		if err != nil || n < 0 || end >= len(rest) || rest[end] != '\n' {
			return nil, bad()
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
