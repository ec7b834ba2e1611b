package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// BenchmarkRunTrueVsBwrap measures `perimeter run -- true` as a whole
// process (start-up, probe, create, exec, terminate, exit) against
// `bwrap --unshare-all --ro-bind / / true` (Debian's bubblewrap), run in
// pairs, alternately, so that both see the same machine. It reports the
// medians and their ratio (x-bwrap); the goal is at most 2. It also times
// `perimeter --version` in the same rotation (version-ms, version-x-bwrap):
// the CLI's start alone, which `run` pays before doing anything, and which
// the init in the sandbox pays again (it is the same binary); and a Go
// program that does nothing (empty-go-ms, empty-go-x-bwrap), the least any
// Go process costs on this machine, of which `run` has two.
//
//	go test -run '^$' -bench RunTrueVsBwrap ./cmd/perimeter
func BenchmarkRunTrueVsBwrap(b *testing.B) {
	bwrap, err := exec.LookPath("bwrap")
	if err != nil {
		b.Skip("the baseline is bwrap (Debian's bubblewrap package), which is not installed")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		b.Skip("the go command builds the CLI for this benchmark and is not on PATH")
	}
	bin := filepath.Join(b.TempDir(), "perimeter")
	if out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	empty := filepath.Join(b.TempDir(), "empty")
	src := b.TempDir()
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module empty\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	build := exec.Command(goTool, "build", "-o", empty, ".")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("go build (empty program): %v\n%s", err, out)
	}
	env := append(os.Environ(), "TMPDIR="+b.TempDir())
	run := func(name string, args ...string) time.Duration {
		cmd := exec.Command(name, args...)
		cmd.Env = env
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return time.Since(start)
	}
	// One unmeasured pair: the first run of a new binary probes the host.
	run(bwrap, "--unshare-all", "--ro-bind", "/", "/", "true")
	run(bin, "run", "--", "true")

	var base, ours, version, none []time.Duration
	for b.Loop() {
		base = append(base, run(bwrap, "--unshare-all", "--ro-bind", "/", "/", "true"))
		ours = append(ours, run(bin, "run", "--", "true"))
		version = append(version, run(bin, "--version"))
		none = append(none, run(empty))
	}
	median := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2]
	}
	mb, mo := median(base), median(ours)
	b.ReportMetric(float64(mb)/1e6, "bwrap-ms")
	b.ReportMetric(float64(mo)/1e6, "perimeter-ms")
	b.ReportMetric(float64(mo)/float64(mb), "x-bwrap")
	mv := median(version)
	b.ReportMetric(float64(mv)/1e6, "version-ms")
	b.ReportMetric(float64(mv)/float64(mb), "version-x-bwrap")
	mn := median(none)
	b.ReportMetric(float64(mn)/1e6, "empty-go-ms")
	b.ReportMetric(float64(mn)/float64(mb), "empty-go-x-bwrap")
}
