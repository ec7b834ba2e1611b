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
// turns, so that all see the same machine. It reports the medians and their
// ratios to bwrap (x-bwrap); the goal is at most 2. The CLI is built as the
// README builds it, static (CGO_ENABLED=0), and as `go run` and a plain
// `go build` do where a C compiler is installed, linked against libc
// (cgo-ms, cgo-x-bwrap). In the same rotation, the floors under the
// target: `perimeter --version` (version-ms), the CLI's start alone, which
// `run` pays before doing anything and the init in the sandbox pays again
// (it is the same binary); a Go program that does nothing (empty-go-ms), the
// least any Go process costs on this machine, of which `run` has two; and
// testdata/localonly (local-only-ms), the same open, create, run and
// terminate as `run` in a static program that links only the core and the
// local provider: what `run` costs from a binary with no cloud SDK in it;
// and testdata/gopair (go-pair-ms), a small Go program that starts itself
// again in the namespaces the local init gets, which runs `true`: the least
// any sandbox costs whose launcher and init are Go programs; with -direct
// (go-direct-ms), `true` is PID 1 there itself: the least for a Go launcher
// whose init is not a Go program.
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
	// build builds the package in dir (the current one when "") and returns
	// the binary's path.
	build := func(name, dir, pkg string, static bool) string {
		out := filepath.Join(b.TempDir(), name)
		cmd := exec.Command(goTool, "build", "-o", out, pkg)
		cmd.Dir = dir
		if static {
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		}
		if msg, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("go build %s: %v\n%s", pkg, err, msg)
		}
		return out
	}
	src := b.TempDir()
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module empty\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	bin, cgoBin := build("perimeter", "", ".", true), build("perimeter", "", ".", false)
	empty := build("empty", src, ".", true)
	localOnly := build("localonly", "", "./testdata/localonly", true)
	goPair := build("gopair", "", "./testdata/gopair", true)
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
	run(cgoBin, "run", "--", "true")

	var base, ours, cgo, version, none, lean, pair, direct []time.Duration
	for b.Loop() {
		base = append(base, run(bwrap, "--unshare-all", "--ro-bind", "/", "/", "true"))
		ours = append(ours, run(bin, "run", "--", "true"))
		cgo = append(cgo, run(cgoBin, "run", "--", "true"))
		version = append(version, run(bin, "--version"))
		none = append(none, run(empty))
		lean = append(lean, run(localOnly, "true"))
		pair = append(pair, run(goPair, "true"))
		direct = append(direct, run(goPair, "-direct", "true"))
	}
	median := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2]
	}
	mb := median(base)
	b.ReportMetric(float64(mb)/1e6, "bwrap-ms")
	report := func(ds []time.Duration, name string) {
		m := median(ds)
		b.ReportMetric(float64(m)/1e6, name+"-ms")
		b.ReportMetric(float64(m)/float64(mb), name+"-x-bwrap")
	}
	mo := median(ours)
	b.ReportMetric(float64(mo)/1e6, "perimeter-ms")
	b.ReportMetric(float64(mo)/float64(mb), "x-bwrap")
	report(cgo, "cgo")
	report(version, "version")
	report(none, "empty-go")
	report(lean, "local-only")
	report(pair, "go-pair")
	report(direct, "go-direct")
}
