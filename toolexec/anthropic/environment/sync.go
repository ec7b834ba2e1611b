package environment

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2/lib/environments"
	"github.com/anthropics/anthropic-sdk-go/v2/tools/agenttoolset"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/toolexec"
)

// MaxSyncedFileBytes is the largest file copied between a session's host
// folders and its sandbox; larger files are skipped with a warning.
const MaxSyncedFileBytes = 8 << 20

// mount is a host folder placed in the sandbox.
type mount struct {
	host     string // absolute host path
	sandbox  string // absolute sandbox path
	readOnly bool
	// seen is every regular file under sandbox as of the last copy, by
	// slash-separated relative name.
	seen map[string]stamp
}

type stamp struct {
	size int64
	mod  time.Time
}

// seed places the session's skills and memory folders in the sandbox (and
// replaces memory folders of a reused sandbox by the freshly downloaded
// ones), then makes the toolset if the set of folders changed.
func (s *session) seed(ctx context.Context, env *agenttoolset.AgentToolContext) error {
	hostWD, err := filepath.Abs(env.Workdir)
	if err != nil {
		return err
	}
	var mounts []*mount
	for _, r := range env.AllowedRoots {
		if r == "" {
			continue
		}
		h, err := filepath.Abs(r)
		if err != nil {
			return err
		}
		m := &mount{host: h, readOnly: slices.Contains(env.ReadOnlyRoots, r)}
		if rel, ok := hostWithin(hostWD, h); ok {
			m.sandbox = path.Join(s.sbWorkdir, rel)
		} else {
			m.sandbox = path.Clean(filepath.ToSlash(h))
		}
		mounts = append(mounts, m)
	}
	// Skills: {workdir}/skills, where the SDK downloads them.
	if err := s.copyIn(ctx, filepath.Join(hostWD, "skills"), path.Join(s.sbWorkdir, "skills"), nil); err != nil {
		return fmt.Errorf("skills: %w", err)
	}
	for _, m := range mounts {
		if err := s.sb.MkdirAll(ctx, m.sandbox, 0o700); err != nil {
			return fmt.Errorf("memory folder %s: %w", m.sandbox, err)
		}
		m.seen = map[string]stamp{}
		if err := s.copyIn(ctx, m.host, m.sandbox, m.seen); err != nil {
			return fmt.Errorf("memory folder %s: %w", m.sandbox, err)
		}
		// A reused sandbox may hold files the store no longer has. They
		// are removed one by one, never the folder: on a provider whose
		// paths are the host's (an unisolated local sandbox), the folder
		// is the SDK's own.
		have := map[string]sandbox.FileInfo{}
		if err := walkSandbox(ctx, s.sb, m.sandbox, "", have); err != nil {
			return fmt.Errorf("memory folder %s: %w", m.sandbox, err)
		}
		for rel := range have {
			if _, ok := m.seen[rel]; !ok {
				if err := s.sb.Remove(ctx, path.Join(m.sandbox, rel)); err != nil {
					return fmt.Errorf("memory folder %s: %w", m.sandbox, err)
				}
			}
		}
	}
	var roots []string
	for _, m := range mounts {
		if !within(s.sbWorkdir, m.sandbox) {
			roots = append(roots, m.sandbox)
		}
	}
	var old []string
	for _, m := range s.mounts {
		if !within(s.sbWorkdir, m.sandbox) {
			old = append(old, m.sandbox)
		}
	}
	s.mu.Lock()
	s.mounts = mounts
	s.mu.Unlock()
	if s.ts != nil && slices.Equal(roots, old) {
		return nil
	}
	o := toolexec.Options{}
	if s.b.opts.Tools != nil {
		o = *s.b.opts.Tools
	}
	o.Tools = ToolNames
	o.Memory = nil
	o.Files.Workdir = s.sbWorkdir
	o.Files.Roots = roots
	if env.MaxFileBytes > 0 && o.Files.MaxFileBytes == 0 {
		o.Files.MaxFileBytes = env.MaxFileBytes
	}
	ts, err := toolexec.New(s.sb, &o)
	if err != nil {
		return err
	}
	if s.ts != nil {
		_ = s.ts.Close()
	}
	s.ts = ts
	return nil
}

// copyIn copies the regular files under host dir into the sandbox at dir,
// recording each one's stamp in seen when seen is not nil. A missing host
// dir copies nothing; symbolic links are not followed.
func (s *session) copyIn(ctx context.Context, host, dir string, seen map[string]stamp) error {
	return filepath.WalkDir(host, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == host && errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		rel, err := filepath.Rel(host, p)
		if err != nil {
			return err
		}
		target := path.Join(dir, filepath.ToSlash(rel))
		switch {
		case d.IsDir():
			return s.sb.MkdirAll(ctx, target, 0o700)
		case !d.Type().IsRegular():
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Size() > MaxSyncedFileBytes {
			s.b.log.Warn("file too large to place in the sandbox; skipped", slog.String("session_id", s.id), slog.String("path", target), slog.Int64("size", info.Size()))
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := s.sb.WriteFile(ctx, target, bytes.NewReader(data), info.Mode().Perm()); err != nil {
			return err
		}
		if seen != nil {
			fi, err := s.sb.Stat(ctx, target)
			if err != nil {
				return err
			}
			seen[filepath.ToSlash(rel)] = stamp{fi.Size, fi.ModTime}
		}
		return nil
	})
}

// carryBack copies what changed in the sandbox's writable memory folders
// back to their host folders: new and changed files are written (atomically)
// and files deleted in the sandbox are deleted on the host. The store's
// marker file is never carried back. A memory folder missing from the
// sandbox altogether is left alone on the host.
func (s *session) carryBack(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, m := range s.mounts {
		if m.readOnly {
			continue
		}
		if err := s.carryMount(ctx, m); err != nil {
			errs = append(errs, fmt.Errorf("memory folder %s: %w", m.sandbox, err))
		}
	}
	return errors.Join(errs...)
}

func (s *session) carryMount(ctx context.Context, m *mount) error {
	now := map[string]sandbox.FileInfo{}
	if err := walkSandbox(ctx, s.sb, m.sandbox, "", now); err != nil {
		if errors.Is(err, sandbox.ErrNotFound) {
			s.b.log.Warn("memory folder missing from the sandbox; the host copy is left as it is", slog.String("session_id", s.id), slog.String("path", m.sandbox))
			return nil
		}
		return err
	}
	delete(now, environments.MarkerPath)
	root, err := os.OpenRoot(m.host)
	if err != nil {
		return err
	}
	defer root.Close()
	var errs []error
	for rel, fi := range now {
		st := stamp{fi.Size, fi.ModTime}
		if old, ok := m.seen[rel]; ok && old == st {
			continue
		}
		if fi.Size > MaxSyncedFileBytes {
			s.b.log.Warn("memory file too large to carry back; skipped", slog.String("session_id", s.id), slog.String("path", path.Join(m.sandbox, rel)), slog.Int64("size", fi.Size))
			continue
		}
		data, err := readAll(ctx, s.sb, path.Join(m.sandbox, rel))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := writeHost(root, m.host, rel, data); err != nil {
			errs = append(errs, err)
			continue
		}
		m.seen[rel] = st
	}
	for rel := range m.seen {
		if _, ok := now[rel]; ok || rel == environments.MarkerPath {
			continue
		}
		if fi, err := root.Lstat(filepath.FromSlash(rel)); err == nil && fi.Mode().IsRegular() {
			if err := root.Remove(filepath.FromSlash(rel)); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		delete(m.seen, rel)
	}
	return errors.Join(errs...)
}

// walkSandbox lists the regular files under dir in the sandbox.
func walkSandbox(ctx context.Context, sb *sandbox.Sandbox, dir, rel string, out map[string]sandbox.FileInfo) error {
	entries, err := sb.ReadDir(ctx, path.Join(dir, rel))
	if err != nil {
		return err
	}
	for _, e := range entries {
		r := path.Join(rel, e.Name)
		switch {
		case e.IsDir():
			if err := walkSandbox(ctx, sb, dir, r, out); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
				return err
			}
		case e.Mode.IsRegular():
			out[r] = e
		}
	}
	return nil
}

// writeHost writes data to rel under the host folder root (opened as
// root): unchanged content is left alone; otherwise the file is written to a
// temporary file beside the folder (so a concurrent sync never sees it) and
// renamed into place.
func writeHost(root *os.Root, host, rel string, data []byte) error {
	name := filepath.FromSlash(rel)
	if !filepath.IsLocal(name) {
		return fmt.Errorf("refusing memory file name %q", rel)
	}
	if cur, err := root.ReadFile(name); err == nil && bytes.Equal(cur, data) {
		return nil
	}
	if dir := filepath.Dir(name); dir != "." {
		if err := root.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	if fi, err := root.Lstat(name); err == nil && !fi.Mode().IsRegular() {
		return fmt.Errorf("memory file %s is not a regular file on the host", rel)
	}
	tmp, err := os.CreateTemp(filepath.Dir(host), ".perimeter-sync-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(host, name))
}
