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
func newFake(t testing.TB, fo *daytonafake.Options) (*daytonafake.Server, *Provider) {
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
func newSandbox(t testing.TB, p *Provider, spec *sandbox.Spec) *Sandbox {
	t.Helper()
	ctx := context.Background()
	sb, err := p.CreateWith(ctx, spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Terminate(context.Background()) })
	return sb
}
