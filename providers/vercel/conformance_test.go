package vercel

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/perimeter-sdk/perimeter/conformance"
	"github.com/perimeter-sdk/perimeter/providers/vercel/vercelfake"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

func fakeHarness(t *testing.T) *conformance.Harness {
	f := vercelfake.New(&vercelfake.Options{
		// Routes answer on loopback: a server in a fake sandbox listens on
		// the host's network.
		RouteURL: func(_ string, port int) string { return fmt.Sprintf("http://127.0.0.1:%d", port) },
	})
	t.Cleanup(f.Close)
	if !f.Isolated() {
		t.Log("the fake cannot isolate commands here (no unshare or no right to mount): " +
			"the files/symlink-escape and network checks will fail")
	}
	p, err := New(&Options{
		TeamID: f.TeamID(), ProjectID: f.ProjectID(), Token: StaticToken(f.Token()),
		BaseURL: f.URL(), RetryBackoff: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return &conformance.Harness{
		Provider: p, NativeError: func() any { return new(*APIError) },
		// The fake's routes answer on the host's loopback, which a fake
		// sandbox without egress (its own network namespace) does not
		// share: its sandboxes ask for open egress unless a check sets the
		// network itself.
		Spec: func() *sandbox.Spec {
			return &sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}}
		},
	}
}

// TestConformance runs the public battery against the fake. Vercel carries
// command output as UTF-8 text, which the sandbox declares with
// Capabilities.TextOutput; the suite then checks that exactly the invalid
// bytes arrive as U+FFFD.
func TestConformance(t *testing.T) {
	conformance.Run(t, fakeHarness(t), nil)
}

// TestConformanceLive runs the battery against Vercel itself when its
// credentials are in the environment.
func TestConformanceLive(t *testing.T) {
	if os.Getenv("VERCEL_TOKEN") == "" && os.Getenv("VERCEL_OIDC_TOKEN") == "" {
		t.Skip("live Vercel conformance skipped: set VERCEL_TOKEN (with VERCEL_TEAM_ID and VERCEL_PROJECT_ID) or VERCEL_OIDC_TOKEN to run it")
	}
	p, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	h := &conformance.Harness{Provider: p, NativeError: func() any { return new(*APIError) }}
	conformance.Run(t, h, &conformance.Options{Timeout: 10 * time.Minute})
}
