package sshbox

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"maps"
	"net"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

// meta is BASE/ID/meta.json: what a client needs to use a sandbox it did not
// create.
type meta struct {
	ID      string            `json:"id"`
	Labels  map[string]string `json:"labels,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	Workdir string            `json:"workdir"`
	Created time.Time         `json:"created"`
	Expires time.Time         `json:"expires,omitzero"`
}

// Sandbox is a directory on the remote host.
type Sandbox struct {
	p    *Provider
	meta meta
	dir  string // BASE/ID
	root string // BASE/ID/root: the files' root and the default workdir
}

// Create makes BASE/ID/root, writes BASE/ID/meta.json and, for
// Spec.Timeout, starts the reaper. Only NetworkOpen is accepted; Image,
// RootFS, Snapshot and Resources are refused with sandbox.ErrNotSupported.
func (p *Provider) Create(ctx context.Context, spec *driver.Spec) (driver.Sandbox, error) {
	unsupported := func(format string, args ...any) error {
		return sandbox.Errorf(Name, "", "create", sandbox.ErrNotSupported, format, args...)
	}
	switch {
	case spec.Network.Mode != driver.NetworkOpen:
		return nil, unsupported("network %q: a directory sandbox shares the remote host's network and cannot restrict egress; ask for NetworkOpen", spec.Network.Mode)
	case spec.Image != "":
		return nil, unsupported("Spec.Image: a directory sandbox runs on the remote host's own userland")
	case spec.RootFS != "":
		return nil, unsupported("Spec.RootFS: a directory sandbox runs on the remote host's own userland")
	case spec.Snapshot != "":
		return nil, unsupported("Spec.Snapshot: this provider takes no snapshots")
	case spec.Resources != (driver.Resources{}):
		return nil, unsupported("Spec.Resources: a directory sandbox cannot bound CPU, memory, disk, PIDs or GPUs")
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	id := "sb-" + hex.EncodeToString(rnd[:])
	s := &Sandbox{p: p, dir: path.Join(p.opts.Base, id)}
	s.root = path.Join(s.dir, "root")
	s.meta = meta{ID: id, Labels: spec.Labels, Env: spec.Env, Workdir: s.root, Created: time.Now().UTC()}
	if spec.Workdir != "" {
		w := spec.Workdir
		if !path.IsAbs(w) {
			w = path.Join(s.root, w)
		}
		if !s.inside(w) {
			return nil, sandbox.Errorf(Name, "", "create", sandbox.ErrInvalidArgument,
				"Spec.Workdir %q is outside the sandbox directory %s", spec.Workdir, s.root)
		}
		s.meta.Workdir = w
	}
	if spec.Timeout > 0 {
		s.meta.Expires = s.meta.Created.Add(spec.Timeout)
	}
	if err := p.create(ctx, s, spec.Timeout); err != nil {
		p.sftp.RemoveAll(s.dir)
		return nil, err
	}
	return s, nil
}

func (p *Provider) create(ctx context.Context, s *Sandbox, timeout time.Duration) error {
	fail := func(op, name string, err error) error {
		return sandbox.NewError(Name, s.meta.ID, "create", kindOf(err), pathErr(op, name, err))
	}
	if err := p.sftp.Mkdir(s.dir); err != nil {
		return fail("mkdir", s.dir, err)
	}
	if err := p.sftp.Chmod(s.dir, 0o700); err != nil {
		return fail("chmod", s.dir, err)
	}
	if err := p.sftp.Mkdir(s.root); err != nil {
		return fail("mkdir", s.root, err)
	}
	if err := p.sftp.Chmod(s.root, 0o755); err != nil {
		return fail("chmod", s.root, err)
	}
	if s.meta.Workdir != s.root {
		if err := s.MkdirAll(ctx, s.meta.Workdir, 0o755); err != nil {
			return err
		}
	}
	if timeout > 0 {
		// The deadline is absolute, so the reaper's own start-up does not
		// delay it; the two hosts' clocks are assumed to agree.
		deadline := strconv.FormatInt(s.meta.Expires.Add(time.Second-1).Unix(), 10)
		if _, err := p.runScript(ctx, reaperScript, p.opts.Base, s.meta.ID, deadline, terminateScript); err != nil {
			return sandbox.NewError(Name, s.meta.ID, "create", sandbox.ErrUnavailable, fmt.Errorf("starting the reaper: %w", err))
		}
	}
	// meta.json last: a directory without it is not listed.
	b, err := json.Marshal(s.meta)
	if err != nil {
		return sandbox.NewError(Name, s.meta.ID, "create", sandbox.ErrInvalidArgument, err)
	}
	if err := s.writeAtomic(path.Join(s.dir, "meta.json"), bytes.NewReader(b), 0o600); err != nil {
		if p.sftp != nil && timeout > 0 {
			p.runScript(context.WithoutCancel(ctx), terminateScript, p.opts.Base, s.meta.ID)
		}
		return sandbox.NewError(Name, s.meta.ID, "create", kindOf(err), err)
	}
	return nil
}

// Get reads BASE/ID/meta.json. An unknown or terminated ID is
// sandbox.ErrNotFound.
func (p *Provider) Get(ctx context.Context, id string) (driver.Sandbox, error) {
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/\x00") || strings.HasPrefix(id, ".") {
		return nil, sandbox.Errorf(Name, id, "get", sandbox.ErrNotFound, "no sandbox %q", id)
	}
	m, err := p.readMeta(id)
	if err != nil {
		return nil, sandbox.NewError(Name, id, "get", kindOf(err), err)
	}
	s := &Sandbox{p: p, meta: *m, dir: path.Join(p.opts.Base, id)}
	s.root = path.Join(s.dir, "root")
	return s, nil
}

func (p *Provider) readMeta(id string) (*meta, error) {
	name := path.Join(p.opts.Base, id, "meta.json")
	f, err := p.sftp.Open(name)
	if err != nil {
		return nil, pathErr("open", name, err)
	}
	defer f.Close()
	var m meta
	if err := json.NewDecoder(io.LimitReader(f, 1<<20)).Decode(&m); err != nil {
		return nil, pathErr("read", name, err)
	}
	if m.ID != id {
		return nil, pathErr("read", name, fmt.Errorf("names sandbox %q", m.ID))
	}
	return &m, nil
}

// List reads the meta.json of every sandbox under BASE.
func (p *Provider) List(ctx context.Context, opts *driver.ListOptions) iter.Seq2[driver.Info, error] {
	return func(yield func(driver.Info, error) bool) {
		entries, err := p.sftp.ReadDir(p.opts.Base)
		if err != nil {
			yield(driver.Info{}, sandbox.NewError(Name, "", "list", kindOf(err), pathErr("readdir", p.opts.Base, err)))
			return
		}
		sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
		for _, e := range entries {
			if ctx.Err() != nil {
				yield(driver.Info{}, ctx.Err())
				return
			}
			if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
				continue
			}
			m, err := p.readMeta(e.Name())
			if err != nil {
				continue // being created or terminated
			}
			match := true
			for k, v := range opts.Labels {
				if got, ok := m.Labels[k]; !ok || got != v {
					match = false
				}
			}
			if match && !yield(p.info(m), nil) {
				return
			}
		}
	}
}

func (p *Provider) info(m *meta) driver.Info {
	return driver.Info{
		ID:        m.ID,
		Provider:  Name,
		State:     driver.StateRunning,
		Labels:    maps.Clone(m.Labels),
		Created:   m.Created,
		Expires:   m.Expires,
		Isolation: fmt.Sprintf("none: a directory on %s, commands run as %s with the host's view; network: open (the host's)", p.opts.Addr, p.opts.Config.User),
	}
}

// ID returns the sandbox's ID.
func (s *Sandbox) ID() string { return s.meta.ID }

// Dir returns the sandbox's root directory on the remote host.
func (s *Sandbox) Dir() string { return s.root }

// Info re-reads meta.json; a terminated sandbox is sandbox.ErrNotFound.
func (s *Sandbox) Info(ctx context.Context) (driver.Info, error) {
	m, err := s.p.readMeta(s.meta.ID)
	if err != nil {
		return driver.Info{}, s.err("info", err)
	}
	return s.p.info(m), nil
}

// Capabilities: stdin, signals, PTY with resize, Expose and Dial through SSH
// port forwarding, NetworkOpen only. No pause, snapshot, timeout extension
// or network update.
func (s *Sandbox) Capabilities() driver.Capabilities {
	return driver.Capabilities{
		Stdin:        true,
		Signal:       true,
		PTY:          true,
		Expose:       true,
		Dial:         true,
		NetworkModes: []driver.NetworkMode{driver.NetworkOpen},
	}
}

// Terminate kills every process carrying the sandbox's marker, and the
// reaper, and removes the directory. It is idempotent.
func (s *Sandbox) Terminate(ctx context.Context) error {
	if _, err := s.p.runScript(ctx, terminateScript, s.p.opts.Base, s.meta.ID); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return sandbox.NewError(Name, s.meta.ID, "terminate", sandbox.ErrUnavailable, err)
	}
	return nil
}

// As sets a **Sandbox target.
func (s *Sandbox) As(target any) bool {
	if t, ok := target.(**Sandbox); ok {
		*t = s
		return true
	}
	return false
}

// err gives err its kind; a missing file in a sandbox whose directory is
// gone is sandbox.ErrTerminated.
func (s *Sandbox) err(op string, err error) error {
	if err == nil {
		return nil
	}
	var se *sandbox.Error
	if errors.As(err, &se) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	kind := kindOf(err)
	if kind == sandbox.ErrNotFound {
		if _, e := s.p.sftp.Lstat(s.root); errors.Is(e, fs.ErrNotExist) {
			kind = sandbox.ErrTerminated
		}
	}
	return sandbox.NewError(Name, s.meta.ID, op, kind, err)
}

// inside reports whether the absolute, clean name lies in the root.
func (s *Sandbox) inside(name string) bool {
	return name == s.root || strings.HasPrefix(name, s.root+"/")
}

// Expose and Dial live in forward.go.

func pathErr(op, name string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return err
	}
	return &fs.PathError{Op: op, Path: name, Err: err}
}

// kindOf maps an SFTP, SSH or file error to the contract's kinds.
func kindOf(err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return sandbox.ErrNotFound
	case errors.Is(err, fs.ErrPermission):
		return sandbox.ErrPermissionDenied
	case errors.Is(err, fs.ErrExist):
		return sandbox.ErrAlreadyExists
	case errors.As(err, &ne) && ne.Timeout():
		return sandbox.ErrTimeout
	}
	return sandbox.ErrUnavailable
}

var _ driver.Sandbox = (*Sandbox)(nil)
