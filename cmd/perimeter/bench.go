package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/perimeter-sdk/perimeter/internal/bench"
)

func init() {
	register(&command{
		name:    "bench",
		summary: "measure exec round trip and create+terminate against os/exec, side by side",
		run:     benchCmd,
	})
}

func benchCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("perimeter bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	provider := fs.String("provider", defaultProvider, "provider `URL`")
	n := fs.Int("n", 200, "iterations of each measurement")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	argv := []string{"true"}
	if fs.NArg() > 0 {
		argv = fs.Args()
	}
	if *n < 1 {
		fmt.Fprintln(stderr, "perimeter bench: -n must be at least 1")
		return 2
	}
	ss, ok := newSession(ctx, *provider, false, stderr)
	if !ok {
		return 1
	}
	defer ss.close(ctx, stderr)
	p, sb := ss.p, ss.sb

	execs, err := bench.Interleaved(*n,
		func() error { return bench.OSExec(ctx, argv) },
		func() error { return bench.SandboxExec(ctx, sb, argv) },
	)
	if err != nil {
		fmt.Fprintf(stderr, "perimeter bench: exec: %v\n", err)
		return 1
	}
	creates, err := bench.Interleaved(*n, func() error { return bench.CreateTerminate(ctx, p, nil) })
	if err != nil {
		fmt.Fprintf(stderr, "perimeter bench: create: %v\n", err)
		return 1
	}
	base := bench.Summarize(execs[0])
	viaSandbox := bench.Summarize(execs[1])
	ct := bench.Summarize(creates[0])

	r := func(d time.Duration) time.Duration { return d.Round(time.Microsecond) }
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "MEASUREMENT\tP50\tP99\tMEAN\tRATIO (p50 / os/exec p50)\n")
	fmt.Fprintf(tw, "exec %q via os/exec\t%v\t%v\t%v\t1.00\n", argv, r(base.P50), r(base.P99), r(base.Mean))
	fmt.Fprintf(tw, "exec %q via %s\t%v\t%v\t%v\t%.2f\n", argv, *provider, r(viaSandbox.P50), r(viaSandbox.P99), r(viaSandbox.Mean),
		float64(viaSandbox.P50)/float64(base.P50))
	fmt.Fprintf(tw, "create+terminate via %s\t%v\t%v\t%v\t%.2f\n", *provider, r(ct.P50), r(ct.P99), r(ct.Mean),
		float64(ct.P50)/float64(base.P50))
	tw.Flush()
	fmt.Fprintf(stdout, "%d iterations each, interleaved\n", *n)
	return 0
}
