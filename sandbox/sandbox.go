package sandbox

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

// Sandbox is one isolated environment: a process space and a filesystem. All
// methods are safe for concurrent use.
//
// After Terminate has succeeded on this handle, every method but ID,
// Capabilities, As and Terminate (which returns nil again) fails with
// ErrTerminated; a sandbox terminated elsewhere fails with ErrTerminated or
// ErrNotFound. After the provider's Close, every method that does I/O fails
// with ErrClosed.
type Sandbox struct {
	p          *Provider
	d          driver.Sandbox
	id         string
	caps       Capabilities
	terminated atomic.Bool
}

// Tunnel is a private endpoint made reachable: a sandbox port's URL.
type Tunnel interface {
	// URL returns where the endpoint answers, such as "http://127.0.0.1:41234"
	// or "https://abc.example.dev".
	URL() string
	// Close withdraws the endpoint and is idempotent. A provider whose
	// endpoints live as long as the sandbox (Modal's tunnels) cannot
	// withdraw one early; its Capabilities.CloseTunnel is false, its package
	// doc says so, and Terminate ends it.
	Close() error
	// As sets target to a provider-specific type and reports whether it
	// did.
	As(target any) bool
}

// ID returns the provider's identifier of the sandbox, usable with
// [Provider.Get].
func (s *Sandbox) ID() string { return s.id }

// Provider returns the provider that returned s.
func (s *Sandbox) Provider() *Provider { return s.p }

// Capabilities returns what this sandbox can do. It does no I/O.
func (s *Sandbox) Capabilities() Capabilities {
	c := s.caps
	c.NetworkModes = slices.Clone(c.NetworkModes)
	return c
}

// As sets target to a provider-specific type, as the provider's package doc
// lists, and reports whether it did.
func (s *Sandbox) As(target any) bool { return target != nil && s.d.As(target) }

// usable refuses calls on a closed provider or a terminated handle.
func (s *Sandbox) usable(op string) error {
	if s.p.closed.Load() {
		return s.p.closedErr(s.id, op)
	}
	if s.terminated.Load() {
		return &Error{Provider: s.p.name, Sandbox: s.id, Op: op, Kind: ErrTerminated}
	}
	return nil
}

func (s *Sandbox) fail(op string, err error) error { return s.p.fail(s.id, op, err) }

func (s *Sandbox) wrap(op string, err error) error { return s.p.wrap(s.id, op, err) }

// notSupported is the error for an ability the sandbox does not declare, or
// declares without the driver implementing it.
func (s *Sandbox) notSupported(op, capability string, declared bool) error {
	msg := "this sandbox does not declare Capabilities." + capability
	if declared {
		msg = "provider bug: Capabilities." + capability + " is declared but the driver does not implement the optional interface"
	}
	return s.fail(op, errNotSupported(msg))
}

// do runs one driver call with the layer's checks, hooks and error decoration.
func (s *Sandbox) do(ctx context.Context, op string, f func(ctx context.Context) error) error {
	if err := s.usable(op); err != nil {
		return err
	}
	ctx, end := s.p.begin(ctx, s.id, op)
	err := s.wrap(op, f(ctx))
	if end != nil {
		end(Outcome{Err: err})
	}
	return err
}

// Info returns the sandbox's current description.
func (s *Sandbox) Info(ctx context.Context) (Info, error) {
	var info Info
	err := s.do(ctx, "info", func(ctx context.Context) (err error) {
		info, err = s.d.Info(ctx)
		return err
	})
	return info, err
}

// Start runs cmd.Args as an argv (no implicit shell) and returns once the
// process has started. ctx bounds the process's life, as with
// exec.CommandContext: when ctx is done the whole process tree is killed.
//
// The layer refuses an empty argv, a NUL byte in an argument, an environment
// key that is empty or contains '=' or NUL, a bad Dir, a negative Timeout and a
// TTY with a non-positive size (ErrInvalidArgument), and a TTY or Stdin the
// sandbox does not declare (ErrNotSupported).
//
// A program that cannot be found or executed is not an error: the returned
// Process exits with code 127 (not found) or 126 (not executable), as a
// shell reports it. A non-zero exit is a result, not an error.
func (s *Sandbox) Start(ctx context.Context, cmd *Cmd) (*Process, error) {
	const op = "exec"
	if err := s.usable(op); err != nil {
		return nil, err
	}
	c, err := checkCmd(cmd, &s.caps)
	if err != nil {
		return nil, s.fail(op, err)
	}
	var end func(Outcome)
	var fb *firstByte
	ctx, end = s.p.begin(ctx, s.id, op)
	if end != nil {
		fb = &firstByte{start: time.Now()}
		c.Stdout, c.Stderr = fb.wrap(c.Stdout), fb.wrap(c.Stderr)
	}
	d, err := s.d.Start(ctx, c)
	if err != nil {
		err = s.wrap(op, err)
		if end != nil {
			end(Outcome{Err: err})
		}
		return nil, err
	}
	return &Process{s: s, d: d, tty: c.TTY != nil, end: end, fb: fb}, nil
}

// ReadFile opens the named file for reading. A missing file is an error of
// kind ErrNotFound; a directory, ErrInvalidArgument.
func (s *Sandbox) ReadFile(ctx context.Context, name string) (io.ReadCloser, error) {
	const op = "read file"
	if err := s.usable(op); err != nil {
		return nil, err
	}
	n, err := cleanName("file name", name)
	if err != nil {
		return nil, s.fail(op, err)
	}
	ctx, end := s.p.begin(ctx, s.id, op)
	rc, err := s.d.ReadFile(ctx, n)
	if err != nil {
		err = s.wrap(op, err)
		if end != nil {
			end(Outcome{Err: err})
		}
		return nil, err
	}
	return &fileReader{s: s, rc: rc, end: end}, nil
}

// fileReader decorates a driver's reader's errors and reports the bytes read
// when closed.
type fileReader struct {
	s    *Sandbox
	rc   io.ReadCloser
	n    int64
	err  error
	end  func(Outcome)
	once sync.Once
}

func (r *fileReader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	r.n += int64(n)
	if err != nil && err != io.EOF {
		err = r.s.wrap("read file", err)
		r.err = err
	}
	return n, err
}

func (r *fileReader) Close() error {
	err := r.rc.Close()
	if err != nil {
		err = r.s.wrap("read file", err)
	}
	r.once.Do(func() {
		if r.end != nil {
			e := r.err
			if e == nil {
				e = err
			}
			r.end(Outcome{Err: e, Bytes: r.n})
		}
	})
	return err
}

// WriteFile creates or replaces the named file with everything read from r,
// with permissions perm (0 means [DefaultFilePerm]; bits outside 0o7777 are
// ErrInvalidArgument). The file appears whole or not at all: if reading r
// fails, or ctx ends, an existing file keeps its old content. The parent
// directory must exist (ErrNotFound otherwise).
func (s *Sandbox) WriteFile(ctx context.Context, name string, r io.Reader, perm fs.FileMode) error {
	const op = "write file"
	if err := s.usable(op); err != nil {
		return err
	}
	n, err := cleanName("file name", name)
	if err != nil {
		return s.fail(op, err)
	}
	if perm, err = checkPerm(perm, DefaultFilePerm); err != nil {
		return s.fail(op, err)
	}
	if r == nil {
		return s.fail(op, invalid("nil reader"))
	}
	ctx, end := s.p.begin(ctx, s.id, op)
	if end == nil {
		return s.wrap(op, s.d.WriteFile(ctx, n, r, perm))
	}
	cr := &countReader{r: r}
	err = s.wrap(op, s.d.WriteFile(ctx, n, cr, perm))
	end(Outcome{Err: err, Bytes: cr.n})
	return err
}

// Stat describes the named file without following a final symbolic link.
func (s *Sandbox) Stat(ctx context.Context, name string) (FileInfo, error) {
	const op = "stat"
	n, err := cleanName("file name", name)
	if err != nil {
		if uerr := s.usable(op); uerr != nil {
			return FileInfo{}, uerr
		}
		return FileInfo{}, s.fail(op, err)
	}
	var fi FileInfo
	err = s.do(ctx, op, func(ctx context.Context) (err error) {
		fi, err = s.d.Stat(ctx, n)
		return err
	})
	return fi, err
}

// ReadDir lists the named directory, sorted by name.
func (s *Sandbox) ReadDir(ctx context.Context, name string) ([]FileInfo, error) {
	const op = "read dir"
	n, err := cleanName("directory name", name)
	if err != nil {
		if uerr := s.usable(op); uerr != nil {
			return nil, uerr
		}
		return nil, s.fail(op, err)
	}
	var out []FileInfo
	err = s.do(ctx, op, func(ctx context.Context) (err error) {
		out, err = s.d.ReadDir(ctx, n)
		return err
	})
	return out, err
}

// MkdirAll creates the named directory and any missing parents, each with
// permissions perm (0 means [DefaultDirPerm]). An existing directory is not an
// error and keeps its permissions.
func (s *Sandbox) MkdirAll(ctx context.Context, name string, perm fs.FileMode) error {
	const op = "mkdir"
	if err := s.usable(op); err != nil {
		return err
	}
	n, err := cleanName("directory name", name)
	if err != nil {
		return s.fail(op, err)
	}
	if perm, err = checkPerm(perm, DefaultDirPerm); err != nil {
		return s.fail(op, err)
	}
	return s.do(ctx, op, func(ctx context.Context) error { return s.d.MkdirAll(ctx, n, perm) })
}

// Remove removes the named file or empty directory. A missing name is an
// error of kind ErrNotFound.
func (s *Sandbox) Remove(ctx context.Context, name string) error {
	return s.nameOp(ctx, "remove", name, s.d.Remove)
}

// RemoveAll removes the named file or directory tree. A missing name is not an
// error.
func (s *Sandbox) RemoveAll(ctx context.Context, name string) error {
	return s.nameOp(ctx, "remove all", name, s.d.RemoveAll)
}

func (s *Sandbox) nameOp(ctx context.Context, op, name string, f func(context.Context, string) error) error {
	if err := s.usable(op); err != nil {
		return err
	}
	n, err := cleanName("file name", name)
	if err != nil {
		return s.fail(op, err)
	}
	return s.do(ctx, op, func(ctx context.Context) error { return f(ctx, n) })
}

// Rename moves oldname to newname, replacing a file at newname.
func (s *Sandbox) Rename(ctx context.Context, oldname, newname string) error {
	const op = "rename"
	if err := s.usable(op); err != nil {
		return err
	}
	o, err := cleanName("file name", oldname)
	if err != nil {
		return s.fail(op, err)
	}
	n, err := cleanName("file name", newname)
	if err != nil {
		return s.fail(op, err)
	}
	return s.do(ctx, op, func(ctx context.Context) error { return s.d.Rename(ctx, o, n) })
}

// Expose makes port (1–65535), served inside the sandbox, reachable from
// outside and returns the endpoint. opts nil or an empty Protocol means
// "http". A sandbox without Capabilities.Expose, or a protocol the provider
// cannot expose, is an error of kind ErrNotSupported.
func (s *Sandbox) Expose(ctx context.Context, port int, opts *ExposeOptions) (Tunnel, error) {
	const op = "expose"
	if err := s.usable(op); err != nil {
		return nil, err
	}
	if err := checkPort(port); err != nil {
		return nil, s.fail(op, err)
	}
	o, err := checkProtocol(opts)
	if err != nil {
		return nil, s.fail(op, err)
	}
	if !s.caps.Expose {
		return nil, s.notSupported(op, "Expose", false)
	}
	var t driver.Tunnel
	err = s.do(ctx, op, func(ctx context.Context) (err error) {
		t, err = s.d.Expose(ctx, port, o)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &tunnel{s: s, d: t}, nil
}

type tunnel struct {
	s    *Sandbox
	d    driver.Tunnel
	once sync.Once
	err  error
}

func (t *tunnel) URL() string { return t.d.URL() }

func (t *tunnel) Close() error {
	t.once.Do(func() { t.err = t.s.wrap("close tunnel", t.d.Close()) })
	return t.err
}

func (t *tunnel) As(target any) bool { return target != nil && t.d.As(target) }

// Terminate stops the sandbox and releases everything it holds: processes,
// files, network endpoints. It is idempotent: terminating a terminated
// sandbox returns nil.
func (s *Sandbox) Terminate(ctx context.Context) error {
	const op = "terminate"
	if s.p.closed.Load() {
		return s.p.closedErr(s.id, op)
	}
	if s.terminated.Load() {
		return nil
	}
	ctx, end := s.p.begin(ctx, s.id, op)
	err := s.wrap(op, s.d.Terminate(ctx))
	if end != nil {
		end(Outcome{Err: err})
	}
	if err == nil {
		s.terminated.Store(true)
	}
	return err
}

// Pause freezes every process of the sandbox, keeping its memory and files.
// Without Capabilities.Pause it is an error of kind ErrNotSupported.
func (s *Sandbox) Pause(ctx context.Context) error {
	return s.pauser(ctx, "pause", func(ctx context.Context, p driver.Pauser) error { return p.Pause(ctx) })
}

// Resume continues a paused sandbox. Without Capabilities.Pause it is an error
// of kind ErrNotSupported.
func (s *Sandbox) Resume(ctx context.Context) error {
	return s.pauser(ctx, "resume", func(ctx context.Context, p driver.Pauser) error { return p.Resume(ctx) })
}

func (s *Sandbox) pauser(ctx context.Context, op string, f func(context.Context, driver.Pauser) error) error {
	if err := s.usable(op); err != nil {
		return err
	}
	if !s.caps.Pause {
		return s.notSupported(op, "Pause", false)
	}
	p, ok := s.d.(driver.Pauser)
	if !ok {
		return s.notSupported(op, "Pause", true)
	}
	return s.do(ctx, op, func(ctx context.Context) error { return f(ctx, p) })
}

// Snapshot saves the sandbox's filesystem and returns an identifier for
// Spec.Snapshot. Without Capabilities.Snapshot it is an error of kind
// ErrNotSupported.
func (s *Sandbox) Snapshot(ctx context.Context) (string, error) {
	const op = "snapshot"
	if err := s.usable(op); err != nil {
		return "", err
	}
	if !s.caps.Snapshot {
		return "", s.notSupported(op, "Snapshot", false)
	}
	sn, ok := s.d.(driver.Snapshotter)
	if !ok {
		return "", s.notSupported(op, "Snapshot", true)
	}
	var id string
	err := s.do(ctx, op, func(ctx context.Context) (err error) {
		id, err = sn.Snapshot(ctx)
		return err
	})
	return id, err
}

// UpdateNetwork replaces the sandbox's egress policy while it runs. policy is
// validated as Spec.Network is (nil or an empty mode means NetworkNone); a mode
// the sandbox does not list in Capabilities.NetworkModes, or a sandbox without
// Capabilities.UpdateNetwork, is an error of kind ErrNotSupported.
func (s *Sandbox) UpdateNetwork(ctx context.Context, policy *NetworkPolicy) error {
	const op = "update network"
	if err := s.usable(op); err != nil {
		return err
	}
	np, err := checkPolicy(policy)
	if err != nil {
		return s.fail(op, err)
	}
	if !s.caps.UpdateNetwork {
		return s.notSupported(op, "UpdateNetwork", false)
	}
	if !s.caps.SupportsNetwork(np.Mode) {
		return s.fail(op, errNotSupported("network mode "+string(np.Mode)+" is not in Capabilities.NetworkModes"))
	}
	u, ok := s.d.(driver.NetworkUpdater)
	if !ok {
		return s.notSupported(op, "UpdateNetwork", true)
	}
	return s.do(ctx, op, func(ctx context.Context) error { return u.UpdateNetwork(ctx, np) })
}

// ExtendTimeout moves the sandbox's expiry d (positive) later. Without
// Capabilities.ExtendTimeout it is an error of kind ErrNotSupported.
func (s *Sandbox) ExtendTimeout(ctx context.Context, d time.Duration) error {
	const op = "extend timeout"
	if err := s.usable(op); err != nil {
		return err
	}
	if d <= 0 {
		return s.fail(op, invalidf("duration %v is not positive", d))
	}
	if !s.caps.ExtendTimeout {
		return s.notSupported(op, "ExtendTimeout", false)
	}
	e, ok := s.d.(driver.TimeoutExtender)
	if !ok {
		return s.notSupported(op, "ExtendTimeout", true)
	}
	return s.do(ctx, op, func(ctx context.Context) error { return e.ExtendTimeout(ctx, d) })
}

// Dial connects to a TCP port (1–65535) served inside the sandbox. Without
// Capabilities.Dial it is an error of kind ErrNotSupported.
func (s *Sandbox) Dial(ctx context.Context, port int) (net.Conn, error) {
	const op = "dial"
	if err := s.usable(op); err != nil {
		return nil, err
	}
	if err := checkPort(port); err != nil {
		return nil, s.fail(op, err)
	}
	if !s.caps.Dial {
		return nil, s.notSupported(op, "Dial", false)
	}
	d, ok := s.d.(driver.Dialer)
	if !ok {
		return nil, s.notSupported(op, "Dial", true)
	}
	var c net.Conn
	err := s.do(ctx, op, func(ctx context.Context) (err error) {
		c, err = d.DialContext(ctx, port)
		return err
	})
	return c, err
}

// Process is a command started by [Sandbox.Start]. It is safe for concurrent
// use.
type Process struct {
	s    *Sandbox
	d    driver.Process
	tty  bool
	end  func(Outcome) // reports the exec to the hooks; nil without hooks
	fb   *firstByte
	once sync.Once
}

// Wait waits for the process to exit and for its output to be copied to
// Cmd.Stdout and Cmd.Stderr. ctx bounds only the waiting: when ctx is done,
// Wait returns ctx.Err() and the process keeps running. If the ctx given to
// Start ends the process, Wait returns that ctx's error with the status.
// Wait may be called more than once and returns the same result each time.
func (p *Process) Wait(ctx context.Context) (ExitStatus, error) {
	const op = "wait"
	if p.s.p.closed.Load() {
		return ExitStatus{}, p.s.p.closedErr(p.s.id, op)
	}
	st, err := p.d.Wait(ctx)
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return st, err // the wait was abandoned; the process runs on
	}
	err = p.s.wrap(op, err)
	if p.end != nil {
		p.once.Do(func() { p.end(Outcome{Err: err, Status: &st, FirstByte: p.fb.elapsed()}) })
	}
	return st, err
}

// Signal sends sig (one of the Signal constants) to the process group of the
// command. Signalling a process that has exited is not an error. Without
// Capabilities.Signal it is an error of kind ErrNotSupported.
func (p *Process) Signal(ctx context.Context, sig Signal) error {
	const op = "signal"
	if err := p.s.usable(op); err != nil {
		return err
	}
	if err := checkSignal(sig); err != nil {
		return p.s.fail(op, err)
	}
	if !p.s.caps.Signal {
		return p.s.notSupported(op, "Signal", false)
	}
	return p.s.do(ctx, op, func(ctx context.Context) error { return p.d.Signal(ctx, sig) })
}

// Resize changes the size of the terminal of a process started with Cmd.TTY;
// rows and cols must be positive. Without Capabilities.PTY it is an error of
// kind ErrNotSupported; on a process without a terminal, ErrInvalidArgument.
func (p *Process) Resize(ctx context.Context, rows, cols int) error {
	const op = "resize"
	if err := p.s.usable(op); err != nil {
		return err
	}
	if !p.s.caps.PTY {
		return p.s.notSupported(op, "PTY", false)
	}
	if !p.tty {
		return p.s.fail(op, invalid("the process has no terminal (started without Cmd.TTY)"))
	}
	if rows <= 0 || cols <= 0 {
		return p.s.fail(op, invalidf("terminal size %dx%d is not positive", rows, cols))
	}
	r, ok := p.d.(driver.Resizer)
	if !ok {
		return p.s.notSupported(op, "PTY", true)
	}
	return p.s.do(ctx, op, func(ctx context.Context) error { return r.Resize(ctx, rows, cols) })
}

// As sets target to a provider-specific type and reports whether it did.
func (p *Process) As(target any) bool { return target != nil && p.d.As(target) }
