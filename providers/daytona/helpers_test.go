package daytona

import (
	"context"
	"testing"
	"time"

	"github.com/perimeter-sdk/perimeter/providers/daytona/daytonafake"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// newFake starts a fake whose spec mismatches fail t, and a provider
// talking to it.
func newFake(t testing.TB, fo *daytonafake.Options) (*daytonafake.Server, *sandbox.Provider) {
	t.Helper()
	var o daytonafake.Options
	if fo != nil {
		o = *fo
	}
	o.Report = func(err error) { t.Errorf("spec mismatch: %v", err) }
	f := daytonafake.New(&o)
	t.Cleanup(f.Close)
	p, err := New(&Options{APIKey: f.Token(), APIURL: f.APIURL(), RetryBackoff: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return f, p
}

// newSandbox creates a sandbox terminated when the test ends.
func newSandbox(t testing.TB, p *sandbox.Provider, spec *sandbox.Spec) *sandbox.Sandbox {
	t.Helper()
	ctx := context.Background()
	sb, err := p.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Terminate(context.Background()) })
	return sb
}

// driverOf returns the Daytona driver behind a portable provider.
func driverOf(t testing.TB, p *sandbox.Provider) *Provider {
	t.Helper()
	var d *Provider
	if !p.As(&d) {
		t.Fatal("not a Daytona provider")
	}
	return d
}

// sandboxOf returns the Daytona sandbox behind a portable sandbox.
func sandboxOf(t testing.TB, sb *sandbox.Sandbox) *Sandbox {
	t.Helper()
	var d *Sandbox
	if !sb.As(&d) {
		t.Fatal("not a Daytona sandbox")
	}
	return d
}
