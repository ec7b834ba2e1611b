package vercel

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/perimeter-sdk/perimeter/providers/vercel/vercelfake"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// After a sandbox's whole life and the provider's Close, no goroutine, temp
// file or fake directory is left.
func TestNothingLeftBehind(t *testing.T) {
	// A private TMPDIR: other test processes (toolexec runs its battery on
	// this adapter) create and remove spool files in the shared one.
	t.Setenv("TMPDIR", t.TempDir())
	before := runtime.NumGoroutine()
	spools := func() int {
		m, _ := filepath.Glob(filepath.Join(os.TempDir(), "perimeter-vercel-*"))
		return len(m)
	}
	spoolsBefore := spools()
	var root string
	func() {
		f := vercelfake.New(nil)
		defer f.Close()
		p, err := New(&Options{TeamID: f.TeamID(), ProjectID: f.ProjectID(), Token: StaticToken(f.Token()), BaseURL: f.URL()})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		ctx := context.Background()
		ps, err := p.Create(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		sb := testSandbox{Sandbox: ps}
		root = filepath.Dir(filepath.Dir(sbHostDir(t, sb)))
		if fi, err := os.Stat(root); err != nil || !fi.IsDir() || !strings.Contains(root, "vercelfake-") {
			t.Fatalf("cannot find the fake's directory (got %q): %v", root, err)
		}
		sb.WriteFile(ctx, "f", strings.NewReader("x"), 0o644)
		run(t, sb, "cat", "f")
		sandbox.Run(ctx, sb.Sandbox, &sandbox.Cmd{Args: []string{"true"}, TTY: &sandbox.TTY{Rows: 2, Cols: 2}}, nil)
		proc, _ := sb.Start(ctx, &sandbox.Cmd{Args: []string{"sleep", "30"}})
		sb.Terminate(ctx)
		proc.Wait(ctx)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines left (from %d):\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
	if n := spools(); n != spoolsBefore {
		t.Errorf("%d temporary upload files left", n-spoolsBefore)
	}
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Errorf("the fake's directory %s is still there: %v", root, err)
	}
}

// sbHostDir finds the fake's host directory of sb through the fake's own
// view: the session's cwd is either /vercel/sandbox (isolated: the host
// directory is the source of the last mount there, the one on top) or the
// host directory itself.
func sbHostDir(t *testing.T, sb testSandbox) string {
	res := run(t, sb, "sh", "-c", "cat /proc/self/mountinfo | grep -F ' /vercel/sandbox ' | cut -d' ' -f4; pwd")
	lines := strings.Split(strings.TrimSpace(string(res.Stdout)), "\n")
	if len(lines) >= 2 && lines[len(lines)-1] == "/vercel/sandbox" {
		return lines[len(lines)-2]
	}
	return lines[len(lines)-1]
}
