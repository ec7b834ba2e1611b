package cloudflare

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

// Sandbox is the driver of a bridge sandbox: an ID the bridge maps to a
// container. Host code reaches it from a *sandbox.Sandbox with As.
type Sandbox struct {
	p          *Provider
	id         string
	labels     map[string]string
	created    time.Time
	expires    time.Time
	workdir    string            // absolute, under /workspace
	session    string            // the bridge session with Spec.Env and Spec.Workdir, if any
	sessionEnv map[string]string // Spec.Env, to recreate the session

	mu         sync.Mutex
	terminated bool
	timer      *time.Timer
}

var _ driver.Sandbox = (*Sandbox)(nil)

// As sets a **Sandbox target to the driver's sandbox (for Session and
// Client) and a **Client target to the bridge client.
func (s *Sandbox) As(target any) bool {
	switch t := target.(type) {
	case **Sandbox:
		*t = s
	case **Client:
		*t = s.p.c
	default:
		return false
	}
	return true
}

// ID returns the sandbox's bridge ID.
func (s *Sandbox) ID() string { return s.id }

// Client returns the bridge client, for routes the adapter does not cover.
func (s *Sandbox) Client() *Client { return s.p.c }

// Session returns the bridge session holding Spec.Env and Spec.Workdir, or
// "" when the sandbox has none.
func (s *Sandbox) Session() string { return s.session }

// Capabilities: see the package documentation.
func (s *Sandbox) Capabilities() sandbox.Capabilities {
	return sandbox.Capabilities{
		Signal:     true,
		PTY:        true,
		Expose:     true,
		TextOutput: true,
		// Open only: egress is the Worker's, the same for every sandbox.
		NetworkModes: []sandbox.NetworkMode{sandbox.NetworkOpen},
	}
}

func (s *Sandbox) checkLive(op string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.terminated {
		return sandbox.NewError(providerName, s.id, op, sandbox.ErrTerminated, nil)
	}
	return nil
}

func (s *Sandbox) info(state sandbox.State) sandbox.Info {
	return sandbox.Info{
		ID: s.id, Provider: providerName, State: state, Labels: maps.Clone(s.labels),
		Created: s.created, Expires: s.expires, Isolation: isolation,
	}
}

// Info asks the bridge whether the container runs (GET …/running, which
// starts it if it sleeps). Created and Labels are known only to the
// Provider that created the sandbox.
func (s *Sandbox) Info(ctx context.Context) (sandbox.Info, error) {
	if err := s.checkLive("info"); err != nil {
		return sandbox.Info{}, err
	}
	running, err := s.p.c.Running(ctx, s.id)
	if err != nil {
		return sandbox.Info{}, wrap(s.id, "info", err)
	}
	state := sandbox.StateRunning
	if !running {
		state = sandbox.StateStopped
	}
	return s.info(state), nil
}

// Terminate destroys the sandbox's container (DELETE …), which kills what
// runs and drops its files. Terminating again returns nil.
func (s *Sandbox) Terminate(ctx context.Context) error {
	s.mu.Lock()
	if s.terminated {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	if err := s.p.c.DeleteSandbox(ctx, s.id); err != nil {
		return wrap(s.id, "terminate", err)
	}
	s.mu.Lock()
	s.terminated = true
	s.mu.Unlock()
	s.stopTimer()
	s.p.forget(s)
	return nil
}

// destroy is Terminate for a sandbox whose creation failed.
func (s *Sandbox) destroy(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	s.p.c.DeleteSandbox(ctx, s.id)
}

func (s *Sandbox) stopTimer() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timer != nil {
		s.timer.Stop()
	}
}

// shellResult is a command the adapter ran for itself.
type shellResult struct {
	code           int
	stdout, stderr bytes.Buffer
}

// sh runs script with sh -c and args, statelessly (no session) in
// /workspace, and returns its output and exit code.
func (s *Sandbox) sh(ctx context.Context, script string, args ...string) (*shellResult, error) {
	r := &shellResult{}
	argv := append([]string{"sh", "-c", script, "perimeter"}, args...)
	code, err := s.p.c.Exec(ctx, s.id, argv, &ExecOptions{Cwd: Workspace}, &r.stdout, &r.stderr)
	r.code = code
	return r, err
}

// shell runs script and turns a failure into an error for op.
func (s *Sandbox) shell(ctx context.Context, op, script string, args ...string) error {
	r, err := s.sh(ctx, script, args...)
	if err != nil {
		return wrap(s.id, op, err)
	}
	if r.code != 0 {
		return shellError(s.id, op, r)
	}
	return nil
}

// shellError reads a failed command's exit code and stderr: the scripts
// exit 3 for a missing name and 4 for a name of the wrong type; other
// failures are classified by the message.
func shellError(id, op string, r *shellResult) error {
	msg := strings.TrimSpace(r.stderr.String())
	kind := sandbox.ErrInvalidArgument
	switch {
	case r.code == 3 || strings.Contains(msg, "No such file"):
		kind = sandbox.ErrNotFound
		if msg == "" {
			msg = "no such file or directory"
		}
	case strings.Contains(msg, "Permission denied") || strings.Contains(msg, "Operation not permitted"):
		kind = sandbox.ErrPermissionDenied
	case strings.Contains(msg, "No space left"):
		kind = sandbox.ErrResourceExhausted
	}
	if msg == "" {
		msg = fmt.Sprintf("exit status %d", r.code)
	}
	return sandbox.NewError(providerName, id, op, kind, errors.New(msg))
}

// ---- Expose ---------------------------------------------------------------

// Expose creates (or reuses) the bridge's tunnel to port (POST
// …/tunnel/PORT): an ephemeral https://….trycloudflare.com quick tunnel.
// The bridge tunnels HTTP to ports 1024–65535; other ports and the "tcp"
// protocol are ErrNotSupported. Tunnel.Close deletes the tunnel.
func (s *Sandbox) Expose(ctx context.Context, port int, opts *sandbox.ExposeOptions) (driver.Tunnel, error) {
	if opts.Protocol != "http" {
		return nil, sandbox.Errorf(providerName, s.id, "expose", sandbox.ErrNotSupported,
			"protocol %q: bridge tunnels serve HTTP(S) only", opts.Protocol)
	}
	return s.exposeNamed(ctx, port, "")
}

// ExposeNamed is [sandbox.Sandbox.Expose] (protocol "http") with a named
// tunnel on sb, a Cloudflare sandbox (ErrInvalidArgument otherwise): name is
// a subdomain prefix (such as "app") in the zone the Worker's
// CLOUDFLARE_ZONE_ID names; the Worker needs CLOUDFLARE_API_TOKEN. An empty
// name is an ephemeral tunnel. Port 1–65535 is checked as Expose checks it.
// The tunnel is the driver's: close it with its Close; it is not withdrawn
// when sb's provider closes.
func ExposeNamed(ctx context.Context, sb *sandbox.Sandbox, port int, name string) (driver.Tunnel, error) {
	var s *Sandbox
	if !sb.As(&s) {
		return nil, sandbox.Errorf(providerName, sb.ID(), "expose", sandbox.ErrInvalidArgument, "ExposeNamed: %s is not a Cloudflare sandbox", sb.ID())
	}
	if port < 1 || port > 65535 {
		return nil, sandbox.Errorf(providerName, s.id, "expose", sandbox.ErrInvalidArgument, "%d is not a TCP port", port)
	}
	return s.exposeNamed(ctx, port, name)
}

func (s *Sandbox) exposeNamed(ctx context.Context, port int, name string) (driver.Tunnel, error) {
	const op = "expose"
	if err := s.checkLive(op); err != nil {
		return nil, err
	}
	if port < MinTunnelPort {
		return nil, sandbox.Errorf(providerName, s.id, op, sandbox.ErrNotSupported,
			"port %d: bridge tunnels reach ports %d–%d only", port, MinTunnelPort, MaxTunnelPort)
	}
	t, err := s.p.c.CreateTunnel(ctx, s.id, port, name)
	if err != nil {
		return nil, wrap(s.id, op, err)
	}
	if t.URL == "" {
		return nil, sandbox.Errorf(providerName, s.id, op, sandbox.ErrUnavailable, "the bridge returned no URL for the tunnel to port %d", port)
	}
	return &tunnel{s: s, info: *t}, nil
}

type tunnel struct {
	s    *Sandbox
	info TunnelInfo
	once sync.Once
	err  error
}

func (t *tunnel) URL() string { return t.info.URL }

// As sets a *TunnelInfo target to the bridge's description of the tunnel.
func (t *tunnel) As(target any) bool {
	if ti, ok := target.(*TunnelInfo); ok {
		*ti = t.info
		return true
	}
	return false
}

// Close deletes the tunnel (DELETE …/tunnel/PORT). Closing again, or after
// the sandbox is terminated, returns nil.
func (t *tunnel) Close() error {
	t.once.Do(func() {
		if t.s.checkLive("close tunnel") != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		t.err = wrap(t.s.id, "close tunnel", t.s.p.c.DeleteTunnel(ctx, t.s.id, t.info.Port))
	})
	return t.err
}

// ---- persist and hydrate ---------------------------------------------------

// Persist writes an uncompressed tar of sb's /workspace (entries "./…") to
// w, leaving out excludes (paths relative to /workspace, without ".."). It
// is the bridge's only way to keep files beyond the container's life: a
// container that sleeps loses its disk. sb must be a sandbox of this
// package; otherwise the error is ErrNotSupported.
func Persist(ctx context.Context, sb *sandbox.Sandbox, w io.Writer, excludes ...string) error {
	var s *Sandbox
	if !sb.As(&s) {
		return sandbox.Errorf(providerName, sb.ID(), "persist", sandbox.ErrNotSupported, "%s is not a Cloudflare sandbox", sb.ID())
	}
	for _, e := range excludes {
		if e == "" || strings.Contains(e, "..") || strings.Contains(e, ",") {
			return sandbox.Errorf(providerName, s.id, "persist", sandbox.ErrInvalidArgument,
				"exclude %q: want a path relative to /workspace, without \"..\" or \",\"", e)
		}
	}
	if err := s.checkLive("persist"); err != nil {
		return err
	}
	rc, err := s.p.c.Persist(ctx, s.id, excludes)
	if err != nil {
		return wrap(s.id, "persist", err)
	}
	defer rc.Close()
	if _, err := io.Copy(w, rc); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return sandbox.NewError(providerName, s.id, "persist", sandbox.ErrUnavailable, err)
	}
	return nil
}

// Hydrate extracts the tar read from r into sb's /workspace, such as one
// Persist wrote, possibly from another sandbox. The bridge takes 1 byte to
// 32 MiB; r is read whole into a temporary file first, so a larger archive
// is refused (ErrResourceExhausted) and a failing r sends nothing.
func Hydrate(ctx context.Context, sb *sandbox.Sandbox, r io.Reader) error {
	var s *Sandbox
	if !sb.As(&s) {
		return sandbox.Errorf(providerName, sb.ID(), "hydrate", sandbox.ErrNotSupported, "%s is not a Cloudflare sandbox", sb.ID())
	}
	if err := s.checkLive("hydrate"); err != nil {
		return err
	}
	f, size, err := spool(r, MaxFileSize)
	if err != nil {
		return wrap(s.id, "hydrate", err)
	}
	defer f.Close()
	return wrap(s.id, "hydrate", s.p.c.Hydrate(ctx, s.id, f, size))
}

// spool copies r into an unlinked temporary file and rewinds it. With
// limit > 0, more than limit bytes is an error wrapping ErrTooLarge.
func spool(r io.Reader, limit int64) (*os.File, int64, error) {
	f, err := os.CreateTemp("", "perimeter-cloudflare-*")
	if err != nil {
		return nil, 0, err
	}
	os.Remove(f.Name())
	src := r
	if limit > 0 {
		src = io.LimitReader(r, limit+1)
	}
	n, err := io.Copy(f, src)
	if err == nil && limit > 0 && n > limit {
		err = fmt.Errorf("more than %d bytes: %w", limit, ErrTooLarge)
	}
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, n, nil
}
