package sandbox

import (
	"context"
	"errors"
	"iter"
	"sync"
	"sync/atomic"

	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

// Provider creates and finds sandboxes of one kind. It wraps a
// [driver.Provider]; build one with [Open] (by URL), with a provider package's
// constructor, or with [NewProvider]. A Provider is safe for concurrent use.
//
// After [Provider.Close], every method of the Provider and of the sandboxes,
// processes and tunnels it returned fails with an error of kind [ErrClosed]
// (Tunnel.Close excepted, which still withdraws its endpoint); the sandboxes
// themselves keep running.
type Provider struct {
	d      driver.Provider
	name   string
	hooks  Hooks
	closed atomic.Bool
	close  sync.Once
	cerr   error
}

// NewProvider returns a Provider over d, as sql.OpenDB returns a DB over a
// connector. It panics if d is nil.
func NewProvider(d driver.Provider, opts *ProviderOptions) *Provider {
	if d == nil {
		panic("sandbox: NewProvider with a nil driver")
	}
	name := d.Name()
	if name == "" {
		name = "sandbox"
	}
	return &Provider{d: d, name: name, hooks: hooksOf(opts)}
}

// Name returns the provider's short name, such as "local".
func (p *Provider) Name() string { return p.name }

// As sets target to a provider-specific type, as the provider's package doc
// lists, and reports whether it did.
func (p *Provider) As(target any) bool { return target != nil && p.d.As(target) }

// begin reports the start of an operation to the hooks, if any.
func (p *Provider) begin(ctx context.Context, id, op string) (context.Context, func(Outcome)) {
	if p.hooks == nil {
		return ctx, nil
	}
	return p.hooks.Begin(ctx, Op{Provider: p.name, Sandbox: id, Name: op})
}

// wrap decorates err with the provider, the sandbox and the operation. Context
// errors and io.EOF pass through; an error without a kind gets ErrUnavailable.
func (p *Provider) wrap(id, op string, err error) error {
	if err == nil || passThrough(err) {
		return err
	}
	if e, ok := err.(*Error); ok {
		if e.Provider != "" && e.Op != "" && e.Kind != nil && (e.Sandbox != "" || id == "") {
			return err
		}
		c := *e
		if c.Provider == "" {
			c.Provider = p.name
		}
		if c.Sandbox == "" {
			c.Sandbox = id
		}
		if c.Op == "" {
			c.Op = op
		}
		if c.Kind == nil {
			c.Kind = ErrUnavailable
		}
		return &c
	}
	var e *Error
	if errors.As(err, &e) && e.Kind != nil {
		return err
	}
	return NewError(p.name, id, op, nil, err)
}

// fail is wrap for an error the layer itself decided.
func (p *Provider) fail(id, op string, err error) error {
	return &Error{Provider: p.name, Sandbox: id, Op: op, Kind: KindOf(err), Err: err}
}

func (p *Provider) closedErr(id, op string) error {
	return &Error{Provider: p.name, Sandbox: id, Op: op, Kind: ErrClosed}
}

// Create starts a new sandbox from spec and returns once it is ready to run
// commands. A nil spec asks for the provider's defaults. The layer validates
// spec (ErrInvalidArgument naming the field) and applies the defaults: a nil
// Network is NetworkNone. A field the provider cannot honour is an error of
// kind ErrNotSupported, never silently ignored.
func (p *Provider) Create(ctx context.Context, spec *Spec) (_ *Sandbox, err error) {
	const op = "create"
	if p.closed.Load() {
		return nil, p.closedErr("", op)
	}
	s, err := checkSpec(spec)
	if err != nil {
		return nil, p.fail("", op, err)
	}
	ctx, end := p.begin(ctx, "", op)
	d, err := p.d.Create(ctx, s)
	if err != nil {
		err = p.wrap("", op, err)
	}
	if end != nil {
		end(Outcome{Err: err})
	}
	if err != nil {
		return nil, err
	}
	return p.newSandbox(d), nil
}

// Get returns a handle to an existing sandbox. An unknown or already
// terminated id is an error of kind ErrNotFound.
func (p *Provider) Get(ctx context.Context, id string) (*Sandbox, error) {
	const op = "get"
	if p.closed.Load() {
		return nil, p.closedErr(id, op)
	}
	if id == "" {
		return nil, p.fail("", op, invalid("empty sandbox ID"))
	}
	ctx, end := p.begin(ctx, id, op)
	d, err := p.d.Get(ctx, id)
	if err != nil {
		err = p.wrap(id, op, err)
	}
	if end != nil {
		end(Outcome{Err: err})
	}
	if err != nil {
		return nil, err
	}
	return p.newSandbox(d), nil
}

// List yields the sandboxes that match opts (nil means all this provider's
// credentials can see). An error ends the sequence.
func (p *Provider) List(ctx context.Context, opts *ListOptions) iter.Seq2[Info, error] {
	const op = "list"
	return func(yield func(Info, error) bool) {
		if p.closed.Load() {
			yield(Info{}, p.closedErr("", op))
			return
		}
		o := ListOptions{}
		if opts != nil {
			o = *opts
		}
		for info, err := range p.d.List(ctx, &o) {
			if err != nil {
				yield(Info{}, p.wrap("", op, err))
				return
			}
			if !yield(info, nil) {
				return
			}
		}
	}
}

// Close releases the provider's own resources (connections, caches). It does
// not terminate sandboxes: they keep running, reachable by opening the provider
// again. Afterwards every method fails with ErrClosed. Close is idempotent: a
// second call returns the first call's result.
func (p *Provider) Close() error {
	p.close.Do(func() {
		p.closed.Store(true)
		if err := p.d.Close(); err != nil {
			p.cerr = p.wrap("", "close", err)
		}
	})
	return p.cerr
}

func (p *Provider) newSandbox(d driver.Sandbox) *Sandbox {
	return &Sandbox{p: p, d: d, id: d.ID(), caps: d.Capabilities()}
}
