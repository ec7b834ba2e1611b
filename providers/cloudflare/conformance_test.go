package cloudflare

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/perimeter-sdk/perimeter/conformance"
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
	conformance.Run(t, &conformance.Harness{Provider: p, NativeError: func() any { return new(*APIError) }}, nil)
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
	h := &conformance.Harness{Provider: p, NativeError: func() any { return new(*APIError) }}
	conformance.Run(t, h, &conformance.Options{Timeout: 10 * time.Minute})
}
