package local

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newTestLogger(w *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(&lockedWriter{w: w}, nil))
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// testSandbox is a portable sandbox with its driver at hand, for the
// local-only accessors and internals the tests inspect.
type testSandbox struct {
	*sandbox.Sandbox
	d *Sandbox
}

func (s testSandbox) Isolation() Isolation { return s.d.Isolation() }
func (s testSandbox) Workspace() string    { return s.d.Workspace() }

// portable returns the *sandbox.Sandbox of a testSandbox or of a
// *sandbox.Sandbox.
func portable(sb any) *sandbox.Sandbox {
	switch s := sb.(type) {
	case testSandbox:
		return s.Sandbox
	case *sandbox.Sandbox:
		return s
	}
	panic(fmt.Sprintf("portable(%T)", sb))
}

// driverOf returns the local driver behind a portable provider.
func driverOf(p *sandbox.Provider) *Provider {
	var d *Provider
	if !p.As(&d) {
		panic("not a local provider")
	}
	return d
}
