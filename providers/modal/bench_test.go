package modal_test

import (
	"testing"

	"github.com/perimeter-sdk/perimeter/internal/bench/benchtest"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// BenchmarkExecRoundTrip compares one command's round trip (start, output,
// exit status) through the adapter, the unmodified SDK and the fake's two
// gRPC services on loopback, with the same command run by os/exec directly.
// The ratio is the cost of the Modal path itself (wrapper shell, gRPC, stream
// setup), not of Modal's network, which a live run adds.
func BenchmarkExecRoundTrip(b *testing.B) {
	benchtest.ExecRoundTrip(b, benchtest.Way{Name: "adapter+fake", Sandbox: func(b *testing.B) *sandbox.Sandbox {
		return create(b, newProvider(b), nil)
	}})
}
