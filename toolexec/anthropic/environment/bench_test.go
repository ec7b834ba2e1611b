package environment_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2/lib/environments"

	"github.com/perimeter-sdk/perimeter/providers/local"
	"github.com/perimeter-sdk/perimeter/toolexec/anthropic/environment"
	"github.com/perimeter-sdk/perimeter/toolexec/anthropic/environment/envfake"
)

// benchSteps are the calls each benchmark iteration makes, in turn.
func benchStep(i int) envfake.Step {
	switch i % 3 {
	case 0:
		return envfake.Step{Tool: "bash", Input: map[string]any{"command": fmt.Sprintf("echo call %d", i)}}
	case 1:
		return envfake.Step{Tool: "write", Input: map[string]any{"file_path": "bench.txt", "content": fmt.Sprintf("line %d\n", i)}}
	default:
		return envfake.Step{Tool: "read", Input: map[string]any{"file_path": "bench.txt"}}
	}
}

// BenchmarkToolCall measures one tool call through the SDK's environment
// worker against the local fake of the API, side by side: "perimeter-local"
// runs the call in a local-provider sandbox, "sdk-host" in the SDK's own
// agent toolset on the host (the worker's default). The session's first
// call (and so the sandbox's creation) is not timed.
func BenchmarkToolCall(b *testing.B) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	b.Run("perimeter-local", func(b *testing.B) {
		p, err := local.New(&local.Options{Root: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		benchWorker(b, func(f *envfake.Server) func(context.Context) error {
			w, err := environment.NewWorker(client(f), environment.WorkerOptions{
				EnvironmentID: f.EnvironmentID, EnvironmentKey: f.EnvironmentKey, Workdir: b.TempDir(), Logger: quiet,
				Sandboxes: environment.Options{Provider: p, Logger: quiet},
			})
			if err != nil {
				b.Fatal(err)
			}
			return w.Run
		})
	})
	b.Run("sdk-host", func(b *testing.B) {
		benchWorker(b, func(f *envfake.Server) func(context.Context) error {
			return environments.NewEnvironmentWorker(client(f), environments.EnvironmentWorkerOptions{
				EnvironmentID: f.EnvironmentID, EnvironmentKey: f.EnvironmentKey, Workdir: b.TempDir(), Logger: quiet,
			}).Run
		})
	})
}

func benchWorker(b *testing.B, newRun func(*envfake.Server) func(context.Context) error) {
	f := envfake.New()
	defer f.Close()
	steps := []envfake.Step{{Tool: "bash", Input: map[string]any{"command": "true"}}}
	for i := range b.N {
		steps = append(steps, benchStep(i))
	}
	run := newRun(f)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	f.AddSession(envfake.SessionSpec{ID: "sesn_bench", Terminate: true, Steps: steps})
	go func() { done <- run(ctx) }()
	wait := func(n int) {
		bound := time.After(10 * time.Minute)
		for {
			ch := f.Changed()
			if len(f.Results("sesn_bench")) >= n {
				return
			}
			select {
			case <-ch:
			case <-bound:
				b.Fatalf("timed out; problems %v", f.Problems())
			}
		}
	}
	wait(1)
	b.ResetTimer()
	wait(len(steps))
	b.StopTimer()
	for i, r := range f.Results("sesn_bench") {
		if r.IsError {
			b.Fatalf("call %d: %s", i, r.Text)
		}
	}
	cancel()
	<-done
}
