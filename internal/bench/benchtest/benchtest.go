// Package benchtest holds the go test benchmark every provider's adapter
// runs against its fake: one command's round trip through the sandbox,
// beside the same command run directly with os/exec, so that the ratio
// between the two means something on a loaded machine.
package benchtest

import (
	"context"
	"os/exec"
	"testing"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// Way is one path a command can take: a sub-benchmark's name and the
// sandbox it runs in, made when the sub-benchmark starts (its cleanup is
// the caller's, through b.Cleanup).
type Way struct {
	Name    string
	Sandbox func(b *testing.B) *sandbox.Sandbox
}

// ExecRoundTrip measures one command's round trip (start, output, exit)
// through each way, after the same command run by os/exec directly as
// "direct-os-exec". Every run's output is checked.
func ExecRoundTrip(b *testing.B, ways ...Way) {
	args := []string{"echo", "hello"}
	b.Run("direct-os-exec", func(b *testing.B) {
		for b.Loop() {
			out, err := exec.Command(args[0], args[1:]...).Output()
			if err != nil || string(out) != "hello\n" {
				b.Fatalf("%v %q", err, out)
			}
		}
	})
	for _, w := range ways {
		b.Run(w.Name, func(b *testing.B) {
			sb := w.Sandbox(b)
			ctx := context.Background()
			cmd := &sandbox.Cmd{Args: args}
			b.ResetTimer()
			for b.Loop() {
				res, err := sandbox.Run(ctx, sb, cmd, nil)
				if err != nil || string(res.Stdout) != "hello\n" || !res.Status.Success() {
					b.Fatalf("%v %q %v", err, res.Stdout, res.Status)
				}
			}
		})
	}
}
