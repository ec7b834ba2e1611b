package local

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
	"github.com/perimeter-sdk/perimeter/sandbox/driver/driverutil"
)

// Sandbox is a workspace directory and the process groups started in it.
type Sandbox struct {
	p    *Provider
	id   string
	dir  string // the sandbox's directory: metadata and workspace
	ws   string // the workspace: "/" in sandbox names
	root fsRoot
	iso  *isoState // nil at L0
	// memLimit is Spec.Resources.Memory (isolated sandboxes).
	memLimit int64

	mu         sync.Mutex
	meta       meta
	terminated bool
	procs      map[*process]struct{}
	isoProcs   map[*isoProcess]struct{}
	tunnels    map[*forwarder]struct{}
	expiry     *time.Timer
	done       chan struct{} // closed when Terminate has released the sandbox
}

var (
	_ driver.Sandbox         = (*Sandbox)(nil)
	_ driver.Dialer          = (*Sandbox)(nil)
	_ driver.TimeoutExtender = (*Sandbox)(nil)
)

// As sets a **Sandbox target to s, for [Sandbox.Isolation] and
// [Sandbox.Workspace].
func (s *Sandbox) As(target any) bool {
	if t, ok := target.(**Sandbox); ok {
		*t = s
		return true
	}
	return false
}

// initEnded reports whether the sandbox is isolated and its init has
// ended (killed, or its creating process's handle was lost).
func (s *Sandbox) initEnded() bool {
	if s.iso == nil {
		return false
	}
	select {
	case <-s.iso.initDone:
		return true
	default:
		return false
	}
}

func newSandbox(p *Provider, dir string, m *meta, st *isoState) (*Sandbox, error) {
	ws := filepath.Join(dir, "workspace")
	// With namespaces, the file methods work on the sandbox's own root, as
	// its commands see it, reached through its init's /proc/PID/root; an
	// os.Root resolves every name and symbolic link inside it.
	top := ws
	if st != nil && st.l1 == nil && st.initPID != 0 {
		top = "/proc/" + strconv.Itoa(st.initPID) + "/root"
	}
	r, err := os.OpenRoot(top)
	if err != nil {
		return nil, sandbox.NewError(Name, m.ID, "open", kindOf(err), err)
	}
	root := fsRoot{r: r, uid: -1}
	if st != nil && os.Getuid() == 0 {
		root.uid = st.uidBase
	}
	sb := &Sandbox{
		p: p, id: m.ID, dir: dir, ws: ws, root: root, meta: *m, iso: st,
		procs:    map[*process]struct{}{},
		isoProcs: map[*isoProcess]struct{}{},
		tunnels:  map[*forwarder]struct{}{},
		done:     make(chan struct{}),
	}
	if !m.Expires.IsZero() && !sb.attached() {
		// Under the lock: an expiry already past fires at once.
		sb.mu.Lock()
		sb.expiry = time.AfterFunc(time.Until(m.Expires), sb.expire)
		sb.mu.Unlock()
	}
	return sb, nil
}

// attached reports whether another process created the sandbox (and keeps
// its expiry).
func (s *Sandbox) attached() bool { return s.iso != nil && s.iso.attached }

// expire terminates the sandbox at its expiry, unless another process
// moved it later (ExtendTimeout records it in the metadata).
func (s *Sandbox) expire() {
	if m, err := readMeta(s.dir); err == nil && time.Until(m.Expires) > 0 {
		s.mu.Lock()
		if !s.terminated {
			s.meta.Expires = m.Expires
			s.expiry = time.AfterFunc(time.Until(m.Expires), s.expire)
		}
		s.mu.Unlock()
		return
	}
	s.Terminate(context.Background())
}

// ID returns the sandbox's identifier.
func (s *Sandbox) ID() string { return s.id }

// Workspace returns the host directory that is /workspace inside an isolated
// sandbox, and "/" in an L0 sandbox's names. It is empty when /workspace is
// a tmpfs inside the sandbox (Spec.Resources.Disk at L2 and L3): the files
// methods reach it, the host's filesystem does not.
func (s *Sandbox) Workspace() string {
	if s.iso != nil && s.iso.limits.Workspace > 0 {
		return ""
	}
	return s.ws
}

// Isolation reports the layers that separate the sandbox from its host.
func (s *Sandbox) Isolation() Isolation {
	if s.iso == nil {
		return Isolation{Level: LevelNone, Cgroup: "none", RootFS: "none", Network: "host"}
	}
	return s.iso.iso
}

// Capabilities reports what the sandbox can do: an isolated sandbox adds
// PTY and the none and allowlist network modes to the baseline's.
func (s *Sandbox) Capabilities() sandbox.Capabilities {
	if s.iso != nil {
		if s.iso.l1 != nil {
			return l1Capabilities
		}
		return isoCapabilities
	}
	return capabilities
}

// l1Capabilities: no network namespace to expose ports from.
var l1Capabilities = sandbox.Capabilities{
	Stdin:         true,
	Signal:        true,
	PTY:           true,
	ExtendTimeout: true,
	NetworkModes:  []sandbox.NetworkMode{sandbox.NetworkNone, sandbox.NetworkAllowlist, sandbox.NetworkOpen},
}

var isoCapabilities = sandbox.Capabilities{
	Stdin:         true,
	Signal:        true,
	PTY:           true,
	Expose:        true,
	CloseTunnel:   true,
	Dial:          true,
	ExtendTimeout: true,
	NetworkModes:  []sandbox.NetworkMode{sandbox.NetworkNone, sandbox.NetworkAllowlist, sandbox.NetworkOpen},
}

var capabilities = sandbox.Capabilities{
	Stdin:         true,
	Signal:        true,
	Expose:        true,
	CloseTunnel:   true,
	Dial:          true,
	ExtendTimeout: true,
	NetworkModes:  []sandbox.NetworkMode{sandbox.NetworkOpen},
}

// Info describes the sandbox.
func (s *Sandbox) Info(ctx context.Context) (sandbox.Info, error) {
	if err := s.live(ctx, "info"); err != nil {
		return sandbox.Info{}, err
	}
	s.mu.Lock()
	m := s.meta
	s.mu.Unlock()
	info := infoOf(s.p.root, &m)
	if s.iso != nil {
		info.Isolation = s.iso.iso.String()
	}
	return info, nil
}

// live returns an error if ctx is done or the sandbox is terminated.
func (s *Sandbox) live(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	dead := s.terminated
	s.mu.Unlock()
	if dead {
		return sandbox.NewError(Name, s.id, op, sandbox.ErrTerminated, nil)
	}
	if s.iso != nil {
		// An isolated sandbox lives with this process: its init tells.
		if !s.iso.alive() {
			return sandbox.NewError(Name, s.id, op, sandbox.ErrTerminated, errors.New("the sandbox's init has exited"))
		}
		return nil
	}
	if _, err := os.Stat(filepath.Join(s.dir, metaFile)); errors.Is(err, fs.ErrNotExist) {
		// Terminated by another process sharing the root.
		return sandbox.NewError(Name, s.id, op, sandbox.ErrTerminated, nil)
	}
	return nil
}

// ExtendTimeout moves the sandbox's expiry d later; a sandbox created without
// a timeout gets one d from now.
func (s *Sandbox) ExtendTimeout(ctx context.Context, d time.Duration) error {
	if err := s.live(ctx, "extend timeout"); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	base := s.meta.Expires
	if cur, err := readMeta(s.dir); err == nil && cur.Expires.After(base) {
		base = cur.Expires // extended by another process
	}
	if base.IsZero() {
		base = time.Now().UTC()
	}
	m := s.meta
	m.Expires = base.Add(d)
	if err := writeMeta(s.dir, &m); err != nil {
		return sandbox.NewError(Name, s.id, "extend timeout", kindOf(err), err)
	}
	s.meta = m
	if s.attached() {
		return nil // the creating process's timer reads the new expiry
	}
	if s.expiry != nil {
		s.expiry.Stop()
	}
	s.expiry = time.AfterFunc(time.Until(m.Expires), s.expire)
	return nil
}

// Terminate kills every process group started through this handle, closes its
// tunnels and removes the sandbox's directory. It is idempotent.
func (s *Sandbox) Terminate(ctx context.Context) error {
	s.mu.Lock()
	if s.terminated {
		s.mu.Unlock()
		return nil
	}
	s.terminated = true
	procs := make([]*process, 0, len(s.procs))
	for pr := range s.procs {
		procs = append(procs, pr)
	}
	isoProcs := make([]*isoProcess, 0, len(s.isoProcs))
	for pr := range s.isoProcs {
		isoProcs = append(isoProcs, pr)
	}
	tunnels := make([]*forwarder, 0, len(s.tunnels))
	for f := range s.tunnels {
		tunnels = append(tunnels, f)
	}
	if s.expiry != nil {
		s.expiry.Stop()
	}
	s.mu.Unlock()
	defer close(s.done)
	// Forgotten once released: until then List and Get in this process
	// see a handle that is ending.
	defer s.p.forget(s.id)

	for _, f := range tunnels {
		f.Close()
	}
	for _, pr := range procs {
		pr.kill()
	}
	for _, pr := range procs {
		<-pr.done
	}
	var isoErr error
	if s.iso != nil {
		isoErr = s.iso.destroy()
		for _, pr := range isoProcs {
			<-pr.done
		}
	}
	s.root.Close()
	if s.attached() {
		if isoErr != nil {
			return sandbox.NewError(Name, s.id, "terminate", sandbox.ErrUnavailable, isoErr)
		}
		return s.endAttached(ctx)
	}
	if s.iso != nil {
		defer s.iso.releaseOwner() // once the directory is gone
	}
	// Remove the metadata first so that a concurrent Get or List stops seeing
	// the sandbox before its files go.
	if err := os.Remove(filepath.Join(s.dir, metaFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return sandbox.NewError(Name, s.id, "terminate", kindOf(err), err)
	}
	if err := removeAll(s.dir); err != nil {
		return sandbox.NewError(Name, s.id, "terminate", kindOf(err), err)
	}
	if isoErr != nil {
		return sandbox.NewError(Name, s.id, "terminate", sandbox.ErrUnavailable, isoErr)
	}
	return nil
}

// removeAll removes dir, first making every directory in it writable, since
// a sandboxed command may have left read-only directories behind.
func removeAll(dir string) error {
	if err := os.RemoveAll(dir); err == nil {
		return nil
	}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}

// resolve checks that ctx is live and the sandbox not terminated, then turns
// a sandbox name into a path relative to s.root.
func (s *Sandbox) resolve(ctx context.Context, op, name string) (string, error) {
	if err := s.live(ctx, op); err != nil {
		return "", err
	}
	return s.rel(op, name)
}

// rel turns a sandbox name (clean, without "..", as the portable layer
// passes it) into a path relative to s.root.
func (s *Sandbox) rel(op, name string) (string, error) {
	abs := name
	if !path.IsAbs(name) {
		s.mu.Lock()
		abs = path.Join(s.meta.Workdir, name)
		s.mu.Unlock()
	}
	// s.root is the workspace (L0, L1) or the sandbox's own root (L2+):
	// either way, the name relative to "/".
	return wsRel(false, abs), nil
}

func (s *Sandbox) fileErr(op string, err error) error {
	return sandbox.NewError(Name, s.id, op, kindOf(err), err)
}

// ReadFile opens the named file in the workspace.
func (s *Sandbox) ReadFile(ctx context.Context, name string) (io.ReadCloser, error) {
	const op = "read file"
	rel, err := s.resolve(ctx, op, name)
	if err != nil {
		return nil, err
	}
	// O_NONBLOCK: a FIFO the sandbox left under the name must not block
	// the host; it is then refused as not a regular file.
	f, err := s.root.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, s.fileErr(op, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, s.fileErr(op, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, sandbox.Errorf(Name, s.id, op, sandbox.ErrInvalidArgument,
			"%s is not a regular file (%v)", name, fi.Mode().Type())
	}
	if isProcFS(f) {
		// Some /proc files check the reader's credentials at each read,
		// not at open: read them whole, as the sandbox.
		defer f.Close()
		b, err := s.readProc(f)
		if err != nil {
			return nil, s.fileErr(op, err)
		}
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	return &ctxReader{ctx: ctx, f: f}, nil
}

// ctxReader stops reading once the ReadFile context is done.
type ctxReader struct {
	ctx context.Context
	f   *os.File
}

func (r *ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.f.Read(p)
}

func (r *ctxReader) Close() error { return r.f.Close() }

// WriteFile writes r to a temporary file beside name and renames it into
// place, so the file appears whole or not at all.
func (s *Sandbox) WriteFile(ctx context.Context, name string, r io.Reader, perm fs.FileMode) error {
	const op = "write file"
	rel, err := s.resolve(ctx, op, name)
	if err != nil {
		return err
	}
	if rel == "." {
		return sandbox.Errorf(Name, s.id, op, sandbox.ErrInvalidArgument, "cannot write to the workspace root")
	}
	if fi, err := s.root.Lstat(rel); err == nil && fi.IsDir() {
		return sandbox.Errorf(Name, s.id, op, sandbox.ErrInvalidArgument, "%s is a directory", name)
	}
	if err := s.refuseMount(op, name, rel, false); err != nil {
		return err
	}
	suffix, err := newID()
	if err != nil {
		return s.fileErr(op, err)
	}
	tmp := path.Join(path.Dir(rel), ".perimeter-write-"+suffix[3:])
	f, err := s.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return s.fileErr(op, err)
	}
	_, err = io.Copy(f, &ctxSource{ctx: ctx, r: r})
	if err == nil {
		err = f.Chmod(perm)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.root.Rename(tmp, rel)
	}
	if err != nil {
		s.root.Remove(tmp)
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		return s.fileErr(op, err)
	}
	return nil
}

// ctxSource stops a copy once ctx is done.
type ctxSource struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxSource) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Stat describes the named file without following a final symbolic link.
func (s *Sandbox) Stat(ctx context.Context, name string) (sandbox.FileInfo, error) {
	const op = "stat"
	rel, err := s.resolve(ctx, op, name)
	if err != nil {
		return sandbox.FileInfo{}, err
	}
	fi, err := s.root.Lstat(rel)
	if err != nil {
		return sandbox.FileInfo{}, s.fileErr(op, err)
	}
	return fileInfo(fi, path.Base("/"+rel)), nil
}

func fileInfo(fi fs.FileInfo, name string) sandbox.FileInfo {
	return sandbox.FileInfo{Name: name, Size: fi.Size(), Mode: fi.Mode(), ModTime: fi.ModTime()}
}

// ReadDir lists the named directory, sorted by name.
func (s *Sandbox) ReadDir(ctx context.Context, name string) ([]sandbox.FileInfo, error) {
	const op = "read dir"
	rel, err := s.resolve(ctx, op, name)
	if err != nil {
		return nil, err
	}
	var out []sandbox.FileInfo
	// Listed and described with the sandbox's credentials, as /proc
	// checks them at each call.
	err = s.root.as(func() error {
		f, err := s.root.r.Open(rel)
		if err != nil {
			return err
		}
		defer f.Close()
		entries, err := f.ReadDir(-1)
		if err != nil {
			return err
		}
		out = make([]sandbox.FileInfo, 0, len(entries))
		for _, e := range entries {
			fi, err := e.Info()
			if err != nil {
				continue // removed meanwhile
			}
			out = append(out, fileInfo(fi, e.Name()))
		}
		return nil
	})
	if err != nil {
		return nil, s.fileErr(op, err)
	}
	slices.SortFunc(out, func(a, b sandbox.FileInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// MkdirAll creates the named directory and its missing parents.
func (s *Sandbox) MkdirAll(ctx context.Context, name string, perm fs.FileMode) error {
	const op = "mkdir"
	rel, err := s.resolve(ctx, op, name)
	if err != nil {
		return err
	}
	// Each directory made gets perm exactly, whatever the umask.
	for i := 0; i <= len(rel); i++ {
		if i < len(rel) && rel[i] != '/' {
			continue
		}
		dir := rel[:i]
		if dir == "" || dir == "." {
			continue
		}
		fi, err := s.root.Stat(dir) // a link to a directory is a directory here
		if err == nil {
			switch {
			case fi.IsDir():
				continue
			case i == len(rel):
				return sandbox.Errorf(Name, s.id, op, sandbox.ErrAlreadyExists, "%s exists and is not a directory", name)
			default:
				return sandbox.Errorf(Name, s.id, op, sandbox.ErrInvalidArgument, "%s is not a directory", "/"+dir)
			}
		}
		if err := s.root.Mkdir(dir, perm); err != nil && !errors.Is(err, fs.ErrExist) {
			return s.fileErr(op, err)
		} else if err == nil {
			if err := s.root.Chmod(dir, perm); err != nil {
				return s.fileErr(op, err)
			}
		}
	}
	return nil
}

// Remove removes the named file or empty directory.
func (s *Sandbox) Remove(ctx context.Context, name string) error {
	const op = "remove"
	rel, err := s.resolve(ctx, op, name)
	if err != nil {
		return err
	}
	if rel == "." {
		return sandbox.Errorf(Name, s.id, op, sandbox.ErrInvalidArgument, "cannot remove the workspace root")
	}
	if err := s.refuseMount(op, name, rel, false); err != nil {
		return err
	}
	if err := s.root.Remove(rel); err != nil {
		return s.fileErr(op, err)
	}
	return nil
}

// RemoveAll removes the named file or directory tree.
func (s *Sandbox) RemoveAll(ctx context.Context, name string) error {
	const op = "remove all"
	rel, err := s.resolve(ctx, op, name)
	if err != nil {
		return err
	}
	if rel == "." {
		return sandbox.Errorf(Name, s.id, op, sandbox.ErrInvalidArgument, "cannot remove the workspace root")
	}
	if err := s.refuseMount(op, name, rel, true); err != nil {
		return err
	}
	if err := s.root.RemoveAll(rel); err != nil {
		return s.fileErr(op, err)
	}
	return nil
}

// Rename moves oldname to newname.
func (s *Sandbox) Rename(ctx context.Context, oldname, newname string) error {
	const op = "rename"
	from, err := s.resolve(ctx, op, oldname)
	if err != nil {
		return err
	}
	to, err := s.rel(op, newname)
	if err != nil {
		return err
	}
	if from == "." || to == "." {
		return sandbox.Errorf(Name, s.id, op, sandbox.ErrInvalidArgument, "cannot rename the workspace root")
	}
	if err := s.refuseMount(op, oldname, from, true); err != nil {
		return err
	}
	if err := s.refuseMount(op, newname, to, false); err != nil {
		return err
	}
	if err := s.root.Rename(from, to); err != nil {
		return s.fileErr(op, err)
	}
	return nil
}

// kindOf maps an operating-system error to an error kind; one of no known
// kind is ErrUnavailable.
func kindOf(err error) error {
	if k := driverutil.KindOf(err); k != nil {
		return k
	}
	return sandbox.ErrUnavailable
}
