package daytona

import (
	"context"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/perimeter-sdk/perimeter/providers/daytona/daytonafake"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// After a sandbox's whole life and the provider's and fake's Close, no
// goroutine and nothing in the temporary directory is left (the fake's
// sandboxes, its namespace's directories).
func TestNothingLeftBehind(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	before := runtime.NumGoroutine()
	func() {
		f := daytonafake.New(nil)
		defer f.Close()
		p, err := New(&Options{APIKey: f.Token(), APIURL: f.APIURL()})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		ctx := context.Background()
		sb, err := p.Create(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := sb.WriteFile(ctx, "f", strings.NewReader("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := sandbox.Run(ctx, sb, &sandbox.Cmd{Args: []string{"cat", "f"}, Stdin: strings.NewReader("in")}, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := sandbox.Run(ctx, sb, &sandbox.Cmd{Args: []string{"true"}, TTY: &sandbox.TTY{Rows: 2, Cols: 2}}, nil); err != nil {
			t.Fatal(err)
		}
		tun, err := sb.Expose(ctx, 8080, nil)
		if err != nil {
			t.Fatal(err)
		}
		tun.Close()
		proc, err := sb.Start(ctx, &sandbox.Cmd{Args: []string{"sleep", "30"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := sb.Terminate(ctx); err != nil {
			t.Fatal(err)
		}
		proc.Wait(ctx)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines left (from %d):\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
	if ents, _ := os.ReadDir(tmp); len(ents) > 0 {
		t.Errorf("%d entries left in the temporary directory, such as %s", len(ents), ents[0].Name())
	}
}
