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
func newFake(t testing.TB, fo *cloudflarefake.Options) (*cloudflarefake.Server, *Provider) {
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

func newSandbox(t testing.TB, p *Provider, spec *sandbox.Spec) *Sandbox {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sb, err := p.Create(ctx, spec)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { sb.Terminate(context.Background()) })
	return sb.(*Sandbox)
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func run(t testing.TB, sb sandbox.Sandbox, args ...string) *sandbox.Result {
	t.Helper()
	res, err := sandbox.Run(ctxT(t), sb, &sandbox.Cmd{Args: args}, nil)
	if err != nil {
		t.Fatalf("Run %q: %v", args, err)
	}
	return res
}
