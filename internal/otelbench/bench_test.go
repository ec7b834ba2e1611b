package otelbench

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/perimeter-sdk/perimeter/providers/local"
	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/sandboxotel"
)

// paths holds one sandbox reached three ways: its driver directly, the
// portable layer without hooks, and the portable layer with hooks that
// report to the OpenTelemetry SDK.
type paths struct {
	direct   *local.Sandbox
	portable *sandbox.Sandbox
	otel     *sandbox.Sandbox
	tracer   *sdktrace.TracerProvider
	spans    *tracetest.InMemoryExporter
	reader   *metric.ManualReader
}

func setup(tb testing.TB) *paths {
	tb.Helper()
	ctx := context.Background()
	d, err := local.NewDriver(&local.Options{Root: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	plain := sandbox.NewProvider(d, nil)
	tb.Cleanup(func() { plain.Close() })

	spans := tracetest.NewInMemoryExporter()
	// A batching processor, as production hosts install; the exporter keeps
	// spans in memory and is reset as the benchmark goes.
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(spans))
	tb.Cleanup(func() { tp.Shutdown(context.Background()) })
	reader := metric.NewManualReader()
	mp := metric.NewMeterProvider(metric.WithReader(reader))
	tb.Cleanup(func() { mp.Shutdown(context.Background()) })
	hooks, err := sandboxotel.New(&sandboxotel.Options{TracerProvider: tp, MeterProvider: mp})
	if err != nil {
		tb.Fatal(err)
	}
	observed := sandbox.NewProvider(d, &sandbox.ProviderOptions{Hooks: hooks})

	sb, err := plain.Create(ctx, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { sb.Terminate(context.Background()) })
	var direct *local.Sandbox
	if !sb.As(&direct) {
		tb.Fatal("the local sandbox does not give its driver through As")
	}
	osb, err := observed.Get(ctx, sb.ID())
	if err != nil {
		tb.Fatal(err)
	}
	return &paths{direct: direct, portable: sb, otel: osb, tracer: tp, spans: spans, reader: reader}
}

var trueCmd = []string{"/bin/true"}

func execDirect(ctx context.Context, s *local.Sandbox, out *bytes.Buffer) error {
	p, err := s.Start(ctx, &sandbox.Cmd{Args: trueCmd, Stdout: out, Stderr: out})
	if err != nil {
		return err
	}
	_, err = p.Wait(ctx)
	return err
}

func execPortable(ctx context.Context, s *sandbox.Sandbox, out *bytes.Buffer) error {
	p, err := s.Start(ctx, &sandbox.Cmd{Args: trueCmd, Stdout: out, Stderr: out})
	if err != nil {
		return err
	}
	_, err = p.Wait(ctx)
	return err
}

// TestHooksRecord checks that the benchmark's observed path really reports
// to the SDK (a span and an exec duration per command), so the benchmark
// measures instrumentation that does its work.
func TestHooksRecord(t *testing.T) {
	ctx := context.Background()
	ps := setup(t)
	var out bytes.Buffer
	for range 3 {
		if err := execPortable(ctx, ps.otel, &out); err != nil {
			t.Fatal(err)
		}
	}
	var rm metricdata.ResourceMetrics
	if err := ps.reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			names = append(names, m.Name)
		}
	}
	if len(names) == 0 {
		t.Fatal("no metrics reached the SDK's reader after three execs through the hooks")
	}
	if err := ps.tracer.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(ps.spans.GetSpans()); n < 3 {
		t.Fatalf("%d spans reached the SDK's exporter after three execs through the hooks, want at least 3", n)
	}
}

// BenchmarkLayerCost runs /bin/true in one local sandbox three ways per
// iteration, rotating the order, and reports each path's median time and the
// layer's overhead over the direct path (portable-%, otel-%).
func BenchmarkLayerCost(b *testing.B) {
	ctx := context.Background()
	ps := setup(b)
	var out bytes.Buffer
	run := []func() error{
		func() error { return execDirect(ctx, ps.direct, &out) },
		func() error { return execPortable(ctx, ps.portable, &out) },
		func() error { return execPortable(ctx, ps.otel, &out) },
	}
	// Warm up each path once (first exec pays for page faults).
	for _, f := range run {
		if err := f(); err != nil {
			b.Fatal(err)
		}
	}
	times := make([][]time.Duration, len(run))
	i := 0
	for b.Loop() {
		for k := range run {
			j := (i + k) % len(run)
			out.Reset()
			t0 := time.Now()
			if err := run[j](); err != nil {
				b.Fatal(err)
			}
			times[j] = append(times[j], time.Since(t0))
		}
		i++
		if i%500 == 0 {
			ps.spans.Reset()
		}
	}
	med := func(d []time.Duration) float64 {
		s := slices.Clone(d)
		slices.Sort(s)
		return float64(s[len(s)/2])
	}
	direct, portable, observed := med(times[0]), med(times[1]), med(times[2])
	b.ReportMetric(direct, "direct-ns")
	b.ReportMetric(portable, "portable-ns")
	b.ReportMetric(observed, "otel-ns")
	b.ReportMetric(100*(portable-direct)/direct, "portable-%")
	b.ReportMetric(100*(observed-direct)/direct, "otel-%")
}

// BenchmarkHooksSDK is the hooks' own cost per exec with the SDK installed
// (a batching span processor and a metric reader): what the observed path
// adds to an exec, without the exec. Compare with direct-ns above.
func BenchmarkHooksSDK(b *testing.B) {
	ctx := context.Background()
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	defer tp.Shutdown(ctx)
	mp := metric.NewMeterProvider(metric.WithReader(metric.NewManualReader()))
	defer mp.Shutdown(ctx)
	hooks, err := sandboxotel.New(&sandboxotel.Options{TracerProvider: tp, MeterProvider: mp})
	if err != nil {
		b.Fatal(err)
	}
	op := sandbox.Op{Provider: "local", Sandbox: "sb-1", Name: "exec"}
	st := &sandbox.ExitStatus{}
	b.ReportAllocs()
	for b.Loop() {
		_, end := hooks.Begin(ctx, op)
		end(sandbox.Outcome{Status: st, FirstByte: time.Millisecond})
	}
}
