// Package thirdparty is a provider outside the Perimeter module, in the shape
// a third party's adapter takes: its own module, a driver of its own type,
// and the conformance suite run against it from go test (thirdparty_test.go)
// and from a command (cmd/thirdparty-conformance). To stay short, the example
// delegates the sandbox work to the local provider's unisolated mode (plain
// host processes in a directory per sandbox); a real adapter implements the
// interfaces of package sandbox/driver against its platform.
package thirdparty

import (
	"os"

	"github.com/perimeter-sdk/perimeter/conformance"
	"github.com/perimeter-sdk/perimeter/providers/local"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// Provider is the example's driver.
type Provider struct {
	*local.Provider
	root string // removed by Close when New made it
}

// New returns a Provider keeping its sandboxes under root; an empty root is a
// new temporary directory, removed by Close.
func New(root string) (*Provider, error) {
	made := ""
	if root == "" {
		dir, err := os.MkdirTemp("", "thirdparty-")
		if err != nil {
			return nil, err
		}
		root, made = dir, dir
	}
	d, err := local.NewDriver(&local.Options{Root: root, Unisolated: true})
	if err != nil {
		if made != "" {
			os.RemoveAll(made)
		}
		return nil, err
	}
	return &Provider{Provider: d, root: made}, nil
}

// Name returns "thirdparty".
func (p *Provider) Name() string { return "thirdparty" }

// Close closes the driver and removes the directory New made.
func (p *Provider) Close() error {
	err := p.Provider.Close()
	if p.root != "" {
		os.RemoveAll(p.root)
	}
	return err
}

// Harness is the conformance harness of p, a Provider wrapped by
// sandbox.NewProvider. Its sandboxes are host processes sharing the host's
// network, so they ask for open egress.
func Harness(p *sandbox.Provider) *conformance.Harness {
	return &conformance.Harness{
		Provider: p,
		Spec: func() *sandbox.Spec {
			return &sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}}
		},
	}
}
