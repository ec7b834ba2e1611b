package cloudflare

import (
	"context"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/perimeter-sdk/perimeter/providers/cloudflare/cloudflarefake"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// TestNothingLeaks runs commands (finished, cancelled, timed out, on a
// terminal), files and a tunnel, closes everything, and checks the
// goroutines and file descriptors return to what they were.
func TestNothingLeaks(t *testing.T) {
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)
	func() {
		f := cloudflarefake.New(nil)
		defer f.Close()
		ctx := context.Background()
		p, err := New(ctx, &Options{BridgeURL: f.URL(), APIKey: f.APIKey()})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		sb, err := p.Create(ctx, openEgress(&sandbox.Spec{Env: map[string]string{"A": "1"}}))
		if err != nil {
			t.Fatal(err)
		}
		run(t, sb, "echo", "hi")
		res, err := sandbox.Run(ctx, sb, &sandbox.Cmd{Args: []string{"sleep", "60"}, Timeout: 50 * time.Millisecond}, nil)
		if err != nil || !res.Status.TimedOut {
			t.Fatalf("timeout: %v %v", res, err)
		}
		cctx, cancel := context.WithCancel(ctx)
		proc, err := sb.Start(cctx, &sandbox.Cmd{Args: []string{"sleep", "60"}})
		if err != nil {
			t.Fatal(err)
		}
		cancel()
		if _, err := proc.Wait(ctx); err != context.Canceled {
			t.Fatalf("Wait after cancel: %v", err)
		}
		res, err = sandbox.Run(ctx, sb, &sandbox.Cmd{Args: []string{"true"}, TTY: &sandbox.TTY{Rows: 10, Cols: 40}}, nil)
		if err != nil || !res.Status.Success() {
			t.Fatalf("pty: %v %v", res, err)
		}
		if err := sb.WriteFile(ctx, "f", strings.NewReader("x"), 0); err != nil {
			t.Fatal(err)
		}
		rc, err := sb.ReadFile(ctx, "f")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, rc)
		rc.Close()
		tun, err := sb.Expose(ctx, 8080, nil)
		if err != nil {
			t.Fatal(err)
		}
		tun.Close()
		if err := sb.Terminate(ctx); err != nil {
			t.Fatal(err)
		}
	}()
	// Closed connections and ended goroutines go away as their owners
	// notice; wait for that rather than for a fixed time.
	deadline := time.Now().Add(time.Minute)
	for runtime.NumGoroutine() > goroutines || openFDs(t) > fds {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("leak: %d goroutines (was %d), %d fds (was %d)\n%s",
				runtime.NumGoroutine(), goroutines, openFDs(t), fds, buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
		time.Sleep(10 * time.Millisecond)
	}
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
