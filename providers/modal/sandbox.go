package modal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	sdk "github.com/modal-labs/libmodal/modal-go"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

const isolation = "gVisor container on Modal's infrastructure (one sandbox per container, network policy enforced by Modal)"

// capabilities is what every Modal sandbox can do through this adapter.
var capabilities = sandbox.Capabilities{
	Stdin:    true,
	Signal:   true, // delivered by a second exec of kill(1); see the package doc
	Expose:   true, // ports declared in Spec.Ports
	Snapshot: true,
	// Not allowlist: Modal's allowlists take CIDR ranges only, and the
	// contract's take domain names too. CIDR-only allowlists still work.
	NetworkModes: []sandbox.NetworkMode{sandbox.NetworkNone, sandbox.NetworkOpen},
}

// Sandbox is a Modal sandbox. It implements [sandbox.Sandbox] and
// [sandbox.Snapshotter]. All methods are safe for concurrent use.
type Sandbox struct {
	p       *Provider
	sb      *sdk.Sandbox
	id      string
	created time.Time // zero for a sandbox from Get
	expires time.Time
	labels  map[string]string
	specDir string // Spec.Workdir, if given
	egress  string // Info.Isolation's network part

	// opMu is held shared by every operation that uses sb, and exclusively
	// by Terminate: the SDK's Sandbox is not safe against a concurrent
	// Terminate (it clears its task id and detaches).
	opMu       sync.RWMutex
	terminated bool        // under opMu
	ending     atomic.Bool // Terminate was called through this handle

	readyMu sync.Mutex
	isReady bool
	workdir string // the sandbox's working directory, once ready

	tunnelMu sync.Mutex // the SDK caches tunnels without a lock
}

var (
	_ driver.Sandbox     = (*Sandbox)(nil)
	_ driver.Snapshotter = (*Sandbox)(nil)
)

func newSandbox(p *Provider, sb *sdk.Sandbox, spec *sandbox.Spec) *Sandbox {
	s := &Sandbox{p: p, sb: sb, id: sb.SandboxID, egress: "network: as created (Modal does not report it)"}
	if spec != nil {
		s.specDir = spec.Workdir
		s.labels = spec.Labels
		s.egress = egressOf(spec.Network)
	}
	return s
}

// egressOf describes the egress Create gave a sandbox.
func egressOf(n *sandbox.NetworkPolicy) string {
	switch {
	case n == nil || n.Mode == sandbox.NetworkNone:
		return "network: none (blocked)"
	case n.Mode == sandbox.NetworkAllowlist && len(n.Allow) == 0:
		return "network: none (an empty allowlist)"
	case n.Mode == sandbox.NetworkAllowlist:
		return "network: allowlist of CIDR ranges"
	}
	return "network: open"
}

// ID returns Modal's sandbox id ("sb-...").
func (s *Sandbox) ID() string { return s.id }

// Capabilities returns what Modal sandboxes can do through this adapter.
func (s *Sandbox) Capabilities() sandbox.Capabilities {
	c := capabilities
	c.NetworkModes = append([]sandbox.NetworkMode(nil), c.NetworkModes...)
	return c
}

// As sets target to the sandbox's native value: a **sdk.Sandbox
// (github.com/modal-labs/libmodal/modal-go) receives the SDK's sandbox. It
// reports whether target was set. The SDK's sandbox is detached once
// Terminate has been called.
func (s *Sandbox) As(target any) bool {
	switch t := target.(type) {
	case **sdk.Sandbox:
		*t = s.sb
		return true
	}
	return false
}

// begin starts an operation: it takes opMu shared and checks that the
// sandbox was not terminated. The caller must call the returned function.
func (s *Sandbox) begin(ctx context.Context, op string) (func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := s.p.live(op); err != nil {
		return nil, err
	}
	s.opMu.RLock()
	if s.terminated {
		s.opMu.RUnlock()
		return nil, sandbox.NewError(Name, s.id, op, sandbox.ErrTerminated, nil)
	}
	return s.opMu.RUnlock, nil
}

// fail wraps err from op. When the error may come from the sandbox having
// ended elsewhere (timeout, another handle's Terminate), it asks Modal and
// reports ErrTerminated if so.
func (s *Sandbox) fail(ctx context.Context, op string, err error) error {
	err = wrap(ctx, s.id, op, err)
	if errors.Is(err, sandbox.ErrUnavailable) || errors.Is(err, sandbox.ErrNotFound) {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if code, perr := s.sb.Poll(pctx); perr == nil && code != nil {
			return sandbox.NewError(Name, s.id, op, sandbox.ErrTerminated, err)
		}
	}
	return err
}

// retryUnscheduled calls fn until it stops failing because the sandbox has
// no task yet (SDK v0.7.0 fails Exec and Open at once in that case), with
// capped backoff, for as long as ctx allows.
func retryUnscheduled(ctx context.Context, fn func() error) error {
	delay := 50 * time.Millisecond
	for {
		err := fn()
		if err == nil || !strings.Contains(err.Error(), msgNoTask) {
			return err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(delay*2, time.Second)
	}
}

// ready waits until the sandbox has been scheduled and learns its working
// directory, by running "pwd" (retried while there is no task yet). It runs
// once per handle; concurrent callers wait for it, so the SDK's unguarded
// task-id cache is filled before any concurrent use.
func (s *Sandbox) ready(ctx context.Context) error {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	if s.isReady {
		return nil
	}
	out, errOut, code, err := s.run(ctx, []string{"sh", "-c", "pwd"}, nil)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("probing the sandbox with sh -c pwd: exit code %d: %s (the image needs a POSIX sh)", code, bytes.TrimSpace(errOut))
	}
	s.workdir = strings.TrimSuffix(string(out), "\n")
	if s.specDir != "" {
		s.workdir = s.specDir
	}
	if !strings.HasPrefix(s.workdir, "/") {
		return fmt.Errorf("probing the sandbox: unexpected working directory %q", s.workdir)
	}
	s.isReady = true
	return nil
}

// run executes argv with the SDK and returns its output and exit code. It is
// for the adapter's own short helper commands.
func (s *Sandbox) run(ctx context.Context, argv []string, stdin []byte) (stdout, stderr []byte, code int, err error) {
	var cp *sdk.ContainerProcess
	err = retryUnscheduled(ctx, func() error {
		var err error
		cp, err = s.sb.Exec(ctx, argv, nil)
		return err
	})
	if err != nil {
		return nil, nil, 0, err
	}
	var wg sync.WaitGroup
	var outBuf, errBuf bytes.Buffer
	var outErr, errErr error
	wg.Add(2)
	go func() { defer wg.Done(); _, outErr = io.Copy(&outBuf, cp.Stdout) }()
	go func() { defer wg.Done(); _, errErr = io.Copy(&errBuf, cp.Stderr) }()
	if len(stdin) > 0 {
		if _, err := cp.Stdin.Write(stdin); err != nil {
			cp.Stdout.Close()
			cp.Stderr.Close()
			wg.Wait()
			return nil, nil, 0, err
		}
	}
	if err := cp.Stdin.Close(); err != nil {
		cp.Stdout.Close()
		cp.Stderr.Close()
		wg.Wait()
		return nil, nil, 0, err
	}
	code, err = cp.Wait(ctx)
	if err != nil {
		cp.Stdout.Close() // ends the SDK's stream goroutines
		cp.Stderr.Close()
		wg.Wait()
		return nil, nil, 0, err
	}
	wg.Wait()
	cp.Stdout.Close()
	cp.Stderr.Close()
	if outErr != nil {
		return nil, nil, 0, outErr
	}
	if errErr != nil {
		return nil, nil, 0, errErr
	}
	return outBuf.Bytes(), errBuf.Bytes(), code, nil
}

// Info describes the sandbox. Created and Expires are known only for a
// sandbox made by this provider's Create (Modal's SDK does not report them).
func (s *Sandbox) Info(ctx context.Context) (sandbox.Info, error) {
	const op = "info"
	end, err := s.begin(ctx, op)
	if err != nil {
		return sandbox.Info{}, err
	}
	defer end()
	info := sandbox.Info{ID: s.id, Provider: Name, State: sandbox.StateRunning, Created: s.created, Expires: s.expires,
		Isolation: isolation + "; " + s.egress}
	code, err := s.sb.Poll(ctx)
	if err != nil {
		return sandbox.Info{}, wrap(ctx, s.id, op, err)
	}
	if code != nil {
		info.State = sandbox.StateTerminated
	}
	tags, err := s.sb.GetTags(ctx)
	if err != nil {
		return sandbox.Info{}, wrap(ctx, s.id, op, err)
	}
	if len(tags) > 0 {
		info.Labels = tags
	}
	return info, nil
}

// Terminate ends the sandbox and every process in it, and waits until Modal
// reports it finished. It is idempotent. Afterwards the SDK's sandbox (see
// As) is detached.
func (s *Sandbox) Terminate(ctx context.Context) error {
	const op = "terminate"
	if err := ctx.Err(); err != nil {
		return err
	}
	s.opMu.Lock()
	defer s.opMu.Unlock()
	if s.terminated {
		return nil
	}
	if err := s.p.live(op); err != nil {
		return err
	}
	s.ending.Store(true)
	_, err := s.sb.Terminate(ctx, &sdk.SandboxTerminateParams{Wait: true})
	var closed sdk.ClientClosedError
	if errors.As(err, &closed) {
		// Someone detached the SDK's sandbox (through As); terminate
		// through a fresh handle.
		var fresh *sdk.Sandbox
		if fresh, err = s.p.client.Sandboxes.FromID(ctx, s.id); err == nil {
			_, err = fresh.Terminate(ctx, &sdk.SandboxTerminateParams{Wait: true})
		}
	}
	if err != nil {
		s.ending.Store(false)
		return wrap(ctx, s.id, op, err)
	}
	s.terminated = true
	s.p.untrack(s)
	return nil
}

// Snapshot saves the sandbox's filesystem as a Modal image and returns its
// id, for Spec.Snapshot.
func (s *Sandbox) Snapshot(ctx context.Context) (string, error) {
	const op = "snapshot"
	end, err := s.begin(ctx, op)
	if err != nil {
		return "", err
	}
	defer end()
	timeout := 5 * time.Minute
	if d, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(d), time.Second)
	}
	img, err := s.sb.SnapshotFilesystem(ctx, timeout)
	if err != nil {
		return "", s.fail(ctx, op, err)
	}
	return img.ImageID, nil
}

// Expose returns the encrypted tunnel Modal opened for port, which must have
// been declared in Spec.Ports (Modal opens tunnels only at creation). Its URL
// is https://HOST[:PORT]. Protocol "tcp" is an error of kind ErrNotSupported.
func (s *Sandbox) Expose(ctx context.Context, port int, opts *sandbox.ExposeOptions) (driver.Tunnel, error) {
	const op = "expose"
	end, err := s.begin(ctx, op)
	if err != nil {
		return nil, err
	}
	defer end()
	if opts.Protocol != "http" {
		return nil, sandbox.Errorf(Name, s.id, op, sandbox.ErrNotSupported, "Modal's encrypted tunnels carry TLS; plain %s is not exposed", opts.Protocol)
	}
	timeout := 50 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, max(time.Until(d), time.Second))
	}
	s.tunnelMu.Lock()
	tunnels, err := s.sb.Tunnels(ctx, timeout)
	s.tunnelMu.Unlock()
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	t := tunnels[port]
	if t == nil {
		return nil, sandbox.Errorf(Name, s.id, op, sandbox.ErrInvalidArgument,
			"port %d has no tunnel: Modal opens tunnels only for ports declared in Spec.Ports at creation", port)
	}
	return &tunnel{url: t.URL(), native: t}, nil
}

// tunnel is one of Modal's encrypted port tunnels.
type tunnel struct {
	url    string
	native *sdk.Tunnel
}

// URL returns the tunnel's https URL.
func (t *tunnel) URL() string { return t.url }

// Close does nothing and returns nil: Modal keeps a sandbox's tunnels open
// until the sandbox ends, and cannot withdraw one alone.
func (t *tunnel) Close() error { return nil }

// As sets a **sdk.Tunnel target to the SDK's tunnel (for TLSSocket and
// TCPSocket).
func (t *tunnel) As(target any) bool {
	if p, ok := target.(**sdk.Tunnel); ok {
		*p = t.native
		return true
	}
	return false
}
