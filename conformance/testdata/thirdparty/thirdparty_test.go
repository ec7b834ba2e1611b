package thirdparty_test

import (
	"testing"

	"example.com/thirdparty"
	"github.com/perimeter-sdk/perimeter/conformance"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// TestConformance is the whole of a provider's conformance test: a harness
// and one call.
func TestConformance(t *testing.T) {
	d, err := thirdparty.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p := sandbox.NewProvider(d, nil)
	t.Cleanup(func() { p.Close() })
	conformance.Run(t, thirdparty.Harness(p), nil)
}
