package local_test

import (
	"io/fs"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/conformance"
	"github.com/perimeter-sdk/perimeter/providers/local"
)

func TestConformance(t *testing.T) {
	p, err := local.New(&local.Options{Root: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	conformance.Run(t, &conformance.Harness{
		Provider:    p,
		NativeError: func() any { return new(*fs.PathError) },
	}, nil)
}
