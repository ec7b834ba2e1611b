package sandbox_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

func TestCreateAppliesDefaultsWithoutTouchingTheCallersSpec(t *testing.T) {
	ctx := context.Background()
	f := newFake(sandbox.Capabilities{})
	p := sandbox.NewProvider(f, nil)
	_, err := p.Create(ctx, nil)
	require.NoError(t, err)
	spec := &sandbox.Spec{Network: &sandbox.NetworkPolicy{}}
	_, err = p.Create(ctx, spec)
	require.NoError(t, err)
	require.Len(t, f.specs, 2)
	for _, s := range f.specs {
		require.NotNil(t, s.Network, "the driver never sees a nil Network")
		assert.Equal(t, sandbox.NetworkNone, s.Network.Mode, "nil Network and an empty mode mean none")
	}
	assert.Equal(t, sandbox.NetworkMode(""), spec.Network.Mode, "the caller's spec is unchanged")
}

func TestBadSpecsNeverReachTheDriver(t *testing.T) {
	for name, spec := range map[string]*sandbox.Spec{
		"negative memory":   {Resources: sandbox.Resources{Memory: -1}},
		"negative cpu":      {Resources: sandbox.Resources{CPU: -0.5}},
		"negative timeout":  {Timeout: -time.Second},
		"port 0":            {Ports: []int{0}},
		"port 65536":        {Ports: []int{65536}},
		"env key with =":    {Env: map[string]string{"A=B": "x"}},
		"empty env key":     {Env: map[string]string{"": "x"}},
		"unknown mode":      {Network: &sandbox.NetworkPolicy{Mode: "host"}},
		"allow under open":  {Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen, Allow: []string{"example.com"}}},
		"empty allow entry": {Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkAllowlist, Allow: []string{" "}}},
		"workdir with ..":   {Workdir: "/a/../b"},
		"empty label key":   {Labels: map[string]string{"": "x"}},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFake(sandbox.Capabilities{})
			_, err := sandbox.NewProvider(f, nil).Create(context.Background(), spec)
			assert.ErrorIs(t, err, sandbox.ErrInvalidArgument)
			assert.ErrorContains(t, err, "fake: create: invalid argument")
			assert.Zero(t, f.callCount(), "the driver was called")
		})
	}
	f := newFake(sandbox.Capabilities{})
	_, err := sandbox.NewProvider(f, nil).Create(context.Background(), &sandbox.Spec{Env: map[string]string{"A": "b=c"}})
	assert.NoError(t, err, "a value may contain '='")
}

func TestBadArgumentsNeverReachTheDriver(t *testing.T) {
	ctx := context.Background()
	f := newFake(sandbox.Capabilities{Stdin: true, PTY: true, Expose: true, Signal: true})
	sb := newSandbox(t, f)
	before := f.callCount()
	for name, call := range map[string]func() error{
		"empty name":      func() error { _, err := sb.ReadFile(ctx, ""); return err },
		"dot-dot name":    func() error { _, err := sb.Stat(ctx, "a/../../etc"); return err },
		"NUL name":        func() error { return sb.Remove(ctx, "a\x00b") },
		"dot-dot rename":  func() error { return sb.Rename(ctx, "a", "../b") },
		"perm bits":       func() error { return sb.WriteFile(ctx, "a", strings.NewReader(""), fs.ModeDir|0o755) },
		"mkdir perm bits": func() error { return sb.MkdirAll(ctx, "d", 0o10000) },
		"nil reader":      func() error { return sb.WriteFile(ctx, "a", nil, 0) },
		"empty argv":      func() error { _, err := sb.Start(ctx, &sandbox.Cmd{}); return err },
		"nil cmd":         func() error { _, err := sb.Start(ctx, nil); return err },
		"empty program":   func() error { _, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{""}}); return err },
		"NUL in argv":     func() error { _, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"a", "b\x00"}}); return err },
		"env key with =": func() error {
			_, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"a"}, Env: map[string]string{"K=": "v"}})
			return err
		},
		"NUL in env value": func() error {
			_, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"a"}, Env: map[string]string{"K": "\x00"}})
			return err
		},
		"negative timeout": func() error { _, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"a"}, Timeout: -1}); return err },
		"zero TTY size": func() error {
			_, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"a"}, TTY: &sandbox.TTY{}})
			return err
		},
		"dot-dot Dir":  func() error { _, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"a"}, Dir: ".."}); return err },
		"port 0":       func() error { _, err := sb.Expose(ctx, 0, nil); return err },
		"port 65536":   func() error { _, err := sb.Expose(ctx, 65536, nil); return err },
		"protocol udp": func() error { _, err := sb.Expose(ctx, 80, &sandbox.ExposeOptions{Protocol: "udp"}); return err },
		"empty id":     func() error { _, err := sb.Provider().Get(ctx, ""); return err },
	} {
		err := call()
		assert.ErrorIs(t, err, sandbox.ErrInvalidArgument, name)
		var se *sandbox.Error
		if assert.ErrorAs(t, err, &se, name) {
			assert.Equal(t, "fake", se.Provider, name)
		}
	}
	assert.Equal(t, before, f.callCount(), "the driver was called: %v", f.calls[before:])
}

func TestNamesAndDefaultsReachTheDriverClean(t *testing.T) {
	ctx := context.Background()
	f := newFake(sandbox.Capabilities{PTY: true, Expose: true})
	sb := newSandbox(t, f)
	_, err := sb.Stat(ctx, "a//./b/")
	require.NoError(t, err)
	_, err = sb.Stat(ctx, "/abs/./x")
	require.NoError(t, err)
	assert.Equal(t, []string{"a/b", "/abs/x"}, f.names, "relative names stay relative, clean")

	require.NoError(t, sb.WriteFile(ctx, "f", strings.NewReader("x"), 0))
	require.NoError(t, sb.MkdirAll(ctx, "d", 0))
	require.NoError(t, sb.WriteFile(ctx, "s", strings.NewReader("x"), 0o4755))
	require.NoError(t, sb.MkdirAll(ctx, "t", fs.ModeSticky|0o777))
	assert.Equal(t, []fs.FileMode{0o644, 0o755, fs.ModeSetuid | 0o755, fs.ModeSticky | 0o777}, f.perms)

	p, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"sh"}, TTY: &sandbox.TTY{Rows: 1, Cols: 1}})
	require.NoError(t, err)
	assert.Equal(t, "xterm-256color", f.cmds[0].TTY.Term)
	_, err = p.Wait(ctx)
	require.NoError(t, err)

	tun, err := sb.Expose(ctx, 8080, nil)
	require.NoError(t, err)
	assert.Equal(t, "http://127.0.0.1:1", tun.URL())
	require.NoError(t, tun.Close())
	require.NoError(t, tun.Close(), "Close is idempotent")
	assert.Contains(t, f.calls, "expose http", "a nil ExposeOptions is http")
}

func TestAbilitiesAreGatedByCapabilities(t *testing.T) {
	ctx := context.Background()
	calls := func(sb *sandbox.Sandbox, p *sandbox.Process) map[string]error {
		_, snapErr := sb.Snapshot(ctx)
		_, dialErr := sb.Dial(ctx, 80)
		_, ttyErr := sb.Start(ctx, &sandbox.Cmd{Args: []string{"a"}, TTY: &sandbox.TTY{Rows: 1, Cols: 1}})
		_, stdinErr := sb.Start(ctx, &sandbox.Cmd{Args: []string{"a"}, Stdin: strings.NewReader("x")})
		_, exposeErr := sb.Expose(ctx, 80, nil)
		return map[string]error{
			"pause":          sb.Pause(ctx),
			"resume":         sb.Resume(ctx),
			"snapshot":       snapErr,
			"update network": sb.UpdateNetwork(ctx, nil),
			"extend timeout": sb.ExtendTimeout(ctx, time.Minute),
			"dial":           dialErr,
			"tty":            ttyErr,
			"stdin":          stdinErr,
			"expose":         exposeErr,
			"signal":         p.Signal(ctx, sandbox.SIGTERM),
			"resize":         p.Resize(ctx, 1, 1),
		}
	}

	t.Run("undeclared", func(t *testing.T) {
		// The sandbox implements every optional interface but declares none:
		// the layer must not call any of them.
		f := newFake(sandbox.Capabilities{})
		sb := newSandbox(t, withAbilities{f})
		p, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"a"}})
		require.NoError(t, err)
		before := f.callCount()
		for name, err := range calls(sb, p) {
			assert.ErrorIs(t, err, sandbox.ErrNotSupported, name)
			assert.NotContains(t, err.Error(), "provider bug", name)
		}
		assert.Equal(t, before, f.callCount(), "the driver was called: %v", f.calls[before:])
	})

	t.Run("declared but not implemented", func(t *testing.T) {
		f := newFake(sandbox.Capabilities{Pause: true, Snapshot: true, UpdateNetwork: true, ExtendTimeout: true,
			Dial: true, NetworkModes: []sandbox.NetworkMode{sandbox.NetworkNone}})
		sb := newSandbox(t, f)
		for _, err := range []error{sb.Pause(ctx), sb.UpdateNetwork(ctx, nil), sb.ExtendTimeout(ctx, time.Second)} {
			assert.ErrorIs(t, err, sandbox.ErrNotSupported)
			assert.ErrorContains(t, err, "provider bug")
		}
		_, err := sb.Dial(ctx, 1)
		assert.ErrorContains(t, err, "provider bug")
	})

	t.Run("declared and implemented", func(t *testing.T) {
		f := newFake(sandbox.Capabilities{Pause: true, Snapshot: true, UpdateNetwork: true, ExtendTimeout: true,
			NetworkModes: []sandbox.NetworkMode{sandbox.NetworkNone}})
		sb := newSandbox(t, withAbilities{f})
		require.NoError(t, sb.Pause(ctx))
		require.NoError(t, sb.Resume(ctx))
		id, err := sb.Snapshot(ctx)
		require.NoError(t, err)
		assert.Equal(t, "snap-1", id)
		require.NoError(t, sb.UpdateNetwork(ctx, &sandbox.NetworkPolicy{}))
		assert.Contains(t, f.calls, "update network none")
		err = sb.UpdateNetwork(ctx, &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen})
		assert.ErrorIs(t, err, sandbox.ErrNotSupported, "a mode outside NetworkModes")
		require.NoError(t, sb.ExtendTimeout(ctx, time.Second))
		assert.ErrorIs(t, sb.ExtendTimeout(ctx, 0), sandbox.ErrInvalidArgument)
	})
}

func TestClosedProviderRefusesEverything(t *testing.T) {
	ctx := context.Background()
	f := newFake(sandbox.Capabilities{Signal: true, PTY: true})
	p := sandbox.NewProvider(f, nil)
	sb, err := p.Create(ctx, nil)
	require.NoError(t, err)
	proc, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"a"}})
	require.NoError(t, err)
	require.NoError(t, p.Close())
	require.NoError(t, p.Close(), "Close is idempotent")
	assert.Equal(t, 1, f.closes)
	before := f.callCount()

	_, createErr := p.Create(ctx, nil)
	_, getErr := p.Get(ctx, "sb-1")
	var listErr error
	for _, err := range p.List(ctx, nil) {
		listErr = err
	}
	_, infoErr := sb.Info(ctx)
	_, startErr := sb.Start(ctx, &sandbox.Cmd{Args: []string{"a"}})
	_, readErr := sb.ReadFile(ctx, "x")
	_, waitErr := proc.Wait(ctx)
	for name, err := range map[string]error{
		"create": createErr, "get": getErr, "list": listErr, "info": infoErr, "start": startErr,
		"read file": readErr, "write file": sb.WriteFile(ctx, "x", strings.NewReader(""), 0),
		"mkdir": sb.MkdirAll(ctx, "d", 0), "terminate": sb.Terminate(ctx), "pause": sb.Pause(ctx),
		"wait": waitErr, "signal": proc.Signal(ctx, sandbox.SIGTERM),
	} {
		assert.ErrorIs(t, err, sandbox.ErrClosed, name)
	}
	assert.Equal(t, before, f.callCount(), "the driver was called after Close: %v", f.calls[before:])
	assert.Zero(t, f.terms, "Close terminates nothing")
}

func TestTerminatedHandleRefusesEverythingButTerminate(t *testing.T) {
	ctx := context.Background()
	f := newFake(sandbox.Capabilities{Signal: true})
	sb := newSandbox(t, f)
	proc, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"a"}})
	require.NoError(t, err)
	require.NoError(t, sb.Terminate(ctx))
	require.NoError(t, sb.Terminate(ctx))
	assert.Equal(t, 1, f.terms, "the driver terminates once")
	before := f.callCount()
	_, err = sb.Start(ctx, &sandbox.Cmd{Args: []string{"a"}})
	assert.ErrorIs(t, err, sandbox.ErrTerminated)
	_, err = sb.Stat(ctx, "x")
	assert.ErrorIs(t, err, sandbox.ErrTerminated)
	assert.ErrorIs(t, sb.Rename(ctx, "a", "b"), sandbox.ErrTerminated)
	assert.ErrorIs(t, proc.Signal(ctx, sandbox.SIGTERM), sandbox.ErrTerminated)
	assert.Equal(t, "sb-1", sb.ID())
	assert.Equal(t, before, f.callCount())
}

func TestDriverErrorsAreDecorated(t *testing.T) {
	ctx := context.Background()
	f := newFake(sandbox.Capabilities{})
	sb := newSandbox(t, f)

	native := errors.New("boom")
	f.err = native
	_, err := sb.Stat(ctx, "x")
	assert.ErrorIs(t, err, sandbox.ErrUnavailable, "an error without a kind gets one")
	assert.ErrorIs(t, err, native)
	assert.EqualError(t, err, "fake: sandbox sb-1: stat: unavailable: boom")

	f.err = sandbox.NewError("fake", "", "", sandbox.ErrNotFound, native)
	err = sb.Remove(ctx, "x")
	assert.ErrorIs(t, err, sandbox.ErrNotFound, "a driver's kind is kept")
	assert.EqualError(t, err, "fake: sandbox sb-1: remove: not found: boom", "blank fields are filled")

	for _, e := range []error{context.Canceled, context.DeadlineExceeded, io.EOF} {
		f.err = e
		assert.Equal(t, e, sb.RemoveAll(ctx, "x"), "context errors and io.EOF pass through")
	}
}

func TestAsReachesTheDriver(t *testing.T) {
	f := newFake(sandbox.Capabilities{})
	p := sandbox.NewProvider(f, nil)
	var got *fake
	require.True(t, p.As(&got))
	assert.Same(t, f, got)
	var s string
	assert.False(t, p.As(&s))
	assert.False(t, p.As(nil))
}

// recorder is a Hooks that keeps every outcome.
type recorder struct {
	mu  sync.Mutex
	ops []sandbox.Op
	out []sandbox.Outcome
}

func (r *recorder) Begin(ctx context.Context, op sandbox.Op) (context.Context, func(sandbox.Outcome)) {
	return ctx, func(o sandbox.Outcome) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.ops = append(r.ops, op)
		r.out = append(r.out, o)
	}
}

func TestHooksSeeEveryOperation(t *testing.T) {
	ctx := context.Background()
	f := newFake(sandbox.Capabilities{})
	f.out = "hello"
	rec := &recorder{}
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p := sandbox.NewProvider(f, &sandbox.ProviderOptions{Hooks: rec, Logger: logger})
	sb, err := p.Create(ctx, nil)
	require.NoError(t, err)
	var out strings.Builder
	proc, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"echo", "SECRET-ARG"}, Stdout: &out})
	require.NoError(t, err)
	_, err = proc.Wait(ctx)
	require.NoError(t, err)
	_, err = proc.Wait(ctx)
	require.NoError(t, err)
	require.NoError(t, sb.WriteFile(ctx, "f", strings.NewReader("12345"), 0))
	rc, err := sb.ReadFile(ctx, "f")
	require.NoError(t, err)
	io.Copy(io.Discard, rc)
	require.NoError(t, rc.Close())
	_, err = sb.Stat(ctx, "../x")
	require.Error(t, err)
	require.NoError(t, sb.Terminate(ctx))

	var names []string
	for i, op := range rec.ops {
		names = append(names, op.Name)
		assert.Equal(t, "fake", op.Provider)
		switch op.Name {
		case "exec":
			require.NotNil(t, rec.out[i].Status, "exec reports its status once")
			assert.Equal(t, 3, rec.out[i].Status.Code)
			assert.Positive(t, rec.out[i].FirstByte)
		case "write file", "read file":
			assert.EqualValues(t, map[string]int64{"write file": 5, "read file": 7}[op.Name], rec.out[i].Bytes, op.Name)
		}
	}
	assert.Equal(t, []string{"create", "exec", "write file", "read file", "terminate"}, names,
		"refused calls are not operations the provider saw")
	assert.Contains(t, logs.String(), `msg="sandbox exec"`)
	assert.Contains(t, logs.String(), "status=\"exit status 3\"")
	assert.NotContains(t, logs.String(), "SECRET-ARG", "command lines are never logged")
}
