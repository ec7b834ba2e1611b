package bench_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/internal/bench"
	"github.com/perimeter-sdk/perimeter/providers/local"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

func TestSummarize(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	s := bench.Summarize(ds)
	assert.Equal(t, 100, s.N)
	assert.Equal(t, 51*time.Millisecond, s.P50)
	assert.Equal(t, 100*time.Millisecond, s.P99)
	assert.Equal(t, 50500*time.Microsecond, s.Mean)
	assert.Zero(t, bench.Summarize(nil))
}

func TestInterleavedStopsOnError(t *testing.T) {
	calls := 0
	_, err := bench.Interleaved(3, func() error { calls++; return nil }, func() error { return assert.AnError })
	assert.ErrorIs(t, err, assert.AnError)
	assert.Equal(t, 1, calls)
}

func newSandbox(b *testing.B) (*sandbox.Provider, *sandbox.Sandbox) {
	p, err := local.New(&local.Options{Root: b.TempDir()})
	require.NoError(b, err)
	sb, err := p.Create(context.Background(), nil)
	require.NoError(b, err)
	b.Cleanup(func() { sb.Terminate(context.Background()); p.Close() })
	return p, sb
}

// BenchmarkExecTrue runs /bin/true through os/exec and through the local
// provider in one run; compare the two ns/op for the provider's overhead.
func BenchmarkExecTrue(b *testing.B) {
	ctx := context.Background()
	argv := []string{"true"}
	b.Run("os-exec", func(b *testing.B) {
		for b.Loop() {
			if err := bench.OSExec(ctx, argv); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("local", func(b *testing.B) {
		_, sb := newSandbox(b)
		for b.Loop() {
			if err := bench.SandboxExec(ctx, sb, argv); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkCreateTerminate creates and terminates a local sandbox.
func BenchmarkCreateTerminate(b *testing.B) {
	ctx := context.Background()
	p, _ := newSandbox(b)
	for b.Loop() {
		if err := bench.CreateTerminate(ctx, p, nil); err != nil {
			b.Fatal(err)
		}
	}
}
