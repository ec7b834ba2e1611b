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
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: perimeter bench [flags] [CMD [ARGS...]]")
		fmt.Fprintln(fs.Output(), "\nMeasures running CMD (default: true) through os/exec and in one sandbox,")
		fmt.Fprintln(fs.Output(), "interleaved, then creating and terminating sandboxes. Flags go before CMD.")
		fs.PrintDefaults()
	}
	argv, code, ok := parseFlags(fs, args, 0)
	if !ok {
		return code
	}
	if len(argv) == 0 {
		argv = []string{"true"}
	}
	if *n < 1 {
		fmt.Fprintln(stderr, "perimeter bench: -n must be at least 1")
		return 2
	}
	ss, code := newSession(ctx, *provider, false, nil, stderr)
	if ss == nil {
		return code
	}
	defer ss.close(ctx, stderr)
	p, sb := ss.p, ss.sb

	prog := newProgress(stderr, 2**n)
	fail := func(what string, err error) int {
		prog.done()
		if interrupted(ctx) {
			return 130
		}
		printErr(stderr, "perimeter bench: "+what, err)
		return 1
	}
	execs, err := bench.Interleaved(*n,
		func() error { return bench.OSExec(ctx, argv) },
		func() error { prog.step("exec"); return bench.SandboxExec(ctx, sb, argv) },
	)
	if err != nil {
		return fail("exec", err)
	}
	creates, err := bench.Interleaved(*n, func() error { prog.step("create+terminate"); return bench.CreateTerminate(ctx, p, nil) })
	if err != nil {
		return fail("create", err)
	}
	prog.done()
	return benchReport(stdout, *provider, argv, *n, execs, creates)
}

// progress shows how far a long measurement is, on a terminal only.
type progress struct {
	w     io.Writer // nil: not a terminal
	total int
	n     int
	last  time.Time
}

func newProgress(stderr io.Writer, total int) *progress {
	if !isTerminal(stderr) {
		return &progress{}
	}
	return &progress{w: stderr, total: total}
}

// step counts one iteration of what and redraws the line at most ten
// times a second.
func (p *progress) step(what string) {
	if p.w == nil {
		return
	}
	p.n++
	if now := time.Now(); now.Sub(p.last) >= 100*time.Millisecond || p.n == p.total {
		p.last = now
		fmt.Fprintf(p.w, "\r\033[K[%d/%d] %s", p.n, p.total, what)
	}
}

// done clears the progress line.
func (p *progress) done() {
	if p.w != nil {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

// benchReport prints the measurements as a table.
func benchReport(stdout io.Writer, provider string, argv []string, n int, execs, creates [][]time.Duration) int {
	base := bench.Summarize(execs[0])
	viaSandbox := bench.Summarize(execs[1])
	ct := bench.Summarize(creates[0])

	r := func(d time.Duration) time.Duration { return d.Round(time.Microsecond) }
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "MEASUREMENT\tP50\tP99\tMEAN\tRATIO (p50 / os/exec p50)\n")
	fmt.Fprintf(tw, "exec %q via os/exec\t%v\t%v\t%v\t1.00\n", argv, r(base.P50), r(base.P99), r(base.Mean))
	fmt.Fprintf(tw, "exec %q via %s\t%v\t%v\t%v\t%.2f\n", argv, provider, r(viaSandbox.P50), r(viaSandbox.P99), r(viaSandbox.Mean),
		float64(viaSandbox.P50)/float64(base.P50))
	fmt.Fprintf(tw, "create+terminate via %s\t%v\t%v\t%v\t%.2f\n", provider, r(ct.P50), r(ct.P99), r(ct.Mean),
		float64(ct.P50)/float64(base.P50))
	tw.Flush()
	fmt.Fprintf(stdout, "%d iterations each, interleaved\n", n)
	return 0
}
