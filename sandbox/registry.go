package sandbox

import (
	"context"
	"net/url"
	"slices"
	"strings"
	"sync"

	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

// OpenFunc opens a provider's driver from a URL whose scheme it registered.
// Credentials come from the provider's usual environment variables, never from
// the URL.
type OpenFunc func(ctx context.Context, u *url.URL) (driver.Provider, error)

var (
	registryMu sync.RWMutex
	registry   = map[string]OpenFunc{}
)

// Register makes a provider available to [Open] under scheme. It is meant to be
// called from a provider package's init function, and panics if scheme is
// empty, open is nil, or the scheme is already registered.
func Register(scheme string, open OpenFunc) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if scheme == "" || open == nil {
		panic("sandbox: Register with an empty scheme or a nil OpenFunc")
	}
	if _, dup := registry[scheme]; dup {
		panic("sandbox: Register called twice for scheme " + scheme)
	}
	registry[scheme] = open
}

// Schemes returns the registered schemes, sorted.
func Schemes() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	s := make([]string, 0, len(registry))
	for k := range registry {
		s = append(s, k)
	}
	slices.Sort(s)
	return s
}

// Open opens the provider that registered rawURL's scheme, such as
// "local:///var/lib/perimeter" or "modal://my-app", with default
// [ProviderOptions]. An unknown scheme is an error of kind ErrInvalidArgument
// that lists the registered schemes.
func Open(ctx context.Context, rawURL string) (*Provider, error) {
	return OpenWith(ctx, rawURL, nil)
}

// OpenWith is [Open] with options for the portable layer (hooks, logging).
func OpenWith(ctx context.Context, rawURL string, opts *ProviderOptions) (*Provider, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, &Error{Provider: "sandbox", Op: "open", Kind: ErrInvalidArgument, Err: err}
	}
	if u.Scheme == "" {
		return nil, Errorf("sandbox", "", "open", ErrInvalidArgument,
			"provider URL %q has no scheme (want SCHEME://..., registered: %s)", rawURL, registered())
	}
	registryMu.RLock()
	open := registry[u.Scheme]
	registryMu.RUnlock()
	if open == nil {
		return nil, Errorf("sandbox", "", "open", ErrInvalidArgument,
			"unknown provider scheme %q (registered: %s; forgotten import of the provider's package?)", u.Scheme, registered())
	}
	d, err := open(ctx, u)
	if err != nil {
		if passThrough(err) {
			return nil, err
		}
		return nil, NewError(u.Scheme, "", "open", nil, err)
	}
	if d == nil {
		return nil, Errorf(u.Scheme, "", "open", ErrUnavailable, "provider bug: the OpenFunc returned neither a driver nor an error")
	}
	return NewProvider(d, opts), nil
}

func registered() string {
	s := Schemes()
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
