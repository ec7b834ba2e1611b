// Package bench measures providers against a baseline run side by side: the
// same command through os/exec and through a sandbox, in one process, so that
// the ratio means something on a loaded machine. The CLI's bench command and
// the package's go test benchmarks both use it.
package bench

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"time"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// Stats summarises a set of durations.
type Stats struct {
	N              int
	Mean, P50, P99 time.Duration
}

// Summarize computes Stats of ds.
func Summarize(ds []time.Duration) Stats {
	if len(ds) == 0 {
		return Stats{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return Stats{
		N:    len(s),
		Mean: sum / time.Duration(len(s)),
		P50:  s[len(s)/2],
		P99:  s[min(len(s)-1, len(s)*99/100)],
	}
}

func (s Stats) String() string {
	return fmt.Sprintf("n=%d p50=%v p99=%v mean=%v", s.N, s.P50.Round(time.Microsecond),
		s.P99.Round(time.Microsecond), s.Mean.Round(time.Microsecond))
}

// OSExec runs argv with os/exec directly and waits for it: the baseline.
func OSExec(ctx context.Context, argv []string) error {
	c := exec.CommandContext(ctx, argv[0], argv[1:]...)
	c.Stdout, c.Stderr = io.Discard, io.Discard
	return c.Run()
}

// SandboxExec runs argv on sb and waits for it, failing on a non-zero exit.
func SandboxExec(ctx context.Context, sb *sandbox.Sandbox, argv []string) error {
	p, err := sb.Start(ctx, &sandbox.Cmd{Args: argv})
	if err != nil {
		return err
	}
	st, err := p.Wait(ctx)
	if err != nil {
		return err
	}
	if !st.Success() {
		return fmt.Errorf("%q: %v", argv, st)
	}
	return nil
}

// CreateTerminate creates a sandbox from spec and terminates it.
func CreateTerminate(ctx context.Context, p *sandbox.Provider, spec *sandbox.Spec) error {
	sb, err := p.Create(ctx, spec)
	if err != nil {
		return err
	}
	return sb.Terminate(ctx)
}

// Interleaved runs each of fns n times, taking turns, and returns each one's
// durations; turns keep a load change on the machine from favouring one.
func Interleaved(n int, fns ...func() error) ([][]time.Duration, error) {
	out := make([][]time.Duration, len(fns))
	for range n {
		for i, f := range fns {
			start := time.Now()
			if err := f(); err != nil {
				return nil, err
			}
			out[i] = append(out[i], time.Since(start))
		}
	}
	return out, nil
}
