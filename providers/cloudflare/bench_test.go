package cloudflare

import (
	"context"
	"os/exec"
	"testing"

	"github.com/perimeter-sdk/perimeter/providers/cloudflare/cloudflarefake"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// BenchmarkExecRoundTrip compares one command's round trip (start, output,
// exit) through the adapter and the fake bridge's SSE exec with a direct
// os/exec of the same command. "fake-host" runs the fake's commands on the
// host, which isolates the cost of the bridge's API and the adapter (bash,
// setsid and the wrapper included); "fake-isolated" adds the fake's
// per-command mount namespace.
func BenchmarkExecRoundTrip(b *testing.B) {
	args := []string{"echo", "hello"}
	through := func(b *testing.B, fo *cloudflarefake.Options) {
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
	b.Run("fake-host", func(b *testing.B) { through(b, &cloudflarefake.Options{NoIsolation: true}) })
	b.Run("fake-isolated", func(b *testing.B) { through(b, nil) })
}
