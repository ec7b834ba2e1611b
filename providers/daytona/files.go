package daytona

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime/multipart"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// smallFile is the largest WriteFile content sent with a known length
// (and retried on transient failures); larger content streams once.
const smallFile = 1 << 20

// ReadFile streams the named file (GET /files/download).
func (s *Sandbox) ReadFile(ctx context.Context, name string) (io.ReadCloser, error) {
	const op = "read file"
	p, err := s.name(ctx, op, name)
	if err != nil {
		return nil, err
	}
	var body io.ReadCloser
	err = s.call(ctx, op, func(base string) error {
		resp, err := s.p.c.Toolbox(ctx, base, http.MethodGet, "/files/download", url.Values{"path": {p}}, nil)
		if err == nil {
			body = resp.Body
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return body, nil
}

// WriteFile uploads r to a temporary name beside the file (a streamed
// multipart POST /files/upload), sets its permissions and moves it over
// the name, so the file appears whole or not at all.
func (s *Sandbox) WriteFile(ctx context.Context, name string, r io.Reader, perm fs.FileMode) error {
	const op = "write file"
	if err := s.plainPerm(op, perm); err != nil {
		return err
	}
	p, err := s.name(ctx, op, name)
	if err != nil {
		return err
	}
	if r == nil {
		r = strings.NewReader("")
	}
	dir := path.Dir(p)
	fi, err := s.Stat(ctx, dir)
	switch {
	case err != nil:
		return relabel(err, op)
	case !fi.IsDir():
		return sandbox.Errorf(providerName, s.id, op, sandbox.ErrInvalidArgument, "%s", dir+" is not a directory")
	}
	var b [8]byte
	rand.Read(b[:])
	tmp := path.Join(dir, "."+path.Base(p)+".perimeter-"+hex.EncodeToString(b[:]))

	// Read up to smallFile bytes first: small content goes with a known
	// length (retried, validated whole by the fake); larger content is
	// streamed without being held in memory.
	head := make([]byte, smallFile+1)
	n, rerr := io.ReadFull(r, head)
	head = head[:n]
	var upload *body
	switch {
	case rerr == io.EOF || rerr == io.ErrUnexpectedEOF:
		upload, err = multipartBody(bytes.NewReader(head))
		if err != nil {
			return sandbox.NewError(providerName, s.id, op, sandbox.ErrInvalidArgument, err)
		}
	case rerr != nil:
		return sandbox.NewError(providerName, s.id, op, sandbox.ErrInvalidArgument, fmt.Errorf("reading the content: %w", rerr))
	default:
		upload = streamingBody(io.MultiReader(bytes.NewReader(head), r))
	}
	send := func(base string) error {
		resp, err := s.p.c.do(ctx, http.MethodPost, toolboxURL(base, "/files/upload", url.Values{"path": {tmp}}), upload, false)
		if err == nil {
			// An empty body is what the daemon sends (notes §6); ignore any.
			io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
		}
		return err
	}
	if upload.once != nil {
		// A streamed body cannot be sent twice: no resume-and-retry.
		if err = s.ensure(ctx, op); err == nil {
			err = wrap(s.id, op, send(s.toolboxBase()))
		}
	} else {
		err = s.call(ctx, op, send)
	}
	if err == nil {
		err = s.call(ctx, op, func(base string) error {
			q := url.Values{"path": {tmp}, "mode": {fmt.Sprintf("%04o", perm.Perm())}}
			return s.p.c.toolbox(ctx, base, http.MethodPost, "/files/permissions", q, nil, nil)
		})
	}
	if err == nil {
		err = s.call(ctx, op, func(base string) error {
			q := url.Values{"source": {tmp}, "destination": {p}}
			return s.p.c.toolbox(ctx, base, http.MethodPost, "/files/move", q, nil, nil)
		})
	}
	if err != nil {
		// Whatever reached the temporary name goes.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		s.p.c.toolbox(cctx, s.toolboxBase(), http.MethodDelete, "/files", url.Values{"path": {tmp}}, nil, nil)
		cancel()
		return err
	}
	return nil
}

// plainPerm refuses the setuid, setgid and sticky bits: the daemon's
// permissions and folder endpoints apply only the 0o777 bits and would drop
// the others without saying so.
func (s *Sandbox) plainPerm(op string, perm fs.FileMode) error {
	if perm&^fs.ModePerm != 0 {
		return sandbox.Errorf(providerName, s.id, op, sandbox.ErrNotSupported,
			"permissions %v: Daytona's toolbox sets only the 0777 bits, not setuid, setgid or sticky", perm)
	}
	return nil
}

// relabel gives an error from a helper operation the caller's name.
func relabel(err error, op string) error {
	var se *sandbox.Error
	if errors.As(err, &se) {
		c := *se
		c.Op = op
		return &c
	}
	return err
}

// multipartBody is a multipart/form-data body with the field "file",
// which can be sent again.
func multipartBody(content *bytes.Reader) (*body, error) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, err := mw.CreateFormFile("file", "file")
	if err != nil {
		return nil, err
	}
	if _, err := content.WriteTo(fw); err != nil {
		return nil, err
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}
	raw := buf.Bytes()
	return &body{contentType: mw.FormDataContentType(), open: func() io.Reader { return bytes.NewReader(raw) }}, nil
}

// streamingBody is a multipart body written from r as it is sent. If r
// fails, the request fails with r's error.
func streamingBody(r io.Reader) *body {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		fw, err := mw.CreateFormFile("file", "file")
		if err == nil {
			_, err = io.Copy(fw, r)
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	return &body{contentType: mw.FormDataContentType(), once: pr}
}

// Stat describes the named file (GET /files/info).
func (s *Sandbox) Stat(ctx context.Context, name string) (sandbox.FileInfo, error) {
	const op = "stat"
	p, err := s.name(ctx, op, name)
	if err != nil {
		return sandbox.FileInfo{}, err
	}
	var w wireFileInfo
	if err := s.call(ctx, op, func(base string) error {
		return s.p.c.toolbox(ctx, base, http.MethodGet, "/files/info", url.Values{"path": {p}}, nil, &w)
	}); err != nil {
		return sandbox.FileInfo{}, err
	}
	fi := fileInfoOf(&w)
	if fi.Name == "" {
		fi.Name = path.Base(p)
	}
	return fi, nil
}

// fileInfoOf converts the daemon's FileInfo: permissions is octal, mode is
// Go's FileMode string ("drwxr-xr-x", "Lrwxrwxrwx").
func fileInfoOf(w *wireFileInfo) sandbox.FileInfo {
	fi := sandbox.FileInfo{Name: w.Name, Size: w.Size}
	if perm, err := strconv.ParseUint(strings.TrimSpace(w.Permissions), 8, 32); err == nil {
		fi.Mode = fs.FileMode(perm) & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
	}
	for _, c := range w.Mode {
		switch c {
		case 'd':
			fi.Mode |= fs.ModeDir
		case 'L':
			fi.Mode |= fs.ModeSymlink
		case 'p':
			fi.Mode |= fs.ModeNamedPipe
		case 'S':
			fi.Mode |= fs.ModeSocket
		case 'D':
			fi.Mode |= fs.ModeDevice
		case 'c':
			fi.Mode |= fs.ModeCharDevice
		case 'u':
			fi.Mode |= fs.ModeSetuid
		case 'g':
			fi.Mode |= fs.ModeSetgid
		case 't':
			fi.Mode |= fs.ModeSticky
		default:
			goto done
		}
	}
done:
	if w.IsDir {
		fi.Mode |= fs.ModeDir
	}
	if t, err := time.Parse(time.RFC3339Nano, w.ModifiedAt); err == nil {
		fi.ModTime = t
	}
	return fi
}

// ReadDir lists the named directory (GET /files), sorted by name.
func (s *Sandbox) ReadDir(ctx context.Context, name string) ([]sandbox.FileInfo, error) {
	const op = "read dir"
	p, err := s.name(ctx, op, name)
	if err != nil {
		return nil, err
	}
	var ws []wireFileInfo
	if err := s.call(ctx, op, func(base string) error {
		return s.p.c.toolbox(ctx, base, http.MethodGet, "/files", url.Values{"path": {p}}, nil, &ws)
	}); err != nil {
		return nil, err
	}
	out := make([]sandbox.FileInfo, 0, len(ws))
	for i := range ws {
		out = append(out, fileInfoOf(&ws[i]))
	}
	slices.SortFunc(out, func(a, b sandbox.FileInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// MkdirAll creates the named directory and its parents
// (POST /files/folder).
func (s *Sandbox) MkdirAll(ctx context.Context, name string, perm fs.FileMode) error {
	const op = "mkdir"
	if err := s.plainPerm(op, perm); err != nil {
		return err
	}
	p, err := s.name(ctx, op, name)
	if err != nil {
		return err
	}
	return s.call(ctx, op, func(base string) error {
		q := url.Values{"path": {p}, "mode": {fmt.Sprintf("%04o", perm.Perm())}}
		return s.p.c.toolbox(ctx, base, http.MethodPost, "/files/folder", q, nil, nil)
	})
}

// Remove removes the named file or empty directory (DELETE /files).
func (s *Sandbox) Remove(ctx context.Context, name string) error {
	const op = "remove"
	p, err := s.name(ctx, op, name)
	if err != nil {
		return err
	}
	return s.call(ctx, op, func(base string) error {
		return s.p.c.toolbox(ctx, base, http.MethodDelete, "/files", url.Values{"path": {p}}, nil, nil)
	})
}

// RemoveAll removes the named tree (DELETE /files?recursive=true); a
// missing name is not an error.
func (s *Sandbox) RemoveAll(ctx context.Context, name string) error {
	const op = "remove all"
	p, err := s.name(ctx, op, name)
	if err != nil {
		return err
	}
	err = s.call(ctx, op, func(base string) error {
		return s.p.c.toolbox(ctx, base, http.MethodDelete, "/files", url.Values{"path": {p}, "recursive": {"true"}}, nil, nil)
	})
	var ae *APIError
	if errors.As(err, &ae) && ae.Daemon && ae.Status == http.StatusNotFound {
		return nil
	}
	return err
}

// Rename moves oldname to newname (POST /files/move).
func (s *Sandbox) Rename(ctx context.Context, oldname, newname string) error {
	const op = "rename"
	from, err := s.name(ctx, op, oldname)
	if err != nil {
		return err
	}
	to, err := s.name(ctx, op, newname)
	if err != nil {
		return err
	}
	return s.call(ctx, op, func(base string) error {
		return s.p.c.toolbox(ctx, base, http.MethodPost, "/files/move", url.Values{"source": {from}, "destination": {to}}, nil, nil)
	})
}
