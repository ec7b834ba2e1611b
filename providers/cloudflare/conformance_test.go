package cloudflare

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/perimeter-sdk/perimeter/conformance"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// TestConformance runs the public battery against the fake bridge. The
// bridge carries command output as UTF-8 text, which the sandbox declares
// with Capabilities.TextOutput.
func TestConformance(t *testing.T) {
	f, p := newFake(t, nil)
	if !f.Isolated() {
		t.Log("the fake cannot isolate commands here (no unshare or no right to mount): " +
			"the files/symlink-escape check and absolute /workspace paths will fail")
	}
	conformance.Run(t, harness(p), nil)
}

// TestConformanceLive runs the battery against a deployed bridge when
// CLOUDFLARE_SANDBOX_BRIDGE_URL (and CLOUDFLARE_SANDBOX_API_KEY) are set.
func TestConformanceLive(t *testing.T) {
	if os.Getenv(EnvBridgeURL) == "" {
		t.Skip("live Cloudflare conformance skipped: set " + EnvBridgeURL + " (and " + EnvAPIKey + ") to a deployed Sandbox bridge to run it")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := New(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	conformance.Run(t, harness(p), &conformance.Options{Timeout: 10 * time.Minute})
}

// harness asks for open egress unless a check sets the network itself: the
// bridge cannot restrict a sandbox's egress, so it refuses the default
// (none) with ErrNotSupported.
func harness(p *sandbox.Provider) *conformance.Harness {
	return &conformance.Harness{
		Provider: p, NativeError: func() any { return new(*APIError) },
		Spec: func() *sandbox.Spec {
			return &sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}}
		},
	}
}
