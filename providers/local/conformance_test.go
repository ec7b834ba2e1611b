package local_test

import (
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
	p, err := local.New(&local.Options{Root: t.TempDir(), RequireLevel: local.LevelNamespaces})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	conformance.Run(t, &conformance.Harness{
		Provider:    p,
		NativeError: func() any { return new(*fs.PathError) },
	}, nil)
}

// TestConformanceUnisolated runs the suite against the L0 mode, whose plain
// host processes share the host's network: its sandboxes ask for open egress.
func TestConformanceUnisolated(t *testing.T) {
	p, err := local.New(&local.Options{Root: t.TempDir(), Unisolated: true})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	conformance.Run(t, &conformance.Harness{
		Provider:    p,
		NativeError: func() any { return new(*fs.PathError) },
		Spec: func() *sandbox.Spec {
			return &sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}}
		},
	}, nil)
}
