package vercel

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/perimeter-sdk/perimeter/providers/vercel/vercelfake"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

// newFake starts a fake and a provider pointed at it, with fast retries.
func newFake(t testing.TB, fo *vercelfake.Options) (*vercelfake.Server, *sandbox.Provider) {
	t.Helper()
	f := vercelfake.New(fo)
	t.Cleanup(f.Close)
	p, err := New(&Options{
		TeamID: f.TeamID(), ProjectID: f.ProjectID(), Token: StaticToken(f.Token()),
		BaseURL: f.URL(), RetryBackoff: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return f, p
}

// testSandbox is a portable sandbox with its driver at hand.
type testSandbox struct {
	*sandbox.Sandbox
	d *Sandbox
}

func (s testSandbox) SessionID() string { return s.d.SessionID() }
func (s testSandbox) Routes() []Route   { return s.d.Routes() }

// drv returns the driver behind a portable provider.
func drv(p *sandbox.Provider) *Provider {
	var d *Provider
	if !p.As(&d) {
		panic("not a Vercel provider")
	}
	return d
}

func newSandbox(t testing.TB, p *sandbox.Provider, spec *sandbox.Spec) testSandbox {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sb, err := p.Create(ctx, spec)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { sb.Terminate(context.Background()) })
	ts := testSandbox{Sandbox: sb}
	if !sb.As(&ts.d) {
		t.Fatal("As(**Sandbox) failed")
	}
	return ts
}

// ctxT bounds a test's calls generously: each isolated command of the fake
// builds a mount namespace, which takes seconds on a loaded machine.
func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func run(t testing.TB, sb testSandbox, args ...string) *sandbox.Result {
	t.Helper()
	res, err := sandbox.Run(ctxT(t), sb.Sandbox, &sandbox.Cmd{Args: args}, nil)
	if err != nil {
		t.Fatalf("Run %q: %v", args, err)
	}
	return res
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once, that
// signals its first write.
type syncBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	first chan struct{}
	once  sync.Once
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{first: make(chan struct{})} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.once.Do(func() { close(b.first) })
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
