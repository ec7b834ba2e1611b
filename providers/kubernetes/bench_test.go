package kubernetes_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/perimeter-sdk/perimeter/providers/kubernetes"
	_ "github.com/perimeter-sdk/perimeter/providers/local"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// The benchmarks run each operation on the test cluster and, side by side,
// on the local provider (the baseline), for ratios:
//
//	go test -run '^$' -bench . -benchtime 5x ./providers/kubernetes
//
// (TestMain starts the cluster for them as for the tests, and runs them
// inside the cluster's network namespace.) The local provider's sandboxes
// do not start inside a namespace made by `ip netns exec` (their init dies
// with "epollwait on fd 8 failed with 9"), so there the local baseline
// skips and says so; run it on the host, against the same cluster
// directory, with PERIMETER_K8S_DIR set and -bench /local.

var openSpec = func() *sandbox.Spec { return &sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}} }

func local(b *testing.B) *sandbox.Provider {
	if inClusterNetns() {
		b.Skip("the local provider's sandboxes do not start inside the cluster's network namespace: run the local baseline on the host (see the comment at the top of bench_test.go)")
	}
	p, err := sandbox.Open(context.Background(), "local://"+b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	return p
}

// inClusterNetns reports whether the process runs in the test cluster's
// network namespace (the one PERIMETER_K8S_DIR names).
func inClusterNetns() bool {
	dir := os.Getenv("PERIMETER_K8S_DIR")
	if dir == "" {
		return false
	}
	ns, err := os.ReadFile(filepath.Join(dir, "ns"))
	if err != nil {
		return false
	}
	var a, b syscall.Stat_t
	if syscall.Stat("/proc/self/ns/net", &a) != nil || syscall.Stat(filepath.Join("/run/netns", strings.TrimSpace(string(ns))), &b) != nil {
		return false
	}
	return a.Ino == b.Ino && a.Dev == b.Dev
}

// providers returns the providers compared, by name, each opened when its
// sub-benchmark runs.
func providers() []struct {
	name string
	open func(b *testing.B) *sandbox.Provider
} {
	return []struct {
		name string
		open func(b *testing.B) *sandbox.Provider
	}{{"local", local}, {"pod", func(b *testing.B) *sandbox.Provider { return open(b, kubernetes.ModePod, "") }}}
}

func BenchmarkCreate(b *testing.B) {
	ctx := context.Background()
	run := func(b *testing.B, p *sandbox.Provider, spec func() *sandbox.Spec) {
		for b.Loop() {
			sb, err := p.Create(ctx, spec())
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if err := sb.Terminate(ctx); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	}
	b.Run("local", func(b *testing.B) { run(b, local(b), func() *sandbox.Spec { return nil }) })
	b.Run("pod", func(b *testing.B) { run(b, open(b, kubernetes.ModePod, ""), openSpec) })
	b.Run("agent-sandbox", func(b *testing.B) { run(b, open(b, kubernetes.ModeAgentSandbox, ""), openSpec) })
	b.Run("warm-pool-claim", func(b *testing.B) {
		tmpl := warmPool(b, 2)
		run(b, open(b, kubernetes.ModeAgentSandbox, tmpl), openSpec)
	})
}

func BenchmarkExecRoundTrip(b *testing.B) {
	ctx := context.Background()
	for _, pr := range providers() {
		b.Run(pr.name, func(b *testing.B) {
			p := pr.open(b)
			spec := openSpec()
			if pr.name == "local" {
				spec = nil
			}
			sb, err := p.Create(ctx, spec)
			if err != nil {
				b.Fatal(err)
			}
			defer sb.Terminate(ctx)
			for b.Loop() {
				res, err := sandbox.Run(ctx, sb, &sandbox.Cmd{Args: []string{"echo", "hi"}}, nil)
				if err != nil || string(res.Stdout) != "hi\n" {
					b.Fatalf("echo: %q %v", res.Stdout, err)
				}
			}
		})
	}
}

func BenchmarkCopy64MiB(b *testing.B) {
	ctx := context.Background()
	data := bytes.Repeat([]byte("perimeter"), 64<<20/9+1)[:64<<20]
	for _, pr := range providers() {
		b.Run(pr.name, func(b *testing.B) {
			p := pr.open(b)
			spec := openSpec()
			if pr.name == "local" {
				spec = nil
			}
			sb, err := p.Create(ctx, spec)
			if err != nil {
				b.Fatal(err)
			}
			defer sb.Terminate(ctx)
			b.SetBytes(2 * int64(len(data)))
			for b.Loop() {
				if err := sb.WriteFile(ctx, "big", bytes.NewReader(data), 0o644); err != nil {
					b.Fatal(err)
				}
				r, err := sb.ReadFile(ctx, "big")
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, r)
				r.Close()
				if err != nil || n != int64(len(data)) {
					b.Fatalf("read back %d bytes: %v", n, err)
				}
			}
		})
	}
}
