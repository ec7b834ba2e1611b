// Package conformance is the public test battery every Perimeter provider
// passes. It drives a provider's driver through the portable layer of package
// sandbox, as host code does, so a third party implements the small
// interfaces of package sandbox/driver and wraps them with
// sandbox.NewProvider. A provider's whole conformance test is a harness and
// one call, in a file such as myprovider/conformance_test.go:
//
//	package myprovider_test
//
//	import (
//		"context"
//		"io/fs"
//		"testing"
//
//		"github.com/perimeter-sdk/perimeter/conformance"
//		"github.com/perimeter-sdk/perimeter/sandbox"
//
//		"example.com/myprovider"
//	)
//
//	func TestConformance(t *testing.T) {
//		d, err := myprovider.NewDriver(context.Background(), nil)
//		if err != nil {
//			t.Fatal(err)
//		}
//		p := sandbox.NewProvider(d, nil)
//		t.Cleanup(func() { p.Close() })
//		conformance.Run(t, &conformance.Harness{
//			Provider:    p,
//			NativeError: func() any { return new(*fs.PathError) }, // optional
//			Open: func(ctx context.Context) (*sandbox.Provider, error) { // optional
//				d, err := myprovider.NewDriver(ctx, nil)
//				if err != nil {
//					return nil, err
//				}
//				return sandbox.NewProvider(d, nil), nil
//			},
//		}, nil)
//	}
//
// and the same battery as a command is [Main], ten lines of a main package
// (the perimeter CLI's "conformance" command is [Command]); the module in
// conformance/testdata/thirdparty does both.
//
// Each check has a stable ID (group/name, such as "exec/stdin") and a level:
// a MUST failure fails the test; a SHOULD failure is logged. Capabilities are
// verified both ways: an ability the provider claims must work, and one it does
// not claim must fail with sandbox.ErrNotSupported. A check whose promise
// cannot be tested (the ability is declared absent, the provider honestly
// refuses the Spec field it needs, or the harness lacks something it needs)
// is reported as not applicable ([NotApplicable]) with the reason, never as a
// pass; in go test it is a skipped subtest. docs/conformance.md maps every
// promise of the contract to its check.
//
// [RunChecks] runs the same battery without the testing package and returns a
// [Report], which prints as a table or as JSON with the passed, failed and
// not applicable checks counted apart.
//
// The checks assume a POSIX userland inside the sandbox: sh, cat, env,
// printf, head, ln, sleep, touch, and stty for the PTY checks. The ports
// checks start HTTP servers with python3; the network checks connect with
// bash, then with python3 try TCP, Multipath TCP and UDP over IPv4 and IPv6
// (a protocol this machine's kernel lacks is noted as untested); a harness
// can change the HTTP server and the bash command.
//
// Every sandbox the suite creates carries the labels "perimeter.conformance"
// and "perimeter.conformance.run" (the run's ID), and is terminated when its
// check ends, pass or fail; at the end of a run, leftovers carrying the run's
// label are terminated too. The exec/env-host check sets the variable
// PERIMETER_CONFORMANCE_HOST_SECRET in the process running the suite, to
// prove it does not reach commands.
package conformance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// Harness is the provider under test and how to exercise it.
type Harness struct {
	// Provider is the provider under test: a driver wrapped by
	// sandbox.NewProvider (or opened with sandbox.Open). The suite does not
	// close it.
	Provider *sandbox.Provider

	// Spec, if set, returns the base spec of the sandboxes the suite creates
	// (an image with a POSIX userland, say). The suite adds its labels and,
	// per check, the fields it exercises.
	Spec func() *sandbox.Spec

	// NativeError, if set, returns a pointer to a variable of the provider's
	// native error type (such as **fs.PathError); the errors/native check
	// asserts that a missing file's error reaches it with errors.As.
	NativeError func() any

	// HTTPServer returns the argv of a command that serves the files of its
	// working directory over HTTP on port, on all interfaces. Nil means
	// python3 -m http.server.
	HTTPServer func(port int) []string

	// Connect returns the argv of a command that exits 0 if and only if a TCP
	// connection to host:port succeeds. Nil means bash's /dev/tcp.
	Connect func(host string, port int) []string

	// Open, if set, opens another Provider of the same kind, reaching the
	// same sandboxes as Provider; the lifecycle/close-keeps-sandboxes check
	// closes it to prove that Provider.Close leaves sandboxes running. Nil
	// makes that check not applicable.
	Open func(ctx context.Context) (*sandbox.Provider, error)
}

// Level says how binding a check is.
type Level string

// Levels, as in RFC 2119.
const (
	MUST   Level = "MUST"
	SHOULD Level = "SHOULD"
)

// Options configures a run. Nil means defaults.
type Options struct {
	// Run, if set, is a regular expression; only checks whose ID matches it
	// run.
	Run string
	// Timeout bounds each check; zero means 10 minutes (a bound on a hung provider, not on a slow one).
	Timeout time.Duration
	// Parallel is how many checks run at once, each in its own sandboxes;
	// zero means GOMAXPROCS, at most 4 (as go test's -parallel), and 1 runs
	// them one after another.
	Parallel int
	// OnStart and OnResult, if set, are called for each check in the
	// battery's order, from the goroutine that called RunChecks: OnStart
	// when the run starts waiting for the check's result, OnResult when it
	// has it.
	OnStart  func(CheckInfo)
	OnResult func(Result)
}

// CheckInfo describes a check.
type CheckInfo struct {
	ID    string `json:"id"`
	Level Level  `json:"level"`
	Title string `json:"title"`
}

type check struct {
	CheckInfo
	fn func(c *C)
}

// Checks lists every check in the order they run.
func Checks() []CheckInfo {
	out := make([]CheckInfo, len(allChecks))
	for i, ch := range allChecks {
		out[i] = ch.CheckInfo
	}
	return out
}

// Run runs the battery as subtests of t, one per check, named by check ID. A
// MUST failure fails its subtest; a SHOULD failure is logged; a check that
// does not apply is skipped with its reason. Checks run concurrently
// (Options.Parallel) and are reported in order; a check whose subtest
// go test -run leaves out is not run, but one started ahead of it may be.
// Under go test -short, unless Options.Run chooses, only a smoke set of
// checks runs (one or two for each part of the contract) and the others
// are skipped saying so.
func Run(t *testing.T, h *Harness, opts *Options) {
	t.Helper()
	if opts == nil {
		opts = &Options{}
	}
	checks, err := selectChecks(opts.Run)
	if err != nil {
		t.Fatal(err)
	}
	all := checks
	if testing.Short() && opts.Run == "" {
		checks = slices.DeleteFunc(slices.Clone(checks), func(ch check) bool { return !smoke[ch.ID] })
		t.Logf("conformance: -short runs the smoke set, %d of %d checks; without -short the whole battery runs", len(checks), len(all))
	}
	r := newRunner(h, opts)
	b := r.batch(checks)
	t.Cleanup(func() {
		b.wait() // a check started ahead of a subtest that did not run still ends before the sweep
		if err := r.sweep(); err != nil {
			t.Errorf("conformance: sweeping leftovers: %v", err)
		}
	})
	i := 0
	for _, ch := range all {
		if i == len(checks) || checks[i].ID != ch.ID {
			t.Run(ch.ID, func(t *testing.T) { t.Skip("-short: not in the smoke set") })
			continue
		}
		n := i
		i++
		t.Run(ch.ID, func(t *testing.T) {
			// Start this check and the next ones, up to Options.Parallel
			// at once; a subtest that go test -run leaves out starts none.
			for k := n; k < min(n+r.parallel(), len(checks)); k++ {
				b.launch(k)
			}
			res := b.result(n)
			for _, l := range res.Log {
				t.Log(l)
			}
			switch {
			case res.Outcome == NotApplicable:
				t.Skipf("n/a: %s", res.Message)
			case res.Outcome == Pass:
			case ch.Level == MUST:
				t.Errorf("%s %s: %s", ch.Level, ch.ID, res.Message)
			default:
				t.Logf("SHOULD-level check failed (not failing the test): %s", res.Message)
			}
		})
	}
}

// smoke is the set of checks Run runs under go test -short (unless
// Options.Run chooses): one or two for each part of the contract, for an
// edit-and-test loop; the whole battery runs without -short.
var smoke = map[string]bool{
	"lifecycle/create": true, "lifecycle/terminate-stops-processes": true,
	"exec/exit-codes": true, "exec/stdout-stderr": true, "exec/stdin": true, "exec/env": true,
	"exec/cancel-kills-tree": true, "exec/signal": true,
	"files/binary-roundtrip": true, "files/ops": true, "files/dotdot": true, "files/symlink-escape": true,
	"errors/message": true, "ports/dial": true, "pty/run": true, "network/none": true,
}

// RunChecks runs the battery without the testing package and reports every
// check's outcome, in the battery's order. The error is for a run that could
// not start (a bad Options.Run) or was cancelled through ctx; failed checks
// are in the report.
func RunChecks(ctx context.Context, h *Harness, opts *Options) (*Report, error) {
	if opts == nil {
		opts = &Options{}
	}
	checks, err := selectChecks(opts.Run)
	if err != nil {
		return nil, err
	}
	r := newRunner(h, opts)
	r.parent = ctx
	rep := &Report{RunID: r.runID, Started: time.Now().UTC()}
	b := r.batch(checks)
	for i := range checks {
		b.launch(i)
	}
	for i, ch := range checks {
		if opts.OnStart != nil {
			opts.OnStart(ch.CheckInfo)
		}
		res := b.result(i)
		rep.Results = append(rep.Results, res)
		if opts.OnResult != nil {
			opts.OnResult(res)
		}
	}
	if err := r.sweep(); err != nil {
		rep.SweepError = err.Error()
	}
	rep.Finished = time.Now().UTC()
	rep.Summary = rep.Summarize()
	return rep, ctx.Err()
}

func (r *runner) parallel() int {
	if r.opts.Parallel <= 0 {
		return min(4, runtime.GOMAXPROCS(0))
	}
	return r.opts.Parallel
}

// batch is a set of checks run at most Options.Parallel at once, each started
// by launch and its result taken by result.
type batch struct {
	r       *runner
	checks  []check
	sem     chan struct{}
	once    []sync.Once
	results []chan Result
	wg      sync.WaitGroup
}

func (r *runner) batch(checks []check) *batch {
	b := &batch{r: r, checks: checks, sem: make(chan struct{}, r.parallel()),
		once: make([]sync.Once, len(checks)), results: make([]chan Result, len(checks))}
	for i := range b.results {
		b.results[i] = make(chan Result, 1)
	}
	return b
}

// launch starts check i, once, when a slot is free.
func (b *batch) launch(i int) {
	b.once[i].Do(func() {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			b.sem <- struct{}{}
			defer func() { <-b.sem }()
			ch := b.checks[i]
			if err := b.r.parent.Err(); err != nil {
				b.results[i] <- Result{CheckInfo: ch.CheckInfo, Outcome: Fail,
					Message: fmt.Sprintf("not run: the run was cancelled (%v)", err)}
				return
			}
			b.results[i] <- b.r.run(ch)
		}()
	})
}

// result launches check i if needed and waits for its result.
func (b *batch) result(i int) Result {
	b.launch(i)
	return <-b.results[i]
}

// wait waits for every launched check to end.
func (b *batch) wait() { b.wg.Wait() }

func selectChecks(pattern string) ([]check, error) {
	if pattern == "" {
		return allChecks, nil
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, fmt.Errorf("conformance: Options.Run: %w", err)
	}
	var out []check
	for _, ch := range allChecks {
		if re.MatchString(ch.ID) {
			out = append(out, ch)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("conformance: Options.Run %q matches no check", pattern)
	}
	return out, nil
}

// Labels the suite puts on every sandbox it creates.
const (
	LabelSuite = "perimeter.conformance"
	LabelRun   = "perimeter.conformance.run"
)

type runner struct {
	h      *Harness
	opts   *Options
	runID  string
	parent context.Context
}

func newRunner(h *Harness, opts *Options) *runner {
	var b [6]byte
	rand.Read(b[:])
	return &runner{h: h, opts: opts, runID: hex.EncodeToString(b[:]), parent: context.Background()}
}

// run executes one check in its own goroutine, so that C.Fatalf can end it
// with runtime.Goexit, then runs its cleanups.
func (r *runner) run(ch check) Result {
	timeout := r.opts.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	ctx, cancel := context.WithTimeout(r.parent, timeout)
	defer cancel()
	c := &C{r: r, ctx: ctx, id: ch.ID}
	start := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if v := recover(); v != nil {
				buf := make([]byte, 4096)
				buf = buf[:runtime.Stack(buf, false)]
				c.fail(fmt.Sprintf("panic: %v\n%s", v, buf))
			}
		}()
		ch.fn(c)
	}()
	<-done
	c.runCleanups()
	if ctx.Err() == context.DeadlineExceeded && !c.failed() {
		c.fail(fmt.Sprintf("check did not finish within %v (the provider hung; the last step is in the log)", timeout))
	}
	res := Result{
		CheckInfo: ch.CheckInfo,
		Outcome:   Pass,
		Message:   strings.Join(c.errs, "; "),
		Log:       c.logs,
		Duration:  time.Since(start),
	}
	switch {
	case c.failed():
		res.Outcome = Fail
	case c.na != "":
		res.Outcome = NotApplicable
		res.Message = c.na
	}
	res.Passed = res.Outcome == Pass
	return res
}

// sweep terminates sandboxes of this run that are still listed.
func (r *runner) sweep() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var errs []string
	for info, err := range r.h.Provider.List(ctx, &sandbox.ListOptions{Labels: map[string]string{LabelRun: r.runID}}) {
		if err != nil {
			errs = append(errs, "list: "+err.Error())
			break
		}
		if info.State == sandbox.StateTerminated {
			continue
		}
		sb, err := r.h.Provider.Get(ctx, info.ID)
		if err != nil {
			continue
		}
		if err := sb.Terminate(ctx); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// C is the state of one running check: its context, its verdict and its
// cleanups. Fatalf ends the check.
type C struct {
	r   *runner
	ctx context.Context
	id  string

	mu       sync.Mutex
	errs     []string
	logs     []string
	na       string
	cleanups []func()
}

// NotApplicable ends the check as not applicable, with the reason. Failures
// recorded before it still fail the check.
func (c *C) NotApplicable(format string, args ...any) {
	c.mu.Lock()
	c.na = fmt.Sprintf(format, args...)
	c.mu.Unlock()
	runtime.Goexit()
}

// Context returns the check's context, which ends at the check's timeout.
func (c *C) Context() context.Context { return c.ctx }

func (c *C) fail(msg string) {
	c.mu.Lock()
	c.errs = append(c.errs, msg)
	c.mu.Unlock()
}

func (c *C) failed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.errs) > 0
}

// Errorf records a failure and lets the check go on.
func (c *C) Errorf(format string, args ...any) { c.fail(fmt.Sprintf(format, args...)) }

// Fatalf records a failure and ends the check. It must be called from the
// check's own goroutine.
func (c *C) Fatalf(format string, args ...any) {
	c.fail(fmt.Sprintf(format, args...))
	runtime.Goexit()
}

// Logf records a note shown with the result.
func (c *C) Logf(format string, args ...any) {
	c.mu.Lock()
	c.logs = append(c.logs, fmt.Sprintf(format, args...))
	c.mu.Unlock()
}

// Cleanup registers f to run when the check ends, last registered first.
func (c *C) Cleanup(f func()) {
	c.mu.Lock()
	c.cleanups = append(c.cleanups, f)
	c.mu.Unlock()
}

func (c *C) runCleanups() {
	for {
		c.mu.Lock()
		n := len(c.cleanups)
		if n == 0 {
			c.mu.Unlock()
			return
		}
		f := c.cleanups[n-1]
		c.cleanups = c.cleanups[:n-1]
		c.mu.Unlock()
		func() {
			defer func() {
				if v := recover(); v != nil {
					c.fail(fmt.Sprintf("panic in cleanup: %v", v))
				}
			}()
			f()
		}()
	}
}

// spec returns the harness's base spec with the suite's labels.
func (c *C) spec() *sandbox.Spec {
	var s sandbox.Spec
	if c.r.h.Spec != nil {
		if base := c.r.h.Spec(); base != nil {
			s = *base
		}
	}
	labels := map[string]string{}
	for k, v := range s.Labels {
		labels[k] = v
	}
	labels[LabelSuite] = "1"
	labels[LabelRun] = c.r.runID
	s.Labels = labels
	return &s
}

// NewSandbox creates a sandbox from the harness's spec, changed by edit if not
// nil, and terminates it when the check ends. A failure to create ends the
// check; a failure to terminate fails it.
func (c *C) NewSandbox(edit func(*sandbox.Spec)) *sandbox.Sandbox {
	sb, err := c.create(edit)
	if err != nil {
		c.Fatalf("Create: %v", err)
	}
	return sb
}

// create is NewSandbox returning the Create error instead of ending the check.
func (c *C) create(edit func(*sandbox.Spec)) (*sandbox.Sandbox, error) {
	spec := c.spec()
	if edit != nil {
		edit(spec)
	}
	sb, err := c.r.h.Provider.Create(c.ctx, spec)
	if err != nil {
		return nil, err
	}
	if sb == nil {
		c.Fatalf("Create returned a nil sandbox and a nil error")
	}
	c.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := sb.Terminate(ctx); err != nil {
			c.Errorf("Terminate in cleanup: %v", err)
		}
	})
	return sb, nil
}
