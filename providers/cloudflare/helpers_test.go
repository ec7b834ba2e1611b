package cloudflare

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/perimeter-sdk/perimeter/providers/cloudflare/cloudflarefake"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// newFake starts a fake bridge (tunnels answering on loopback) and a
// provider pointed at it.
func newFake(t testing.TB, fo *cloudflarefake.Options) (*cloudflarefake.Server, *sandbox.Provider) {
	t.Helper()
	var o cloudflarefake.Options
	if fo != nil {
		o = *fo
	}
	if o.TunnelURL == nil {
		// A server in a fake sandbox listens on the host's network.
		o.TunnelURL = func(_ string, port int, _ string) string { return fmt.Sprintf("http://127.0.0.1:%d", port) }
	}
	f := cloudflarefake.New(&o)
	t.Cleanup(f.Close)
	p, err := New(context.Background(), &Options{BridgeURL: f.URL(), APIKey: f.APIKey()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return f, p
}

// openEgress returns spec (nil: an empty one) asking for open egress, the
// only policy the bridge can honour.
func openEgress(spec *sandbox.Spec) *sandbox.Spec {
	var s sandbox.Spec
	if spec != nil {
		s = *spec
	}
	if s.Network == nil {
		s.Network = &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}
	}
	return &s
}

// newSandbox creates a sandbox from spec with open egress (unless spec sets
// Network) and terminates it when the test ends.
func newSandbox(t testing.TB, p *sandbox.Provider, spec *sandbox.Spec) *sandbox.Sandbox {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sb, err := p.Create(ctx, openEgress(spec))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { sb.Terminate(context.Background()) })
	return sb
}

// drv returns the driver behind a portable sandbox.
func drv(t testing.TB, sb *sandbox.Sandbox) *Sandbox {
	t.Helper()
	var d *Sandbox
	if !sb.As(&d) {
		t.Fatal("As(**Sandbox) failed")
	}
	return d
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func run(t testing.TB, sb *sandbox.Sandbox, args ...string) *sandbox.Result {
	t.Helper()
	res, err := sandbox.Run(ctxT(t), sb, &sandbox.Cmd{Args: args}, nil)
	if err != nil {
		t.Fatalf("Run %q: %v", args, err)
	}
	return res
}
