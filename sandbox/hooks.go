package sandbox

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
)

// Hooks observes every operation of a [Provider] and of the sandboxes,
// processes and tunnels it returned: the seam for tracing, metrics and logs
// (package sandboxotel implements it with OpenTelemetry). Implementations must
// be safe for concurrent use and quick: they run on the caller's goroutine.
type Hooks interface {
	// Begin is called as op starts. It returns the context the operation
	// continues with (ctx itself, or ctx carrying a span) and a function the
	// layer calls exactly once with the outcome. An "exec" operation lasts
	// from Start until Wait first returns the process's end (it is never
	// ended if no Wait does); a "read file" lasts until the reader is
	// closed.
	Begin(ctx context.Context, op Op) (context.Context, func(Outcome))
}

// Op identifies an operation for [Hooks].
type Op struct {
	// Provider is the provider's name, such as "local".
	Provider string
	// Sandbox is the sandbox's ID; empty for provider operations (create,
	// get, list, close).
	Sandbox string
	// Name is the operation: "create", "get", "list", "exec", "read file",
	// "write file", "stat", "read dir", "mkdir", "remove", "remove all",
	// "rename", "expose", "pause", "resume", "snapshot", "update network",
	// "extend timeout", "dial", "signal", "resize", "terminate".
	Name string
}

// Outcome is how an operation ended, for [Hooks].
type Outcome struct {
	// Err is the error the caller received; nil on success.
	Err error
	// Status is an exec's exit status; nil for other operations and for an
	// exec whose Start failed.
	Status *ExitStatus
	// FirstByte is, for an exec, the time from Start to the first byte of
	// output on Cmd.Stdout or Cmd.Stderr; zero when there was none.
	FirstByte time.Duration
	// Bytes counts the bytes of file content moved by "read file" and
	// "write file".
	Bytes int64
}

// ProviderOptions configures the portable layer of a [Provider]. Nil means
// defaults: no hooks, no logging.
type ProviderOptions struct {
	// Hooks, if set, observes every operation.
	Hooks Hooks
	// Logger, if set, logs every operation: at Debug level when it
	// succeeds, at Warn level when it fails (cancellations at Debug). The
	// records carry the provider, sandbox, operation, duration and error,
	// never file contents, command lines or environment values.
	Logger *slog.Logger
}

// hooksOf combines opts' hooks and logger into one Hooks, or nil.
func hooksOf(opts *ProviderOptions) Hooks {
	if opts == nil {
		return nil
	}
	switch {
	case opts.Hooks != nil && opts.Logger != nil:
		return multiHooks{opts.Hooks, logHooks{opts.Logger}}
	case opts.Hooks != nil:
		return opts.Hooks
	case opts.Logger != nil:
		return logHooks{opts.Logger}
	}
	return nil
}

type multiHooks []Hooks

func (m multiHooks) Begin(ctx context.Context, op Op) (context.Context, func(Outcome)) {
	ends := make([]func(Outcome), len(m))
	for i, h := range m {
		ctx, ends[i] = h.Begin(ctx, op)
	}
	return ctx, func(o Outcome) {
		for i := len(ends) - 1; i >= 0; i-- {
			ends[i](o)
		}
	}
}

type logHooks struct{ l *slog.Logger }

func (h logHooks) Begin(ctx context.Context, op Op) (context.Context, func(Outcome)) {
	start := time.Now()
	return ctx, func(o Outcome) {
		level := slog.LevelDebug
		if o.Err != nil && !passThrough(o.Err) {
			level = slog.LevelWarn
		}
		if !h.l.Enabled(ctx, level) {
			return
		}
		attrs := []slog.Attr{
			slog.String("provider", op.Provider),
			slog.Duration("duration", time.Since(start)),
		}
		if op.Sandbox != "" {
			attrs = append(attrs, slog.String("sandbox", op.Sandbox))
		}
		if o.Status != nil {
			attrs = append(attrs, slog.String("status", o.Status.String()))
		}
		if o.Bytes != 0 {
			attrs = append(attrs, slog.Int64("bytes", o.Bytes))
		}
		if o.Err != nil {
			attrs = append(attrs, slog.String("error", o.Err.Error()))
		}
		h.l.LogAttrs(ctx, level, "sandbox "+op.Name, attrs...)
	}
}

// firstByte records when the first byte of a process's output arrived.
type firstByte struct {
	start time.Time
	once  sync.Once
	at    time.Duration
}

func (f *firstByte) wrap(w io.Writer) io.Writer {
	if w == nil {
		return nil
	}
	return &firstByteWriter{f, w}
}

func (f *firstByte) elapsed() time.Duration {
	var d time.Duration
	f.once.Do(func() {}) // a Write's Do has finished if it ran
	d = f.at
	return d
}

type firstByteWriter struct {
	f *firstByte
	w io.Writer
}

func (w *firstByteWriter) Write(p []byte) (int, error) {
	if len(p) > 0 {
		w.f.once.Do(func() { w.f.at = time.Since(w.f.start) })
	}
	return w.w.Write(p)
}

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
