package modal_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/internal/hostview"
	"github.com/perimeter-sdk/perimeter/providers/modal"
	"github.com/perimeter-sdk/perimeter/providers/modal/modalfake"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// fake is the Modal fake every test here talks to, through the unmodified
// SDK. The SDK takes its endpoint from the environment, so it is set once,
// here, before any client exists.
var fake *modalfake.Server

// liveEnv keeps the Modal settings the environment had at start, for the
// live tests, before the fake's replace them.
var liveEnv = map[string]string{}

func TestMain(m *testing.M) {
	for _, k := range []string{"MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MODAL_SERVER_URL", "MODAL_ENVIRONMENT", "MODAL_CONFIG_PATH", "MODAL_PROFILE"} {
		if v, ok := os.LookupEnv(k); ok {
			liveEnv[k] = v
		}
	}
	var err error
	fake, err = modalfake.Start(nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "modalfake:", err)
		os.Exit(1)
	}
	cfgDir, err := os.MkdirTemp("", "modal-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("MODAL_SERVER_URL", fake.URL)
	os.Setenv("MODAL_TOKEN_ID", fake.TokenID)
	os.Setenv("MODAL_TOKEN_SECRET", fake.TokenSecret)
	os.Setenv("MODAL_CONFIG_PATH", filepath.Join(cfgDir, "absent.toml"))
	os.Unsetenv("MODAL_PROFILE")
	os.Unsetenv("MODAL_ENVIRONMENT")
	code := m.Run()
	fake.Close()
	os.RemoveAll(cfgDir)
	// No sandbox view (a holder process with its mounts and namespaces)
	// is left open.
	os.Exit(hostview.ExitCode(code))
}

// quiet drops the SDK's warnings (it warns that a localhost router is
// dialled without TLS).
var quiet = slog.New(slog.DiscardHandler)

func newProvider(t testing.TB) *sandbox.Provider {
	t.Helper()
	p, err := modal.New(context.Background(), &modal.Options{App: "perimeter-test", Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

func create(t testing.TB, p *sandbox.Provider, spec *sandbox.Spec) *sandbox.Sandbox {
	t.Helper()
	sb, err := p.Create(context.Background(), spec)
	require.NoError(t, err)
	t.Cleanup(func() { sb.Terminate(context.Background()) })
	return sb
}

// openNetwork is the egress of fake sandboxes that serve a tunnel (see
// TestConformance).
var openNetwork = &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}

// modalDriver returns the Modal driver behind a portable provider.
func modalDriver(p *sandbox.Provider) *modal.Provider {
	var d *modal.Provider
	if !p.As(&d) {
		panic("not a Modal provider")
	}
	return d
}
