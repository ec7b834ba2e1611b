package modal_test

import (
	"context"
	"net/http"
	"os"
	"testing"

	sdk "github.com/modal-labs/libmodal/modal-go"
	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/conformance"
	"github.com/perimeter-sdk/perimeter/providers/modal"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// TestConformance runs the whole battery against the fake, through the
// unmodified SDK.
func TestConformance(t *testing.T) {
	// Modal's tunnels carry certificates every client trusts; the fake's
	// carry its own, which this test process trusts in their stead.
	tr := http.DefaultTransport.(*http.Transport)
	old := tr.TLSClientConfig
	tr.TLSClientConfig = fake.TunnelClientTLS()
	t.Cleanup(func() { tr.TLSClientConfig = old; tr.CloseIdleConnections() })

	p := newProvider(t)
	conformance.Run(t, &conformance.Harness{
		Provider:    p,
		NativeError: func() any { return new(sdk.SandboxFilesystemError) },
		// The fake serves a tunnel from the host's loopback, which a fake
		// sandbox without egress (its own network namespace) does not
		// share: its sandboxes ask for open egress unless a check sets the
		// network itself.
		Spec: func() *sandbox.Spec { return &sandbox.Spec{Network: openNetwork} },
	}, nil)
}

// TestLiveConformance runs the battery against Modal itself when Modal
// credentials are in the environment. It creates real sandboxes in the App
// named by PERIMETER_MODAL_APP (default "perimeter-conformance"), which cost
// money.
func TestLiveConformance(t *testing.T) {
	if liveEnv["MODAL_TOKEN_ID"] == "" || liveEnv["MODAL_TOKEN_SECRET"] == "" {
		t.Skip("live Modal conformance skipped: MODAL_TOKEN_ID and MODAL_TOKEN_SECRET are not set")
	}
	// The SDK reads its endpoint from the environment when the client is
	// made; give it the real one back for that moment.
	for _, k := range []string{"MODAL_SERVER_URL", "MODAL_CONFIG_PATH", "MODAL_PROFILE", "MODAL_ENVIRONMENT", "MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET"} {
		t.Setenv(k, liveEnv[k])
	}
	app := os.Getenv("PERIMETER_MODAL_APP")
	if app == "" {
		app = "perimeter-conformance"
	}
	p, err := modal.New(context.Background(), &modal.Options{App: app, DefaultImage: "python:3.12-slim"})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	conformance.Run(t, &conformance.Harness{
		Provider:    p,
		NativeError: func() any { return new(sdk.SandboxFilesystemError) },
	}, nil)
}
