package sandboxotel_test

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"iter"
	"testing"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
	"github.com/perimeter-sdk/perimeter/sandbox/sandboxotel"
)

// instant is a driver whose commands print one line and exit at once, so a
// benchmark through it measures the portable layer alone.
type instant struct{}

func (instant) Name() string { return "instant" }
func (instant) Create(context.Context, *sandbox.Spec) (driver.Sandbox, error) {
	return instantSandbox{}, nil
}
func (instant) Get(context.Context, string) (driver.Sandbox, error) { return instantSandbox{}, nil }
func (instant) List(context.Context, *sandbox.ListOptions) iter.Seq2[sandbox.Info, error] {
	return func(func(sandbox.Info, error) bool) {}
}
func (instant) Close() error { return nil }
func (instant) As(any) bool  { return false }

type instantSandbox struct{}

var line = []byte("ok\n")

func (instantSandbox) ID() string                                 { return "sb-1" }
func (instantSandbox) Info(context.Context) (sandbox.Info, error) { return sandbox.Info{}, nil }
func (instantSandbox) Capabilities() sandbox.Capabilities         { return sandbox.Capabilities{} }
func (instantSandbox) As(any) bool                                { return false }
func (instantSandbox) Start(_ context.Context, cmd *sandbox.Cmd) (driver.Process, error) {
	cmd.Stdout.Write(line)
	return instantProcess{}, nil
}
func (instantSandbox) ReadFile(context.Context, string) (io.ReadCloser, error) { return nil, nil }
func (instantSandbox) WriteFile(context.Context, string, io.Reader, fs.FileMode) error {
	return nil
}
func (instantSandbox) Stat(context.Context, string) (sandbox.FileInfo, error) {
	return sandbox.FileInfo{}, nil
}
func (instantSandbox) ReadDir(context.Context, string) ([]sandbox.FileInfo, error) { return nil, nil }
func (instantSandbox) MkdirAll(context.Context, string, fs.FileMode) error         { return nil }
func (instantSandbox) Remove(context.Context, string) error                        { return nil }
func (instantSandbox) RemoveAll(context.Context, string) error                     { return nil }
func (instantSandbox) Rename(context.Context, string, string) error                { return nil }
func (instantSandbox) Expose(context.Context, int, *sandbox.ExposeOptions) (driver.Tunnel, error) {
	return nil, nil
}
func (instantSandbox) Terminate(context.Context) error { return nil }

type instantProcess struct{}

func (instantProcess) Wait(context.Context) (sandbox.ExitStatus, error) {
	return sandbox.ExitStatus{}, nil
}
func (instantProcess) Signal(context.Context, sandbox.Signal) error { return nil }
func (instantProcess) As(any) bool                                  { return false }

// BenchmarkLayerExec is the portable layer's own cost per exec (Start and
// Wait, with stdout and stderr captured), over a driver that does nothing:
// "driver" calls the driver directly, "portable" goes through the layer
// without hooks, "otel" with sandboxotel's hooks on the API's no-op default.
// Divide by a real exec's time (BenchmarkExec in providers/local, about
// 1 ms for an isolated sandbox) for the layer's share.
func BenchmarkLayerExec(b *testing.B) {
	ctx := context.Background()
	run := func(b *testing.B, start func(*sandbox.Cmd) (interface {
		Wait(context.Context) (sandbox.ExitStatus, error)
	}, error)) {
		b.ReportAllocs()
		var stdout, stderr bytes.Buffer
		for b.Loop() {
			stdout.Reset()
			p, err := start(&sandbox.Cmd{Args: []string{"/bin/true"}, Stdout: &stdout, Stderr: &stderr})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := p.Wait(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("driver", func(b *testing.B) {
		var d instantSandbox
		run(b, func(c *sandbox.Cmd) (interface {
			Wait(context.Context) (sandbox.ExitStatus, error)
		}, error) {
			return d.Start(ctx, c)
		})
	})
	for _, tc := range []struct {
		name  string
		hooks func() sandbox.Hooks
	}{
		{"portable", func() sandbox.Hooks { return nil }},
		{"otel", func() sandbox.Hooks {
			h, err := sandboxotel.New(nil)
			if err != nil {
				b.Fatal(err)
			}
			return h
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			p := sandbox.NewProvider(instant{}, &sandbox.ProviderOptions{Hooks: tc.hooks()})
			sb, err := p.Create(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			run(b, func(c *sandbox.Cmd) (interface {
				Wait(context.Context) (sandbox.ExitStatus, error)
			}, error) {
				return sb.Start(ctx, c)
			})
		})
	}
}
