package modal

import (
	"context"
	"errors"
	"iter"
	"log/slog"
	"net/url"
	"sync"
	"time"

	sdk "github.com/modal-labs/libmodal/modal-go"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

// Name is the provider's name in errors and in Info.Provider, and its URL
// scheme.
const Name = "modal"

// DefaultImage is the image a sandbox starts from when neither Spec.Image nor
// Options.DefaultImage names one.
const DefaultImage = "debian:bookworm-slim"

func init() {
	sandbox.Register(Name, openURL)
}

// Options configures [New]. Nil means defaults, except App, which is required.
type Options struct {
	// App is the Modal App the sandboxes belong to; it is created if missing.
	App string
	// Environment is the Modal environment; empty means MODAL_ENVIRONMENT or
	// the profile's.
	Environment string
	// TokenID and TokenSecret override MODAL_TOKEN_ID and MODAL_TOKEN_SECRET
	// (and ~/.modal.toml). Most hosts leave them empty.
	TokenID, TokenSecret string
	// DefaultImage is the registry image for a Spec without Image; empty
	// means [DefaultImage]. The image needs a POSIX sh (see the package doc).
	DefaultImage string
	// Secrets names Modal Secrets whose variables every sandbox gets.
	Secrets []string
	// Configure, if set, is called with each Spec and the SDK parameters built
	// from it, just before the sandbox is created, to set what the contract
	// has no field for (Volumes, Regions, IdleTimeout, Name, ...).
	Configure func(spec *sandbox.Spec, params *sdk.SandboxCreateParams) error
	// Logger receives the SDK's log; nil means the SDK's default.
	Logger *slog.Logger
	// Client, if set, is used instead of a client of New's own; Close does not
	// close it.
	Client *sdk.Client
	// ScheduleTimeout bounds how long Create waits for Modal to schedule a new
	// sandbox before it can run commands; zero means 5 minutes. ctx still
	// bounds it too.
	ScheduleTimeout time.Duration
}

// Provider creates Modal sandboxes in one App. It is safe for concurrent use.
type Provider struct {
	client    *sdk.Client
	ownClient bool
	app       *sdk.App
	opts      Options

	// life ends at Close; it bounds what outlives a call, such as a started
	// command's wait.
	life context.Context
	stop context.CancelFunc

	mu      sync.Mutex
	closed  bool
	handles map[*Sandbox]struct{} // handed out and not terminated
}

var _ driver.Provider = (*Provider)(nil)

// New connects to Modal and finds or creates opts.App. Connecting makes a
// blocking call the SDK cannot cancel; New runs it under ctx and returns
// ctx's error if ctx ends first (the connection is then closed when it
// completes).
//
// New returns the portable provider host code uses; [NewDriver] returns the
// driver, for [sandbox.NewProvider] with [sandbox.ProviderOptions].
func New(ctx context.Context, opts *Options) (*sandbox.Provider, error) {
	d, err := NewDriver(ctx, opts)
	if err != nil {
		return nil, err
	}
	return sandbox.NewProvider(d, nil), nil
}

// NewDriver is [New] returning the provider's driver. Host code calls the
// portable type's methods, never the driver's: the portable layer validates
// arguments and applies defaults before the driver sees them.
func NewDriver(ctx context.Context, opts *Options) (*Provider, error) {
	if opts == nil || opts.App == "" {
		return nil, sandbox.Errorf(Name, "", "open", sandbox.ErrInvalidArgument, "Options.App (the Modal App name) is required")
	}
	o := *opts
	if o.DefaultImage == "" {
		o.DefaultImage = DefaultImage
	}
	if o.ScheduleTimeout <= 0 {
		o.ScheduleTimeout = 5 * time.Minute
	}
	p := &Provider{client: o.Client, opts: o}
	p.life, p.stop = context.WithCancel(context.Background())
	if p.client == nil {
		c, err := newClient(ctx, &sdk.ClientParams{
			TokenID: o.TokenID, TokenSecret: o.TokenSecret,
			Environment: o.Environment, Logger: o.Logger,
		})
		if err != nil {
			return nil, err
		}
		p.client, p.ownClient = c, true
	}
	app, err := p.client.Apps.FromName(ctx, o.App, &sdk.AppFromNameParams{Environment: o.Environment, CreateIfMissing: true})
	if err != nil {
		p.Close()
		return nil, wrap(ctx, "", "open", err)
	}
	p.app = app
	return p, nil
}

// newClient runs the SDK's blocking client construction (v0.7.0 fetches an
// auth token with a background context before returning) under ctx. The
// goroutine ends when the construction does; a client that arrives after ctx
// ended is closed.
func newClient(ctx context.Context, params *sdk.ClientParams) (*sdk.Client, error) {
	type result struct {
		c   *sdk.Client
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := sdk.NewClientWithOptions(params)
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, wrap(ctx, "", "open", r.err)
		}
		return r.c, nil
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.c != nil {
				r.c.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// openURL opens "modal://APP_NAME[?environment=ENV&image=IMAGE]".
func openURL(ctx context.Context, u *url.URL) (driver.Provider, error) {
	if u.User != nil {
		return nil, sandbox.Errorf(Name, "", "open", sandbox.ErrInvalidArgument, "credentials do not go in the URL; set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET")
	}
	if u.Host == "" || (u.Path != "" && u.Path != "/") || u.Opaque != "" {
		return nil, sandbox.Errorf(Name, "", "open", sandbox.ErrInvalidArgument,
			"URL %q: want modal://APP_NAME", u.Redacted())
	}
	o := &Options{App: u.Host}
	for k, v := range u.Query() {
		switch k {
		case "environment":
			o.Environment = v[0]
		case "image":
			o.DefaultImage = v[0]
		default:
			return nil, sandbox.Errorf(Name, "", "open", sandbox.ErrInvalidArgument,
				"URL %q: unknown parameter %q (known: environment, image)", u.Redacted(), k)
		}
	}
	d, err := NewDriver(ctx, o)
	if err != nil {
		return nil, err
	}
	return d, nil
}

// Name returns "modal".
func (p *Provider) Name() string { return Name }

// App returns the Modal App the provider's sandboxes belong to.
func (p *Provider) App() *sdk.App { return p.app }

// As sets target to the provider's native value: a **sdk.Client
// (github.com/modal-labs/libmodal/modal-go) receives the SDK client, a
// **Provider the driver. It reports whether target was set.
func (p *Provider) As(target any) bool {
	switch t := target.(type) {
	case **sdk.Client:
		*t = p.client
		return true
	case **Provider:
		*t = p
		return true
	}
	return false
}

// track records a sandbox handed out, so Close can release its connection.
func (p *Provider) track(s *Sandbox) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		s.sb.Detach()
		return sandbox.Errorf(Name, s.id, "open", sandbox.ErrInvalidArgument, "provider is closed")
	}
	if p.handles == nil {
		p.handles = map[*Sandbox]struct{}{}
	}
	p.handles[s] = struct{}{}
	return nil
}

func (p *Provider) untrack(s *Sandbox) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.handles, s)
}

func (p *Provider) live(op string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return sandbox.Errorf(Name, "", op, sandbox.ErrInvalidArgument, "provider is closed")
	}
	return nil
}

// Get returns the running sandbox id. An unknown or finished sandbox is an
// error of kind ErrNotFound.
func (p *Provider) Get(ctx context.Context, id string) (driver.Sandbox, error) {
	const op = "get"
	sb, err := p.client.Sandboxes.FromID(ctx, id)
	if err != nil {
		return nil, wrap(ctx, id, op, err)
	}
	code, err := sb.Poll(ctx)
	if err != nil {
		return nil, wrap(ctx, id, op, err)
	}
	if code != nil {
		sb.Detach()
		return nil, sandbox.Errorf(Name, id, op, sandbox.ErrNotFound, "sandbox has finished (exit code %d)", *code)
	}
	s := newSandbox(p, sb, nil)
	if err := p.track(s); err != nil {
		return nil, err
	}
	return s, nil
}

// List yields the running sandboxes of the provider's App that carry every
// label of opts.
func (p *Provider) List(ctx context.Context, opts *sandbox.ListOptions) iter.Seq2[sandbox.Info, error] {
	return func(yield func(sandbox.Info, error) bool) {
		const op = "list"
		params := &sdk.SandboxListParams{AppID: p.app.AppID, Environment: p.opts.Environment}
		if len(opts.Labels) > 0 {
			params.Tags = opts.Labels
		}
		seq, err := p.client.Sandboxes.List(ctx, params)
		if err != nil {
			yield(sandbox.Info{}, wrap(ctx, "", op, err))
			return
		}
		for sb, err := range seq {
			if err != nil {
				yield(sandbox.Info{}, wrap(ctx, "", op, err))
				return
			}
			tags, err := sb.GetTags(ctx)
			if err != nil {
				var nf sdk.NotFoundError
				if errors.As(err, &nf) {
					continue // ended since it was listed
				}
				yield(sandbox.Info{}, wrap(ctx, sb.SandboxID, op, err))
				return
			}
			if !yield(sandbox.Info{
				ID: sb.SandboxID, Provider: Name, State: sandbox.StateRunning,
				Labels: tags, Isolation: isolation + "; network: as created (Modal does not report it)",
			}, nil) {
				return
			}
		}
	}
}

// Close releases the provider's connections to Modal (the SDK client's,
// unless it came from Options.Client, and those of the sandboxes it handed
// out, which are unusable afterwards) and stops waiting for commands still running (their Wait
// returns an error of kind ErrUnavailable). It does not terminate sandboxes.
// It is idempotent.
func (p *Provider) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	p.stop()
	// Each SDK sandbox holds its own connection to its task's router.
	for s := range p.handles {
		s.sb.Detach()
	}
	p.handles = nil
	if p.ownClient {
		p.client.Close()
	}
	return nil
}
