package sandbox_test

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"iter"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

// fake is a driver that records what reaches it. Its sandbox "sb-1" holds
// files in a map and runs every command by printing fake.out and fake.errOut
// and exiting 3.
type fake struct {
	caps        sandbox.Capabilities
	out, errOut string
	err         error // returned by every driver call when set

	mu     sync.Mutex
	calls  []string
	specs  []*sandbox.Spec
	cmds   []*sandbox.Cmd
	names  []string
	perms  []fs.FileMode
	closes int
	terms  int
}

func newFake(caps sandbox.Capabilities) *fake { return &fake{caps: caps} }

func newSandbox(t *testing.T, d driver.Provider) *sandbox.Sandbox {
	t.Helper()
	sb, err := sandbox.NewProvider(d, nil).Create(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return sb
}

func (f *fake) record(call string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	return f.err
}

func (f *fake) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func (f *fake) Name() string { return "fake" }

func (f *fake) Create(ctx context.Context, spec *sandbox.Spec) (driver.Sandbox, error) {
	if err := f.record("create"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.specs = append(f.specs, spec)
	f.mu.Unlock()
	return &fakeSandbox{f: f}, nil
}

func (f *fake) Get(ctx context.Context, id string) (driver.Sandbox, error) {
	if err := f.record("get"); err != nil {
		return nil, err
	}
	return &fakeSandbox{f: f}, nil
}

func (f *fake) List(ctx context.Context, opts *sandbox.ListOptions) iter.Seq2[sandbox.Info, error] {
	return func(yield func(sandbox.Info, error) bool) {
		if err := f.record("list"); err != nil {
			yield(sandbox.Info{}, err)
			return
		}
		yield(sandbox.Info{ID: "sb-1"}, nil)
	}
}

func (f *fake) Close() error {
	f.mu.Lock()
	f.closes++
	f.mu.Unlock()
	return nil
}

func (f *fake) As(target any) bool {
	if p, ok := target.(**fake); ok {
		*p = f
		return true
	}
	return false
}

type fakeSandbox struct{ f *fake }

func (s *fakeSandbox) ID() string                         { return "sb-1" }
func (s *fakeSandbox) Capabilities() sandbox.Capabilities { return s.f.caps }
func (s *fakeSandbox) As(any) bool                        { return false }

func (s *fakeSandbox) Info(ctx context.Context) (sandbox.Info, error) {
	return sandbox.Info{ID: "sb-1"}, s.f.record("info")
}

func (s *fakeSandbox) Start(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error) {
	if err := s.f.record("exec"); err != nil {
		return nil, err
	}
	s.f.mu.Lock()
	s.f.cmds = append(s.f.cmds, cmd)
	s.f.mu.Unlock()
	if cmd.Stdout != nil {
		io.WriteString(cmd.Stdout, s.f.out)
	}
	if cmd.Stderr != nil {
		io.WriteString(cmd.Stderr, s.f.errOut)
	}
	return fakeProcess{}, nil
}

func (s *fakeSandbox) name(call, name string) error {
	s.f.mu.Lock()
	s.f.names = append(s.f.names, name)
	s.f.mu.Unlock()
	return s.f.record(call)
}

func (s *fakeSandbox) ReadFile(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := s.name("read file", name); err != nil {
		return nil, err
	}
	return io.NopCloser(strings.NewReader("content")), nil
}

func (s *fakeSandbox) WriteFile(ctx context.Context, name string, r io.Reader, perm fs.FileMode) error {
	s.f.mu.Lock()
	s.f.perms = append(s.f.perms, perm)
	s.f.mu.Unlock()
	if err := s.name("write file", name); err != nil {
		return err
	}
	_, err := io.Copy(io.Discard, r)
	return err
}

func (s *fakeSandbox) Stat(ctx context.Context, name string) (sandbox.FileInfo, error) {
	return sandbox.FileInfo{Name: name}, s.name("stat", name)
}

func (s *fakeSandbox) ReadDir(ctx context.Context, name string) ([]sandbox.FileInfo, error) {
	return nil, s.name("read dir", name)
}

func (s *fakeSandbox) MkdirAll(ctx context.Context, name string, perm fs.FileMode) error {
	s.f.mu.Lock()
	s.f.perms = append(s.f.perms, perm)
	s.f.mu.Unlock()
	return s.name("mkdir", name)
}

func (s *fakeSandbox) Remove(ctx context.Context, name string) error {
	return s.name("remove", name)
}

func (s *fakeSandbox) RemoveAll(ctx context.Context, name string) error {
	return s.name("remove all", name)
}

func (s *fakeSandbox) Rename(ctx context.Context, oldname, newname string) error {
	s.name("rename", oldname)
	return s.name("rename", newname)
}

func (s *fakeSandbox) Expose(ctx context.Context, port int, opts *sandbox.ExposeOptions) (driver.Tunnel, error) {
	if err := s.f.record("expose " + opts.Protocol); err != nil {
		return nil, err
	}
	return fakeTunnel{}, nil
}

func (s *fakeSandbox) Terminate(ctx context.Context) error {
	s.f.mu.Lock()
	s.f.terms++
	s.f.mu.Unlock()
	return s.f.record("terminate")
}

// fakeAbilities is a fakeSandbox with every optional interface.
type fakeAbilities struct{ *fakeSandbox }

func (s fakeAbilities) Pause(ctx context.Context) error  { return s.f.record("pause") }
func (s fakeAbilities) Resume(ctx context.Context) error { return s.f.record("resume") }
func (s fakeAbilities) Snapshot(ctx context.Context) (string, error) {
	return "snap-1", s.f.record("snapshot")
}
func (s fakeAbilities) UpdateNetwork(ctx context.Context, p *sandbox.NetworkPolicy) error {
	return s.f.record("update network " + string(p.Mode))
}
func (s fakeAbilities) ExtendTimeout(ctx context.Context, d time.Duration) error {
	return s.f.record("extend timeout")
}
func (s fakeAbilities) DialContext(ctx context.Context, port int) (net.Conn, error) {
	return nil, errors.Join(s.f.record("dial"), errors.New("fake dial"))
}

// withAbilities makes f's sandboxes implement every optional interface.
type withAbilities struct{ *fake }

func (w withAbilities) Create(ctx context.Context, spec *sandbox.Spec) (driver.Sandbox, error) {
	d, err := w.fake.Create(ctx, spec)
	if err != nil {
		return nil, err
	}
	return fakeAbilities{d.(*fakeSandbox)}, nil
}

type fakeProcess struct{}

func (fakeProcess) Wait(context.Context) (sandbox.ExitStatus, error) {
	return sandbox.ExitStatus{Code: 3}, nil
}
func (fakeProcess) Signal(context.Context, sandbox.Signal) error { return nil }
func (fakeProcess) As(any) bool                                  { return false }

type fakeTunnel struct{}

func (fakeTunnel) URL() string  { return "http://127.0.0.1:1" }
func (fakeTunnel) Close() error { return nil }
func (fakeTunnel) As(any) bool  { return false }
