package local_test

import (
	"context"
	"io/fs"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/conformance"
	"github.com/perimeter-sdk/perimeter/providers/local"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// TestConformance runs the whole suite against isolated sandboxes (the
// default), which claim PTY, ports and every network mode.
func TestConformance(t *testing.T) {
	opts := &local.Options{Root: t.TempDir(), RequireLevel: local.LevelNamespaces}
	p, err := local.New(opts)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	conformance.Run(t, &conformance.Harness{
		Provider:    p,
		NativeError: func() any { return new(*fs.PathError) },
		Open:        func(context.Context) (*sandbox.Provider, error) { return local.New(opts) },
	}, nil)
}

// TestConformanceUnisolated runs the suite against the L0 mode, whose plain
// host processes share the host's network: its sandboxes ask for open egress.
func TestConformanceUnisolated(t *testing.T) {
	opts := &local.Options{Root: t.TempDir(), Unisolated: true}
	p, err := local.New(opts)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	conformance.Run(t, &conformance.Harness{
		Provider:    p,
		NativeError: func() any { return new(*fs.PathError) },
		Open:        func(context.Context) (*sandbox.Provider, error) { return local.New(opts) },
		Spec: func() *sandbox.Spec {
			return &sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}}
		},
	}, nil)
}
