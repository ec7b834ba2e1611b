package cloudflare

import (
	"testing"

	"github.com/perimeter-sdk/perimeter/internal/bench/benchtest"
	"github.com/perimeter-sdk/perimeter/providers/cloudflare/cloudflarefake"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// BenchmarkExecRoundTrip compares one command's round trip (start, output,
// exit) through the adapter and the fake with a direct os/exec of the same
// command. "fake-host" runs the fake's commands on the host, which isolates the
// cost of the bridge's SSE exec API and the adapter (bash, setsid and the
// wrapper included); "fake-isolated" adds the fake's per-command mount
// namespace.
func BenchmarkExecRoundTrip(b *testing.B) {
	through := func(fo *cloudflarefake.Options) func(*testing.B) *sandbox.Sandbox {
		return func(b *testing.B) *sandbox.Sandbox {
			_, p := newFake(b, fo)
			return newSandbox(b, p, nil)
		}
	}
	benchtest.ExecRoundTrip(b,
		benchtest.Way{Name: "fake-host", Sandbox: through(&cloudflarefake.Options{NoIsolation: true})},
		benchtest.Way{Name: "fake-isolated", Sandbox: through(nil)})
}
