package local

import (
	"bytes"
	"context"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/sandboxotel"
)

// Run side by side:
//
//	go test -run '^$' -bench . -benchtime 200x ./providers/local/
//
// BenchmarkExec compares one exec round trip of /bin/true through an
// isolated sandbox's agent with plain os/exec, the L0 mode and bubblewrap.

func BenchmarkExec(b *testing.B) {
	ctx := context.Background()
	b.Run("os-exec", func(b *testing.B) {
		for b.Loop() {
			if err := exec.Command("/bin/true").Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
	run := func(b *testing.B, sb any) {
		for b.Loop() {
			res, err := sandbox.Run(ctx, portable(sb), &sandbox.Cmd{Args: []string{"/bin/true"}}, nil)
			if err != nil || !res.Status.Success() {
				b.Fatal(err, res)
			}
		}
	}
	b.Run("isolated", func(b *testing.B) {
		run(b, create(b, newIsolated(b), nil))
	})
	b.Run("isolated-L1", func(b *testing.B) {
		run(b, create(b, newL1(b), nil))
	})
	b.Run("unisolated-L0", func(b *testing.B) {
		p, err := New(&Options{Root: b.TempDir(), Unisolated: true})
		if err != nil {
			b.Fatal(err)
		}
		run(b, create(b, p, nil))
	})
	b.Run("bwrap", func(b *testing.B) {
		bw, err := exec.LookPath("bwrap")
		if err != nil {
			b.Skip("bubblewrap (bwrap) is not installed on this machine: no comparison")
		}
		for b.Loop() {
			if err := exec.Command(bw, "--unshare-all", "--unshare-user", "--uid", "1000", "--cap-drop", "ALL",
				"--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
				"--symlink", "usr/lib64", "/lib64", "--proc", "/proc", "--dev", "/dev", "/bin/true").Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkCreate measures creating an isolated sandbox until its agent
// answers, and reports the median and 99th percentile.
func BenchmarkCreate(b *testing.B) {
	ctx := context.Background()
	p := newIsolated(b)
	var times []time.Duration
	for b.Loop() {
		start := time.Now()
		sb, err := p.Create(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		times = append(times, time.Since(start))
		b.StopTimer()
		sb.Terminate(ctx)
		b.StartTimer()
	}
	reportPercentiles(b, times, "create")
}

// BenchmarkCreateExecTerminate is a sandbox's whole life with one command,
// the figure to hold against one `runc run` of true (about 80 ms here).
func BenchmarkCreateExecTerminate(b *testing.B) {
	ctx := context.Background()
	p := newIsolated(b)
	var times []time.Duration
	for b.Loop() {
		start := time.Now()
		sb, err := p.Create(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := sandbox.Run(ctx, portable(sb), &sandbox.Cmd{Args: []string{"/bin/true"}}, nil); err != nil {
			b.Fatal(err)
		}
		if err := sb.Terminate(ctx); err != nil {
			b.Fatal(err)
		}
		times = append(times, time.Since(start))
	}
	reportPercentiles(b, times, "life")
}

// BenchmarkWriteFile64MiB writes 64 MiB into an isolated sandbox's workspace
// through the files API.
func BenchmarkWriteFile64MiB(b *testing.B) {
	ctx := context.Background()
	sb := create(b, newIsolated(b), nil)
	data := bytes.Repeat([]byte("perimeter"), (64<<20)/9+1)[:64<<20]
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := sb.WriteFile(ctx, "big.bin", bytes.NewReader(data), 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

func reportPercentiles(b *testing.B, times []time.Duration, name string) {
	if len(times) == 0 {
		return
	}
	slices.Sort(times)
	pct := func(p float64) float64 {
		i := int(p * float64(len(times)-1))
		return float64(times[i].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), name+"-p50-ms")
	b.ReportMetric(pct(0.99), name+"-p99-ms")
}

// BenchmarkExecInterleaved alternates one plain os/exec and one isolated
// exec of /bin/true per iteration, so that both see the same machine load,
// and reports each mean and their ratio (the target is <= 1.3). Both
// capture stdout and stderr, as an exec through the API does;
// BenchmarkExec/os-exec is the bare fork, exec and wait.
func BenchmarkExecInterleaved(b *testing.B) {
	ctx := context.Background()
	sb := create(b, newIsolated(b), nil)
	var plain, iso time.Duration
	for b.Loop() {
		// The same round trip: start, wait, and capture stdout and stderr.
		t0 := time.Now()
		var stdout, stderr bytes.Buffer
		c := exec.Command("/bin/true")
		c.Stdout, c.Stderr = &stdout, &stderr
		if err := c.Run(); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		res, err := sandbox.Run(ctx, portable(sb), &sandbox.Cmd{Args: []string{"/bin/true"}}, nil)
		if err != nil || !res.Status.Success() {
			b.Fatal(err, res)
		}
		iso += time.Since(t1)
		plain += t1.Sub(t0)
	}
	n := float64(b.N)
	b.ReportMetric(float64(plain.Microseconds())/n, "os-exec-us")
	b.ReportMetric(float64(iso.Microseconds())/n, "isolated-us")
	b.ReportMetric(float64(iso)/float64(plain), "ratio")
}

// BenchmarkLayerExec measures what the portable layer adds to an exec, with
// OpenTelemetry hooks installed (the API's no-op default, as in a host that
// installed no SDK): each iteration runs /bin/true once through the driver
// directly and once through the portable sandbox, interleaved so both see
// the same machine load, and reports the layer's share (the target is under
// 2%).
func BenchmarkLayerExec(b *testing.B) {
	ctx := context.Background()
	hooks, err := sandboxotel.New(nil)
	if err != nil {
		b.Fatal(err)
	}
	d, err := NewDriver(&Options{Root: b.TempDir(), RequireLevel: LevelNamespaces})
	if err != nil {
		b.Fatal(err)
	}
	p := sandbox.NewProvider(d, &sandbox.ProviderOptions{Hooks: hooks})
	sb, err := p.Create(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sb.Terminate(context.Background()) })
	var ds *Sandbox
	if !sb.As(&ds) {
		b.Fatal("As(**Sandbox)")
	}
	exec := func(start func(*sandbox.Cmd) (interface {
		Wait(context.Context) (sandbox.ExitStatus, error)
	}, error)) {
		var stdout, stderr bytes.Buffer
		pr, err := start(&sandbox.Cmd{Args: []string{"/bin/true"}, Stdout: &stdout, Stderr: &stderr})
		if err != nil {
			b.Fatal(err)
		}
		if st, err := pr.Wait(ctx); err != nil || !st.Success() {
			b.Fatal(st, err)
		}
	}
	var direct, layered time.Duration
	for b.Loop() {
		t0 := time.Now()
		exec(func(c *sandbox.Cmd) (interface {
			Wait(context.Context) (sandbox.ExitStatus, error)
		}, error) {
			return ds.Start(ctx, c)
		})
		t1 := time.Now()
		exec(func(c *sandbox.Cmd) (interface {
			Wait(context.Context) (sandbox.ExitStatus, error)
		}, error) {
			return sb.Start(ctx, c)
		})
		layered += time.Since(t1)
		direct += t1.Sub(t0)
	}
	n := float64(b.N)
	b.ReportMetric(float64(direct.Microseconds())/n, "driver-us")
	b.ReportMetric(float64(layered.Microseconds())/n, "portable-us")
	b.ReportMetric(100*(float64(layered)/float64(direct)-1), "overhead-%")
}
