package daytona

import (
	"context"
	"testing"

	"github.com/perimeter-sdk/perimeter/internal/bench/benchtest"
	"github.com/perimeter-sdk/perimeter/providers/daytona/daytonafake"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// BenchmarkExecRoundTrip compares one command's round trip (start, output,
// exit) through the adapter and the fake with a direct os/exec of the same
// command. "fake-host" runs commands directly on the host, which isolates the
// cost of the API and the adapter; "fake-isolated" adds the fake's
// per-command namespace set-up.
func BenchmarkExecRoundTrip(b *testing.B) {
	through := func(fo *daytonafake.Options) func(*testing.B) *sandbox.Sandbox {
		return func(b *testing.B) *sandbox.Sandbox {
			_, p := newFake(b, fo)
			return newSandbox(b, p, nil)
		}
	}
	benchtest.ExecRoundTrip(b,
		benchtest.Way{Name: "fake-host", Sandbox: through(&daytonafake.Options{NoIsolation: true})},
		benchtest.Way{Name: "fake-isolated", Sandbox: through(nil)})
}

// BenchmarkCreateExecTerminate measures a sandbox's whole life against the
// fake (on the host): create, one command, terminate.
func BenchmarkCreateExecTerminate(b *testing.B) {
	_, p := newFake(b, &daytonafake.Options{NoIsolation: true})
	ctx := context.Background()
	for b.Loop() {
		sb, err := p.Create(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		res, err := sandbox.Run(ctx, sb, &sandbox.Cmd{Args: []string{"true"}}, nil)
		if err != nil || !res.Status.Success() {
			b.Fatalf("%v %v", err, res.Status)
		}
		if err := sb.Terminate(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
