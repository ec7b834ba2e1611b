package cloudflare

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
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/perimeter-sdk/perimeter/internal/posixfs"
	"github.com/perimeter-sdk/perimeter/internal/shellfs"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// name resolves a file name against the sandbox's working directory and
// checks it is under /workspace, the only tree the bridge's file routes
// reach.
func (s *Sandbox) name(op, name string) (string, error) {
	if err := s.checkLive(op); err != nil {
		return "", err
	}
	abs, err := sandbox.CleanName(s.workdir, name)
	if err != nil {
		return "", sandbox.NewError(providerName, s.id, op, sandbox.ErrInvalidArgument, err)
	}
	if !inWorkspace(abs) {
		return "", sandbox.Errorf(providerName, s.id, op, sandbox.ErrNotSupported,
			"%q: the bridge reaches files under /workspace only", name)
	}
	return abs, nil
}

// ReadFile streams the file (GET …/file/…), byte-exact.
func (s *Sandbox) ReadFile(ctx context.Context, name string) (io.ReadCloser, error) {
	const op = "read file"
	abs, err := s.name(op, name)
	if err != nil {
		return nil, err
	}
	rc, err := s.p.c.ReadFile(ctx, s.id, "", abs)
	if err == nil {
		return rc, nil
	}
	if kindOf(err) != sandbox.ErrNotFound && ctx.Err() == nil {
		// The bridge answers a directory with a failed read; say so.
		if r, serr := s.sh(ctx, `[ -d "$1" ]`, rel(abs)); serr == nil && r.code == 0 {
			return nil, sandbox.NewError(providerName, s.id, op, sandbox.ErrInvalidArgument, fmt.Errorf("%s is a directory: %w", abs, err))
		}
	}
	return nil, wrap(s.id, op, err)
}

// writeScript moves uploaded parts into place: it concatenates them when
// there are several, applies the mode and renames the result over the
// target, removing the parts whatever happens.
const writeScript = `f=$1 m=$2 t=$3; shift 3
if [ $# -eq 1 ]; then t=$1; else cat -- "$@" > "$t"; fi &&
chmod "$m" -- "$t" && mv -fT -- "$t" "$f"
c=$?
rm -f -- "$t" "$@"
exit $c`

// WriteFile reads r whole into a temporary file on this host (so a failing
// r sends nothing), checks the parent directory exists, uploads the content
// beside the target under a temporary name (PUT …/file/…; in parts of at
// most 32 MiB, the bridge's limit, joined with cat in the sandbox), then
// applies perm and renames it over the target: the file appears whole or
// not at all.
func (s *Sandbox) WriteFile(ctx context.Context, name string, r io.Reader, perm fs.FileMode) error {
	const op = "write file"
	abs, err := s.name(op, name)
	if err != nil {
		return err
	}
	if abs == Workspace {
		return sandbox.Errorf(providerName, s.id, op, sandbox.ErrInvalidArgument, "/workspace is a directory")
	}
	f, size, err := spool(r, 0)
	if err != nil {
		return sandbox.NewError(providerName, s.id, op, sandbox.ErrInvalidArgument, fmt.Errorf("reading the content: %w", err))
	}
	defer f.Close()
	res, err := s.sh(ctx, `[ -d "$1" ] || exit 3; if [ -d "$2" ] && [ ! -L "$2" ]; then exit 4; fi`, rel(path.Dir(abs)), rel(abs))
	switch {
	case err != nil:
		return wrap(s.id, op, err)
	case res.code == 3:
		return sandbox.Errorf(providerName, s.id, op, sandbox.ErrNotFound, "the parent directory of %s does not exist", abs)
	case res.code == 4:
		return sandbox.Errorf(providerName, s.id, op, sandbox.ErrInvalidArgument, "%s is a directory", abs)
	case res.code != 0:
		return shellError(s.id, op, res)
	}
	var tag [6]byte
	rand.Read(tag[:])
	tmp := path.Join(path.Dir(abs), ".perimeter-"+hex.EncodeToString(tag[:]))
	var parts []string
	cleanup := func() {
		if len(parts) > 0 {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			s.sh(cctx, `rm -f -- "$@"`, parts...)
		}
	}
	for off, i := int64(0), 0; off < size || i == 0; i++ {
		n := min(size-off, MaxFileSize)
		part := tmp + ".part" + strconv.Itoa(i)
		parts = append(parts, rel(part))
		if err := s.p.c.WriteFile(ctx, s.id, "", part, io.NewSectionReader(f, off, n), n); err != nil {
			cleanup()
			return wrap(s.id, op, err)
		}
		off += n
	}
	args := append([]string{rel(abs), shellfs.Octal(perm), rel(tmp)}, parts...)
	res, err = s.sh(ctx, writeScript, args...)
	if err != nil {
		cleanup()
		return wrap(s.id, op, err)
	}
	if res.code != 0 {
		return shellError(s.id, op, res)
	}
	return nil
}

// shfs runs package shellfs's scripts statelessly in /workspace. Names
// are given to it relative to /workspace (see rel), so the scripts work the
// same in a bridge container and in a fake bridge running commands in a host
// directory that stands for /workspace.
func (s *Sandbox) shfs() *shellfs.FS {
	return &shellfs.FS{Run: func(ctx context.Context, argv []string) ([]byte, []byte, int, error) {
		var stdout, stderr bytes.Buffer
		code, err := s.p.c.Exec(ctx, s.id, argv, &ExecOptions{Cwd: Workspace}, &stdout, &stderr)
		return stdout.Bytes(), stderr.Bytes(), code, err
	}}
}

// shfsErr gives a script's failure the provider, sandbox, operation and
// the name the caller gave (the script saw it relative to /workspace).
func (s *Sandbox) shfsErr(op, name string, err error) error {
	if err == nil {
		return nil
	}
	var se *shellfs.Error
	if errors.As(err, &se) {
		return sandbox.NewError(providerName, s.id, op, se.Kind, fmt.Errorf("%s: %s", name, se.Msg))
	}
	return wrap(s.id, op, err)
}

// statFormat is GNU stat's format for one entry: st_mode in hex, size,
// mtime, then the name, NUL-terminated.
const statFormat = `%f %s %Y %n\0`

// Stat runs stat(1) in the sandbox (the bridge has no stat route). It does
// not follow a final symbolic link.
func (s *Sandbox) Stat(ctx context.Context, name string) (sandbox.FileInfo, error) {
	const op = "stat"
	abs, err := s.name(op, name)
	if err != nil {
		return sandbox.FileInfo{}, err
	}
	fi, err := s.shfs().Stat(ctx, rel(abs))
	if err != nil {
		return sandbox.FileInfo{}, s.shfsErr(op, abs, err)
	}
	fi.Name = path.Base(abs)
	return fi, nil
}

// ReadDir lists the directory with find(1) and stat(1), sorted by name.
// Names that are not valid UTF-8 arrive with U+FFFD (command output is
// text). It is not shellfs.ReadDir, whose byte-counted names the bridge's
// text output would break for such names.
func (s *Sandbox) ReadDir(ctx context.Context, name string) ([]sandbox.FileInfo, error) {
	const op = "read dir"
	abs, err := s.name(op, name)
	if err != nil {
		return nil, err
	}
	r, err := s.sh(ctx, `[ -e "$1" ] || exit 3; [ -d "$1" ] || exit 4
exec find "$1/" -mindepth 1 -maxdepth 1 -exec stat --printf "$2" -- {} +`, rel(abs), statFormat)
	if err != nil {
		return nil, wrap(s.id, op, err)
	}
	switch r.code {
	case 0:
	case 4:
		return nil, sandbox.Errorf(providerName, s.id, op, sandbox.ErrInvalidArgument, "%s is not a directory", abs)
	default:
		return nil, shellError(s.id, op, r)
	}
	infos, err := parseStat(r.stdout.Bytes())
	if err != nil {
		return nil, sandbox.NewError(providerName, s.id, op, sandbox.ErrUnavailable, err)
	}
	for i := range infos {
		infos[i].Name = path.Base(infos[i].Name)
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].Name < infos[j].Name })
	return infos, nil
}

func parseStat(out []byte) ([]sandbox.FileInfo, error) {
	var infos []sandbox.FileInfo
	for _, rec := range bytes.Split(out, []byte{0}) {
		if len(rec) == 0 {
			continue
		}
		f := strings.SplitN(string(rec), " ", 4)
		if len(f) != 4 {
			return nil, fmt.Errorf("unreadable stat record %q", rec)
		}
		mode, err1 := strconv.ParseUint(f[0], 16, 32)
		size, err2 := strconv.ParseInt(f[1], 10, 64)
		mtime, err3 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, fmt.Errorf("unreadable stat record %q", rec)
		}
		infos = append(infos, sandbox.FileInfo{Name: f[3], Size: size, Mode: posixfs.Mode(uint32(mode)), ModTime: time.Unix(mtime, 0)})
	}
	return infos, nil
}

// MkdirAll creates the directory and its missing parents in the sandbox,
// each with perm exactly (mkdir -m, walking down from /workspace); an
// existing directory keeps its permissions.
func (s *Sandbox) MkdirAll(ctx context.Context, name string, perm fs.FileMode) error {
	const op = "mkdir"
	abs, err := s.name(op, name)
	if err != nil {
		return err
	}
	// Not shellfs.MkdirAll: it walks down from the root, which needs
	// absolute names (see shfs).
	r, err := s.sh(ctx, `[ -d "$1" ] && exit 0; if [ -e "$1" ] || [ -L "$1" ]; then exit 4; fi
set -f; d=; IFS=/
for c in $1; do d=${d:+$d/}$c; [ -d "$d" ] || mkdir -m "$2" -- "$d" || exit; done`, rel(abs), shellfs.Octal(perm))
	if err != nil {
		return wrap(s.id, op, err)
	}
	switch r.code {
	case 0:
		return nil
	case 4:
		return sandbox.Errorf(providerName, s.id, op, sandbox.ErrAlreadyExists, "%s exists and is not a directory", abs)
	}
	return shellError(s.id, op, r)
}

// Remove removes a file or an empty directory in the sandbox (package
// shellfs's script).
func (s *Sandbox) Remove(ctx context.Context, name string) error {
	const op = "remove"
	abs, err := s.name(op, name)
	if err != nil {
		return err
	}
	return s.shfsErr(op, abs, s.shfs().Remove(ctx, rel(abs)))
}

// RemoveAll runs rm -rf in the sandbox; a missing name is not an error.
// RemoveAll("/workspace") empties /workspace and keeps it, since commands
// and the bridge's file routes run there.
func (s *Sandbox) RemoveAll(ctx context.Context, name string) error {
	const op = "remove all"
	abs, err := s.name(op, name)
	if err != nil {
		return err
	}
	if abs == Workspace {
		return s.shell(ctx, op, `find . -mindepth 1 -maxdepth 1 -exec rm -rf -- {} +`)
	}
	return s.shfsErr(op, abs, s.shfs().RemoveAll(ctx, rel(abs)))
}

// Rename moves oldname to newname in the sandbox (package shellfs's
// script), replacing a file or an empty directory at newname; a file does
// not replace a directory.
func (s *Sandbox) Rename(ctx context.Context, oldname, newname string) error {
	const op = "rename"
	from, err := s.name(op, oldname)
	if err != nil {
		return err
	}
	to, err := s.name(op, newname)
	if err != nil {
		return err
	}
	if from == Workspace || to == Workspace {
		return sandbox.Errorf(providerName, s.id, op, sandbox.ErrInvalidArgument, "cannot rename /workspace, where commands run")
	}
	return s.shfsErr(op, from+" -> "+to, s.shfs().Rename(ctx, rel(from), rel(to)))
}
