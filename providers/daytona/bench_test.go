package daytona

import (
	"context"
	"os/exec"
	"testing"

	"github.com/perimeter-sdk/perimeter/providers/daytona/daytonafake"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// BenchmarkExecRoundTrip compares one command's round trip (start, output,
// exit) through the adapter and the fake's HTTP API with a direct os/exec
// of the same command. "fake-isolated" includes the fake's per-command
// namespace set-up; "fake-host" runs commands directly on the host, which
// isolates the cost of the API and the adapter.
func BenchmarkExecRoundTrip(b *testing.B) {
	args := []string{"echo", "hello"}
	through := func(b *testing.B, fo *daytonafake.Options) {
		_, p := newFake(b, fo)
		sb := newSandbox(b, p, nil)
		ctx := context.Background()
		b.ResetTimer()
		for b.Loop() {
			res, err := sandbox.Run(ctx, sb, &sandbox.Cmd{Args: args}, nil)
			if err != nil || string(res.Stdout) != "hello\n" {
				b.Fatalf("%v %q", err, res.Stdout)
			}
		}
	}
	b.Run("direct-os-exec", func(b *testing.B) {
		for b.Loop() {
			out, err := exec.Command(args[0], args[1:]...).Output()
			if err != nil || string(out) != "hello\n" {
				b.Fatalf("%v %q", err, out)
			}
		}
	})
	b.Run("fake-host", func(b *testing.B) { through(b, &daytonafake.Options{NoIsolation: true}) })
	b.Run("fake-isolated", func(b *testing.B) { through(b, nil) })
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
