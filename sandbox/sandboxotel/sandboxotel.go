// Package sandboxotel reports what a [sandbox.Provider] does to OpenTelemetry:
// one span per operation (create, exec, each file operation, terminate, ...)
// and metrics for their durations, exec's time to first byte and exit
// statuses, and the bytes file operations move.
//
// Install it through the portable layer's options:
//
//	hooks, err := sandboxotel.New(nil) // the global tracer and meter providers
//	...
//	p, err := sandbox.OpenWith(ctx, "local://", &sandbox.ProviderOptions{Hooks: hooks})
//
// OpenTelemetry's API is a no-op until the host installs an SDK provider, so
// installing the hooks costs little when nothing collects. Spans and metrics
// carry the provider's name, the sandbox's ID and the operation, and for a
// failure the error's kind; never command lines, environment values, file
// names or contents.
package sandboxotel

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// ScopeName is the instrumentation scope of the tracer and meter.
const ScopeName = "github.com/perimeter-sdk/perimeter/sandbox/sandboxotel"

// Metric names.
const (
	// MetricDuration is a histogram of operation durations, in seconds.
	MetricDuration = "perimeter.sandbox.operation.duration"
	// MetricTimeToFirstByte is a histogram of the time from an exec's
	// start to its first byte of output, in seconds.
	MetricTimeToFirstByte = "perimeter.sandbox.exec.time_to_first_byte"
	// MetricExits counts exec exits by outcome ("success", "failure",
	// "signal", "timeout", "oom").
	MetricExits = "perimeter.sandbox.exec.exits"
	// MetricFileBytes counts the bytes moved by "read file" and "write
	// file".
	MetricFileBytes = "perimeter.sandbox.file.bytes"
)

// Attribute keys.
const (
	AttrProvider  = attribute.Key("perimeter.provider")
	AttrSandbox   = attribute.Key("perimeter.sandbox.id")
	AttrOperation = attribute.Key("perimeter.operation")
	AttrExitCode  = attribute.Key("perimeter.exec.exit_code")
	AttrOutcome   = attribute.Key("perimeter.exec.outcome")
	AttrErrorType = attribute.Key("error.type")
)

// Options configures [New]. Nil means the global providers.
type Options struct {
	// TracerProvider makes the tracer; nil means otel.GetTracerProvider().
	TracerProvider trace.TracerProvider
	// MeterProvider makes the meter; nil means otel.GetMeterProvider().
	MeterProvider metric.MeterProvider
}

type hooks struct {
	tracer   trace.Tracer
	duration metric.Float64Histogram
	ttfb     metric.Float64Histogram
	exits    metric.Int64Counter
	bytes    metric.Int64Counter

	// sets caches attribute sets by their values: building a set sorts and
	// allocates, and the combinations are few.
	sets sync.Map // setKey -> metric.MeasurementOption
}

type setKey struct{ provider, op, errType, outcome string }

// set returns the measurement option for k's attributes (empty fields left
// out).
func (h *hooks) set(k setKey) metric.MeasurementOption {
	if o, ok := h.sets.Load(k); ok {
		return o.(metric.MeasurementOption)
	}
	kv := []attribute.KeyValue{AttrProvider.String(k.provider)}
	if k.op != "" {
		kv = append(kv, AttrOperation.String(k.op))
	}
	if k.errType != "" {
		kv = append(kv, AttrErrorType.String(k.errType))
	}
	if k.outcome != "" {
		kv = append(kv, AttrOutcome.String(k.outcome))
	}
	o, _ := h.sets.LoadOrStore(k, metric.WithAttributeSet(attribute.NewSet(kv...)))
	return o.(metric.MeasurementOption)
}

// New returns hooks that report to OpenTelemetry. The error is from creating
// the metric instruments.
func New(opts *Options) (sandbox.Hooks, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.TracerProvider == nil {
		o.TracerProvider = otel.GetTracerProvider()
	}
	if o.MeterProvider == nil {
		o.MeterProvider = otel.GetMeterProvider()
	}
	m := o.MeterProvider.Meter(ScopeName)
	h := &hooks{tracer: o.TracerProvider.Tracer(ScopeName)}
	var err, e error
	h.duration, e = m.Float64Histogram(MetricDuration, metric.WithUnit("s"),
		metric.WithDescription("Duration of sandbox operations."))
	err = errors.Join(err, e)
	h.ttfb, e = m.Float64Histogram(MetricTimeToFirstByte, metric.WithUnit("s"),
		metric.WithDescription("Time from a command's start to its first byte of output."))
	err = errors.Join(err, e)
	h.exits, e = m.Int64Counter(MetricExits, metric.WithUnit("{exit}"),
		metric.WithDescription("Commands that ended, by outcome."))
	err = errors.Join(err, e)
	h.bytes, e = m.Int64Counter(MetricFileBytes, metric.WithUnit("By"),
		metric.WithDescription("Bytes of file content read and written."))
	err = errors.Join(err, e)
	if err != nil {
		return nil, err
	}
	return h, nil
}

// Begin starts a span for op; the returned function ends it and records the
// metrics.
func (h *hooks) Begin(ctx context.Context, op sandbox.Op) (context.Context, func(sandbox.Outcome)) {
	start := time.Now()
	ctx, span := h.tracer.Start(ctx, "sandbox "+op.Name, trace.WithSpanKind(trace.SpanKindClient))
	recording := span.IsRecording()
	if recording {
		span.SetAttributes(AttrProvider.String(op.Provider), AttrOperation.String(op.Name))
		if op.Sandbox != "" {
			span.SetAttributes(AttrSandbox.String(op.Sandbox))
		}
	}
	return ctx, func(o sandbox.Outcome) {
		defer span.End()
		k := setKey{provider: op.Provider, op: op.Name}
		if o.Err != nil {
			k.errType = errorType(o.Err)
			span.SetStatus(codes.Error, k.errType)
			if recording {
				span.SetAttributes(AttrErrorType.String(k.errType))
			}
		}
		h.duration.Record(ctx, time.Since(start).Seconds(), h.set(k))
		switch {
		case o.Status != nil:
			outcome := outcomeOf(*o.Status)
			if recording {
				span.SetAttributes(AttrExitCode.Int(o.Status.Code), AttrOutcome.String(outcome))
			}
			h.exits.Add(ctx, 1, h.set(setKey{provider: op.Provider, outcome: outcome}))
			if o.FirstByte > 0 {
				h.ttfb.Record(ctx, o.FirstByte.Seconds(), h.set(setKey{provider: op.Provider}))
			}
		case o.Bytes > 0:
			h.bytes.Add(ctx, o.Bytes, h.set(k))
		}
	}
}

func outcomeOf(st sandbox.ExitStatus) string {
	switch {
	case st.TimedOut:
		return "timeout"
	case st.OOMKilled:
		return "oom"
	case st.Signal != "":
		return "signal"
	case st.Code == 0:
		return "success"
	}
	return "failure"
}

// errorType names an error by its kind ("not found"), or as a context error.
func errorType(err error) string {
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline exceeded"
	}
	if k := sandbox.KindOf(err); k != nil {
		return k.Error()
	}
	return "other"
}
