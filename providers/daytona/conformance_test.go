package daytona

import (
	"os"
	"testing"
	"time"

	"github.com/perimeter-sdk/perimeter/conformance"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// TestConformance runs the public battery against the fake, with every
// request and response checked against Daytona's OpenAPI specs.
func TestConformance(t *testing.T) {
	f, p := newFake(t, nil)
	if !f.Isolated() {
		t.Log("the fake cannot isolate commands here (no unshare or no right to mount): " +
			"the files/symlink-escape and network checks will fail")
	}
	conformance.Run(t, &conformance.Harness{
		Provider:    p,
		NativeError: func() any { return new(*APIError) },
		// The fake serves previews from the host's loopback, which a fake
		// sandbox without egress (its own network namespace) does not
		// share: its sandboxes ask for open egress unless a check sets the
		// network itself.
		Spec: func() *sandbox.Spec { return &sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}} },
	}, nil)
	if n := len(f.Mismatches()); n > 0 {
		t.Errorf("%d requests or responses did not match the specs", n)
	}
}

// TestConformanceLive runs the battery against Daytona itself when its
// credentials are in the environment.
func TestConformanceLive(t *testing.T) {
	if os.Getenv("DAYTONA_API_KEY") == "" && os.Getenv("DAYTONA_JWT_TOKEN") == "" {
		t.Skip("live Daytona conformance skipped: set DAYTONA_API_KEY (or DAYTONA_JWT_TOKEN with DAYTONA_ORGANIZATION_ID; DAYTONA_API_URL and DAYTONA_TARGET optional) to run it")
	}
	p, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	h := &conformance.Harness{Provider: p, NativeError: func() any { return new(*APIError) }}
	conformance.Run(t, h, &conformance.Options{Timeout: 10 * time.Minute})
}
