package vercel

import (
	"testing"

	"github.com/perimeter-sdk/perimeter/internal/bench/benchtest"
	"github.com/perimeter-sdk/perimeter/providers/vercel/vercelfake"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// BenchmarkExecRoundTrip compares one command's round trip (start, output,
// exit) through the adapter and the fake with a direct os/exec of the same
// command. "fake-host" runs commands directly on the host, which isolates the
// cost of the API and the adapter; "fake-isolated" adds the fake's
// per-command namespace set-up.
func BenchmarkExecRoundTrip(b *testing.B) {
	through := func(fo *vercelfake.Options) func(*testing.B) *sandbox.Sandbox {
		return func(b *testing.B) *sandbox.Sandbox {
			_, p := newFake(b, fo)
			return newSandbox(b, p, nil).Sandbox
		}
	}
	benchtest.ExecRoundTrip(b,
		benchtest.Way{Name: "fake-host", Sandbox: through(&vercelfake.Options{NoIsolation: true})},
		benchtest.Way{Name: "fake-isolated", Sandbox: through(nil)})
}
