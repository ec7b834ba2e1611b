package modal_test

import (
	"context"
	"os/exec"
	"testing"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// BenchmarkExecRoundTrip compares one command's round trip (start, output,
// exit status) through the adapter, the unmodified SDK and the fake's two
// gRPC services on loopback, with the same command run by os/exec directly.
// The ratio is the cost of the Modal path itself (wrapper shell, gRPC, stream
// setup), not of Modal's network, which a live run adds.
func BenchmarkExecRoundTrip(b *testing.B) {
	b.Run("adapter+fake", func(b *testing.B) {
		p := newProvider(b)
		sb := create(b, p, nil)
		ctx := context.Background()
		cmd := &sandbox.Cmd{Args: []string{"echo", "hi"}}
		b.ResetTimer()
		for b.Loop() {
			res, err := sandbox.Run(ctx, sb, cmd, nil)
			if err != nil || string(res.Stdout) != "hi\n" || res.Status.Code != 0 {
				b.Fatalf("%v %q %v", err, res.Stdout, res.Status)
			}
		}
	})
	b.Run("os-exec", func(b *testing.B) {
		for b.Loop() {
			out, err := exec.Command("echo", "hi").Output()
			if err != nil || string(out) != "hi\n" {
				b.Fatalf("%v %q", err, out)
			}
		}
	})
}
