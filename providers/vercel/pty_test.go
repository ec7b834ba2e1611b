package vercel

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

func TestPTYRunsOnATerminalAndResizes(t *testing.T) {
	_, p := newFake(t, nil)
	sb := newSandbox(t, p, nil)
	ctx := ctxT(t)
	res, err := sandbox.Run(ctx, sb.Sandbox, &sandbox.Cmd{
		Args: []string{"sh", "-c", `stty size; [ -t 0 ] && echo tty; echo "$TERM $X"; exit 5`},
		Env:  map[string]string{"X": "y"},
		TTY:  &sandbox.TTY{Rows: 12, Cols: 34},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := strings.ReplaceAll(string(res.Stdout), "\r", "")
	if out != "12 34\ntty\nxterm-256color y\n" || res.Status.Code != 5 {
		t.Errorf("output %q status %+v", out, res.Status)
	}

	pr, pw := io.Pipe()
	defer pw.Close()
	buf := newSyncBuffer()
	proc, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"sh", "-c", `stty -echo; echo ready; read l; stty size; echo "got $l"`},
		TTY: &sandbox.TTY{Rows: 5, Cols: 6}, Stdin: pr, Stdout: buf})
	if err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(buf.String(), "ready") {
		select {
		case <-ctx.Done():
			t.Fatalf("never ready: %q", buf.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := proc.Resize(ctx, 40, 120); err != nil {
		t.Fatal(err)
	}
	io.WriteString(pw, "line\n")
	st, err := proc.Wait(ctx)
	if got := strings.ReplaceAll(buf.String(), "\r", ""); err != nil || !st.Success() || !strings.Contains(got, "40 120\ngot line\n") {
		t.Errorf("after resize: %q %v %v", got, st, err)
	}
	if err := proc.Resize(ctx, 0, 1); !errors.Is(err, sandbox.ErrInvalidArgument) {
		t.Errorf("bad size: %v", err)
	}
}

func TestPTYStdinEOFCancelAndKill(t *testing.T) {
	_, p := newFake(t, nil)
	sb := newSandbox(t, p, nil)
	ctx := ctxT(t)
	res, err := sandbox.Run(ctx, sb.Sandbox, &sandbox.Cmd{Args: []string{"sh", "-c", "stty -echo; wc -c"},
		Stdin: strings.NewReader("abc\n"), TTY: &sandbox.TTY{Rows: 10, Cols: 10}}, nil)
	if err != nil || !strings.Contains(string(res.Stdout), "4") {
		t.Errorf("wc -c of 4 bytes then EOF: %q %v", res.Stdout, err)
	}

	cctx, cancel := context.WithCancel(ctx)
	proc, err := sb.Start(cctx, &sandbox.Cmd{Args: []string{"sleep", "30"}, TTY: &sandbox.TTY{Rows: 10, Cols: 10}})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := proc.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait after cancel: %v", err)
	}

	proc, err = sb.Start(ctx, &sandbox.Cmd{Args: []string{"sleep", "30"}, TTY: &sandbox.TTY{Rows: 10, Cols: 10}})
	if err != nil {
		t.Fatal(err)
	}
	if err := proc.Signal(ctx, sandbox.SIGTERM); !errors.Is(err, sandbox.ErrNotSupported) {
		t.Errorf("SIGTERM on a terminal: %v", err)
	}
	if err := proc.Signal(ctx, sandbox.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if st, err := proc.Wait(ctx); err != nil || st.Signal != sandbox.SIGKILL {
		t.Errorf("after SIGKILL: %+v %v", st, err)
	}
	res, err = sandbox.Run(ctx, sb.Sandbox, &sandbox.Cmd{Args: []string{"sleep", "30"}, Timeout: 200 * time.Millisecond,
		TTY: &sandbox.TTY{Rows: 10, Cols: 10}}, nil)
	if err != nil || !res.Status.TimedOut {
		t.Errorf("timeout on a terminal: %+v %v", res, err)
	}
	if res := run(t, sb, "sh", "-c", "exec 2>&1; ls /nonexistent-dir-x"); res.Status.Code == 0 {
		t.Error("sanity: ls of a missing dir succeeded")
	}
}
