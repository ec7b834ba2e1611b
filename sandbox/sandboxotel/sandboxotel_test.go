package sandboxotel_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/sandboxotel"
)

// rec records spans and metric points, with the API's no-op types
// underneath for everything it does not record.
type rec struct {
	mu     sync.Mutex
	spans  []*span
	points map[string][]point
}

type point struct {
	value float64
	attrs attribute.Set
}

func (r *rec) add(name string, v float64, opts []metric.RecordOption) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cfg := metric.NewRecordConfig(opts)
	r.points[name] = append(r.points[name], point{v, cfg.Attributes()})
}

type tracerProvider struct {
	tracenoop.TracerProvider
	r *rec
}

func (p tracerProvider) Tracer(string, ...trace.TracerOption) trace.Tracer { return tracer{r: p.r} }

type tracer struct {
	tracenoop.Tracer
	r *rec
}

func (t tracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	s := &span{name: name, attrs: map[attribute.Key]attribute.Value{}}
	cfg := trace.NewSpanStartConfig(opts...)
	for _, kv := range cfg.Attributes() {
		s.attrs[kv.Key] = kv.Value
	}
	t.r.mu.Lock()
	t.r.spans = append(t.r.spans, s)
	t.r.mu.Unlock()
	return trace.ContextWithSpan(ctx, s), s
}

type span struct {
	tracenoop.Span
	name   string
	attrs  map[attribute.Key]attribute.Value
	status codes.Code
	ended  bool
}

func (s *span) SetAttributes(kv ...attribute.KeyValue) {
	for _, a := range kv {
		s.attrs[a.Key] = a.Value
	}
}
func (s *span) SetStatus(c codes.Code, _ string) { s.status = c }
func (s *span) End(...trace.SpanEndOption)       { s.ended = true }
func (s *span) IsRecording() bool                { return true }

type meterProvider struct {
	metricnoop.MeterProvider
	r *rec
}

func (p meterProvider) Meter(string, ...metric.MeterOption) metric.Meter { return meter{r: p.r} }

type meter struct {
	metricnoop.Meter
	r *rec
}

func (m meter) Float64Histogram(name string, _ ...metric.Float64HistogramOption) (metric.Float64Histogram, error) {
	return histogram{name: name, r: m.r}, nil
}

func (m meter) Int64Counter(name string, _ ...metric.Int64CounterOption) (metric.Int64Counter, error) {
	return counter{name: name, r: m.r}, nil
}

type histogram struct {
	metricnoop.Float64Histogram
	name string
	r    *rec
}

func (h histogram) Record(_ context.Context, v float64, opts ...metric.RecordOption) {
	h.r.add(h.name, v, opts)
}

type counter struct {
	metricnoop.Int64Counter
	name string
	r    *rec
}

func (c counter) Add(_ context.Context, v int64, opts ...metric.AddOption) {
	ro := make([]metric.RecordOption, 0, len(opts))
	for _, o := range opts {
		if r, ok := o.(metric.RecordOption); ok {
			ro = append(ro, r)
		}
	}
	c.r.add(c.name, float64(v), ro)
}

func TestSpansAndMetrics(t *testing.T) {
	r := &rec{points: map[string][]point{}}
	h, err := sandboxotel.New(&sandboxotel.Options{TracerProvider: tracerProvider{r: r}, MeterProvider: meterProvider{r: r}})
	require.NoError(t, err)
	ctx := context.Background()

	spanCtx, end := h.Begin(ctx, sandbox.Op{Provider: "demo", Sandbox: "sb-1", Name: "exec"})
	assert.NotEqual(t, ctx, spanCtx, "the operation runs under its span")
	end(sandbox.Outcome{Status: &sandbox.ExitStatus{Code: 2}, FirstByte: 3 * time.Millisecond})

	_, end = h.Begin(ctx, sandbox.Op{Provider: "demo", Sandbox: "sb-1", Name: "read file"})
	end(sandbox.Outcome{Err: sandbox.NewError("demo", "sb-1", "read file", sandbox.ErrNotFound, errors.New("x")), Bytes: 0})
	_, end = h.Begin(ctx, sandbox.Op{Provider: "demo", Sandbox: "sb-1", Name: "write file"})
	end(sandbox.Outcome{Bytes: 42})

	require.Len(t, r.spans, 3)
	exec := r.spans[0]
	assert.Equal(t, "sandbox exec", exec.name)
	assert.True(t, exec.ended)
	assert.Equal(t, "sb-1", exec.attrs[sandboxotel.AttrSandbox].AsString())
	assert.Equal(t, "failure", exec.attrs[sandboxotel.AttrOutcome].AsString())
	assert.EqualValues(t, 2, exec.attrs[sandboxotel.AttrExitCode].AsInt64())
	assert.Equal(t, codes.Unset, exec.status, "a non-zero exit is a result, not an error")
	read := r.spans[1]
	assert.Equal(t, codes.Error, read.status)
	assert.Equal(t, "not found", read.attrs[sandboxotel.AttrErrorType].AsString())

	assert.Len(t, r.points[sandboxotel.MetricDuration], 3)
	require.Len(t, r.points[sandboxotel.MetricTimeToFirstByte], 1)
	assert.InDelta(t, 0.003, r.points[sandboxotel.MetricTimeToFirstByte][0].value, 1e-9)
	require.Len(t, r.points[sandboxotel.MetricExits], 1)
	outcome, _ := r.points[sandboxotel.MetricExits][0].attrs.Value(sandboxotel.AttrOutcome)
	assert.Equal(t, "failure", outcome.AsString())
	require.Len(t, r.points[sandboxotel.MetricFileBytes], 1)
	assert.EqualValues(t, 42, r.points[sandboxotel.MetricFileBytes][0].value)
	kind, _ := r.points[sandboxotel.MetricDuration][1].attrs.Value(sandboxotel.AttrErrorType)
	assert.Equal(t, "not found", kind.AsString())
}

func TestNewWithTheGlobalNoopProviders(t *testing.T) {
	h, err := sandboxotel.New(nil)
	require.NoError(t, err)
	_, end := h.Begin(context.Background(), sandbox.Op{Provider: "demo", Name: "create"})
	end(sandbox.Outcome{})
}
