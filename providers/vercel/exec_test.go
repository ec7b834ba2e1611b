package vercel

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/perimeter-sdk/perimeter/providers/vercel/vercelfake"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

func TestExecSeparatesStreamsAndReportsExitCodes(t *testing.T) {
	_, p := newFake(t, nil)
	sb := newSandbox(t, p, &sandbox.Spec{Env: map[string]string{"A": "spec", "B": "spec"}})
	res, err := sandbox.Run(ctxT(t), sb.Sandbox, &sandbox.Cmd{
		Args: []string{"sh", "-c", `printf 'out %s %s' "$A" "$B"; printf 'err' >&2; exit 3`},
		Env:  map[string]string{"B": "cmd"},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status.Code != 3 || string(res.Stdout) != "out spec cmd" || string(res.Stderr) != "err" {
		t.Fatalf("got %+v stdout %q stderr %q", res.Status, res.Stdout, res.Stderr)
	}
	if res := run(t, sb, "perimeter-no-such-program"); res.Status.Code != 127 {
		t.Errorf("missing program: %+v, want 127", res.Status)
	}
}

func TestExecDirAndWorkdir(t *testing.T) {
	_, p := newFake(t, nil)
	sb := newSandbox(t, p, &sandbox.Spec{Workdir: "work/space"})
	if err := sb.MkdirAll(ctxT(t), "sub", 0o755); err != nil {
		t.Fatal(err)
	}
	res, err := sandbox.Run(ctxT(t), sb.Sandbox, &sandbox.Cmd{Args: []string{"pwd"}, Dir: "sub"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := sb.d.dir() + "/sub\n"; string(res.Stdout) != want || !strings.HasSuffix(want, "/work/space/sub\n") {
		t.Errorf("pwd = %q, want %q", res.Stdout, want)
	}
	if _, err := sb.Start(ctxT(t), &sandbox.Cmd{Args: []string{"true"}, Dir: "missing"}); !errors.Is(err, sandbox.ErrInvalidArgument) {
		t.Errorf("missing Dir: %v, want ErrInvalidArgument", err)
	}
	if _, err := sb.Start(ctxT(t), &sandbox.Cmd{Args: []string{"true"}, Dir: "../x"}); !errors.Is(err, sandbox.ErrInvalidArgument) {
		t.Errorf("Dir with ..: %v, want ErrInvalidArgument", err)
	}
}

func TestExecRefusesWhatVercelLacks(t *testing.T) {
	_, p := newFake(t, nil)
	sb := newSandbox(t, p, nil)
	ctx := ctxT(t)
	for name, cmd := range map[string]*sandbox.Cmd{
		"stdin": {Args: []string{"cat"}, Stdin: strings.NewReader("x")},
	} {
		if _, err := sb.Start(ctx, cmd); !errors.Is(err, sandbox.ErrNotSupported) {
			t.Errorf("%s: %v, want ErrNotSupported", name, err)
		}
	}
	if _, err := sb.Start(ctx, &sandbox.Cmd{}); !errors.Is(err, sandbox.ErrInvalidArgument) {
		t.Errorf("empty argv: %v", err)
	}
	if err := sb.Pause(ctx); !errors.Is(err, sandbox.ErrNotSupported) {
		t.Errorf("Pause: %v", err)
	}
	if _, err := sb.Dial(ctx, 80); !errors.Is(err, sandbox.ErrNotSupported) {
		t.Errorf("Dial: %v", err)
	}
	if _, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"sh"}, TTY: &sandbox.TTY{}}); !errors.Is(err, sandbox.ErrInvalidArgument) {
		t.Errorf("zero TTY size: %v", err)
	}
	if c := sb.Capabilities(); c.Stdin || c.Pause || c.Dial {
		t.Errorf("capabilities claim what the adapter lacks: %+v", c)
	}
}

// The first chunk of a long command's output arrives while it still runs:
// the command waits for a file the test writes only after seeing it.
func TestExecStreamsBeforeTheCommandEnds(t *testing.T) {
	_, p := newFake(t, nil)
	sb := newSandbox(t, p, nil)
	ctx := ctxT(t)
	out := newSyncBuffer()
	proc, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"sh", "-c",
		`seq 1 2000; while [ ! -e go-on ]; do sleep 0.02; done; echo done`}, Stdout: out})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-out.first:
	case <-time.After(20 * time.Second):
		t.Fatal("no output arrived while the command was running")
	}
	wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	if _, err := proc.Wait(wctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the command ended before it was told to: %v", err)
	}
	cancel()
	if err := sb.WriteFile(ctx, "go-on", strings.NewReader(""), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := proc.Wait(ctx)
	if err != nil || !st.Success() {
		t.Fatalf("Wait: %v %v", st, err)
	}
	var want strings.Builder
	for i := 1; i <= 2000; i++ {
		want.WriteString(strconv.Itoa(i) + "\n")
	}
	want.WriteString("done\n")
	if out.String() != want.String() {
		t.Errorf("output of %d bytes differs from the %d expected", len(out.String()), want.Len())
	}
}

// A stream cut mid-way is resumed from the logs route: every byte arrives
// exactly once.
func TestExecResumesADroppedStream(t *testing.T) {
	f, p := newFake(t, nil)
	sb := newSandbox(t, p, nil)
	f.CutStreams(3, 1)
	var stdout, stderr bytes.Buffer
	proc, err := sb.Start(ctxT(t), &sandbox.Cmd{Args: []string{"sh", "-c",
		`for i in $(seq 1 20); do echo out$i; echo err$i >&2; sleep 0.01; done; exit 4`}, Stdout: &stdout, Stderr: &stderr})
	if err != nil {
		t.Fatal(err)
	}
	st, err := proc.Wait(ctxT(t))
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if st.Code != 4 {
		t.Errorf("status %+v, want code 4", st)
	}
	var wantOut, wantErr strings.Builder
	for i := 1; i <= 20; i++ {
		wantOut.WriteString("out" + strconv.Itoa(i) + "\n")
		wantErr.WriteString("err" + strconv.Itoa(i) + "\n")
	}
	if stdout.String() != wantOut.String() || stderr.String() != wantErr.String() {
		t.Errorf("after a resumed stream: stdout %q stderr %q", stdout.String(), stderr.String())
	}
	if n := f.Hits("GET", "/logs"); n != 1 {
		t.Errorf("logs route hit %d times, want 1 resume", n)
	}
}

// A stream that keeps dropping is reported, never silently truncated.
func TestExecReportsAStreamThatCannotBeResumed(t *testing.T) {
	f, p := newFake(t, nil)
	sb := newSandbox(t, p, nil)
	f.CutStreams(2, 100)
	proc, err := sb.Start(ctxT(t), &sandbox.Cmd{Args: []string{"sh", "-c", `for i in $(seq 1 20); do echo $i; sleep 0.01; done`}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = proc.Wait(ctxT(t))
	if !errors.Is(err, sandbox.ErrUnavailable) || !strings.Contains(err.Error(), "output lost") {
		t.Fatalf("Wait: %v, want an ErrUnavailable saying output was lost", err)
	}
}

func TestExecTimeoutKillsAndSaysSo(t *testing.T) {
	_, p := newFake(t, nil)
	sb := newSandbox(t, p, nil)
	start := time.Now()
	res, err := sandbox.Run(ctxT(t), sb.Sandbox, &sandbox.Cmd{Args: []string{"sleep", "30"}, Timeout: 300 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Status.TimedOut || time.Since(start) > 10*time.Second {
		t.Errorf("status %+v after %v, want TimedOut soon after 300ms", res.Status, time.Since(start))
	}
}

func TestExecCancelKillsAndWaitReturnsCtxErr(t *testing.T) {
	_, p := newFake(t, nil)
	sb := newSandbox(t, p, nil)
	ctx, cancel := context.WithCancel(ctxT(t))
	// A background child appends to beat every 20ms until killed.
	out := newSyncBuffer()
	proc, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"sh", "-c",
		`(while :; do echo . >> beat; sleep 0.02; done) & echo started; sleep 30`}, Stdout: out})
	if err != nil {
		t.Fatal(err)
	}
	<-out.first
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := sb.Stat(ctx, "beat"); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the heartbeat never started: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if _, err := proc.Wait(wctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait after cancel: %v, want context.Canceled", err)
	}
	size := func() int64 {
		fi, err := sb.Stat(ctxT(t), "beat")
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size
	}
	a := size()
	time.Sleep(300 * time.Millisecond)
	if b := size(); b != a {
		t.Errorf("the background child still runs after cancel: beat grew from %d to %d", a, b)
	}
}

func TestSignalDeliversAndReportsTheSignal(t *testing.T) {
	_, p := newFake(t, nil)
	sb := newSandbox(t, p, nil)
	ctx := ctxT(t)
	out := newSyncBuffer()
	proc, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"sh", "-c", `echo up; exec sleep 30`}, Stdout: out})
	if err != nil {
		t.Fatal(err)
	}
	<-out.first
	if err := proc.Signal(ctx, sandbox.SIGTERM); err != nil {
		t.Fatal(err)
	}
	st, err := proc.Wait(ctx)
	if err != nil || st.Signal != sandbox.SIGTERM || st.Code != -1 {
		t.Fatalf("after SIGTERM: %+v %v", st, err)
	}
	if err := proc.Signal(ctx, sandbox.SIGTERM); err != nil {
		t.Errorf("Signal after exit: %v", err)
	}
	if err := proc.Signal(ctx, "SIGWHAT"); !errors.Is(err, sandbox.ErrInvalidArgument) {
		t.Errorf("unknown signal: %v", err)
	}
}

func TestLargeAndBinaryOutput(t *testing.T) {
	_, p := newFake(t, nil)
	sb := newSandbox(t, p, nil)
	var n countWriter
	proc, err := sb.Start(ctxT(t), &sandbox.Cmd{Args: []string{"head", "-c", "8000000", "/dev/zero"}, Stdout: &n})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := proc.Wait(ctxT(t)); err != nil || !st.Success() || n.n != 8000000 || n.nonzero {
		t.Fatalf("8 MB of zeros: %v %v, got %d bytes (nonzero %v)", st, err, n.n, n.nonzero)
	}
	// Valid UTF-8 travels exactly; invalid bytes become U+FFFD, because
	// Vercel's log lines are JSON strings.
	res := run(t, sb, "printf", `h\303\251llo \377!`)
	if want := "h\u00e9llo \ufffd!"; string(res.Stdout) != want {
		t.Errorf("stdout %q, want %q", res.Stdout, want)
	}
}

type countWriter struct {
	n       int
	nonzero bool
}

func (w *countWriter) Write(p []byte) (int, error) {
	w.n += len(p)
	if bytes.IndexFunc(p, func(r rune) bool { return r != 0 }) >= 0 {
		w.nonzero = true
	}
	return len(p), nil
}

// A session that stops while a command runs ends the stream with an error
// line; Wait reports it.
func TestSessionStoppingUnderACommand(t *testing.T) {
	f, p := newFake(t, nil)
	sb := newSandbox(t, p, nil)
	out := newSyncBuffer()
	proc, err := sb.Start(ctxT(t), &sandbox.Cmd{Args: []string{"sh", "-c", "echo up; sleep 30"}, Stdout: out})
	if err != nil {
		t.Fatal(err)
	}
	<-out.first
	if !f.StopSession(sb.ID()) {
		t.Fatal("no running session")
	}
	_, err = proc.Wait(ctxT(t))
	if !errors.Is(err, sandbox.ErrUnavailable) || !strings.Contains(err.Error(), "sandbox_stopped") {
		t.Fatalf("Wait: %v, want the stream's sandbox_stopped error", err)
	}
	// The next command resumes the sandbox.
	if res := run(t, sb, "echo", "again"); string(res.Stdout) != "again\n" {
		t.Errorf("after resume: %q", res.Stdout)
	}
}

// Start's ctx bounds the request that starts the command.
func TestStartHonoursCtxBeforeTheCommandStarts(t *testing.T) {
	f, p := newFake(t, nil)
	sb := newSandbox(t, p, nil)
	ctx, cancel := context.WithCancel(ctxT(t))
	cancel()
	if _, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"true"}}); !errors.Is(err, context.Canceled) {
		t.Errorf("Start with a cancelled ctx: %v", err)
	}
	// A command start is never retried (it could run twice): a 429 is the
	// answer, at once, whatever its Retry-After.
	f.Fail(vercelfake.Fault{Path: "/cmd", Status: 429, Code: "rate_limited", RetryAfter: "15", Times: 5})
	before := f.Hits("POST", "/cmd")
	if _, err := sb.Start(ctxT(t), &sandbox.Cmd{Args: []string{"true"}}); !errors.Is(err, sandbox.ErrResourceExhausted) {
		t.Errorf("Start answered 429: %v, want ErrResourceExhausted", err)
	}
	if n := f.Hits("POST", "/cmd") - before; n != 1 {
		t.Errorf("Start answered 429 was sent %d times, want once", n)
	}
	// An idempotent request waiting out a long Retry-After is ended by its
	// ctx.
	f.Fail(vercelfake.Fault{Method: "GET", Path: "/v2/sandboxes/" + sb.ID(), Status: 429, Code: "rate_limited", RetryAfter: "15", Times: 5})
	ctx, cancel = context.WithTimeout(ctxT(t), 200*time.Millisecond)
	defer cancel()
	if _, err := p.Get(ctx, sb.ID()); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Get during a 15s Retry-After with a 200ms ctx: %v", err)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// A Stdout that fails ends the command and Wait says why.
func TestFailingStdoutEndsTheCommand(t *testing.T) {
	_, p := newFake(t, nil)
	sb := newSandbox(t, p, nil)
	start := time.Now()
	proc, err := sb.Start(ctxT(t), &sandbox.Cmd{Args: []string{"sh", "-c", "echo x; sleep 30"}, Stdout: failingWriter{}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = proc.Wait(ctxT(t))
	if err == nil || !strings.Contains(err.Error(), "disk full") || time.Since(start) > 10*time.Second {
		t.Errorf("Wait: %v after %v, want the writer's error promptly", err, time.Since(start))
	}
}
