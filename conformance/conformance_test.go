package conformance_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"iter"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/conformance"
	"github.com/perimeter-sdk/perimeter/providers/local"
	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

// newLocal returns the local provider's driver in its unisolated mode: the
// broken variants below claim abilities (a PTY, network none) that the
// isolated mode really has, to prove the checks catch a claim that is not
// kept.
func newLocal(t *testing.T) *local.Provider {
	t.Helper()
	p, err := local.NewDriver(&local.Options{Root: t.TempDir(), Unisolated: true})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

// harness is the suite's harness for a driver of the unisolated local
// provider, which runs plain host processes and so asks for open egress.
func harness(d driver.Provider) *conformance.Harness {
	return &conformance.Harness{
		Provider: sandbox.NewProvider(d, nil),
		Spec: func() *sandbox.Spec {
			return &sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}}
		},
	}
}

func TestChecksHaveUniqueIDsAndLevels(t *testing.T) {
	seen := map[string]bool{}
	for _, ch := range conformance.Checks() {
		assert.False(t, seen[ch.ID], "duplicate check ID %s", ch.ID)
		seen[ch.ID] = true
		assert.Contains(t, []conformance.Level{conformance.MUST, conformance.SHOULD}, ch.Level, ch.ID)
		assert.Regexp(t, `^[a-z]+/[a-z0-9-]+$`, ch.ID)
		assert.NotEmpty(t, ch.Title, ch.ID)
	}
}

func TestRunChecksReportsAndSweeps(t *testing.T) {
	p := newLocal(t)
	var started, ended []string
	rep, err := conformance.RunChecks(context.Background(), harness(p), &conformance.Options{
		Run:      "^lifecycle/|^exec/exit-codes$",
		OnStart:  func(ci conformance.CheckInfo) { started = append(started, ci.ID) },
		OnResult: func(r conformance.Result) { ended = append(ended, r.ID) },
	})
	require.NoError(t, err)
	assert.True(t, rep.OK(), "failures: %+v", rep.Failed(""))
	assert.Equal(t, started, ended)
	assert.Len(t, rep.Results, 6)

	var table bytes.Buffer
	require.NoError(t, rep.WriteTable(&table))
	assert.Contains(t, table.String(), "lifecycle/create")
	assert.Contains(t, table.String(), "6 passed, 0 failed (MUST)")

	var js bytes.Buffer
	require.NoError(t, rep.WriteJSON(&js))
	var back conformance.Report
	require.NoError(t, json.Unmarshal(js.Bytes(), &back))
	assert.Equal(t, rep.Results[0].ID, back.Results[0].ID)

	for info, err := range p.List(context.Background(), &sandbox.ListOptions{}) {
		require.NoError(t, err)
		t.Errorf("sandbox %s left behind after the run", info.ID)
	}
}

func TestRunChecksRejectsBadPattern(t *testing.T) {
	_, err := conformance.RunChecks(context.Background(), harness(newLocal(t)), &conformance.Options{Run: "("})
	assert.ErrorContains(t, err, "Options.Run")
	_, err = conformance.RunChecks(context.Background(), harness(newLocal(t)), &conformance.Options{Run: "^nothing$"})
	assert.ErrorContains(t, err, "matches no check")
}

// ---- deliberately broken providers: each must be caught by its check.

// broken wraps the local provider, letting a test replace parts of its
// sandboxes' behaviour.
type broken struct {
	*local.Provider
	wrap func(driver.Sandbox) driver.Sandbox
}

func (b *broken) Create(ctx context.Context, spec *sandbox.Spec) (driver.Sandbox, error) {
	sb, err := b.Provider.Create(ctx, spec)
	if err != nil {
		return nil, err
	}
	return b.wrap(sb), nil
}

func (b *broken) Get(ctx context.Context, id string) (driver.Sandbox, error) {
	sb, err := b.Provider.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return b.wrap(sb), nil
}

func (b *broken) List(ctx context.Context, opts *sandbox.ListOptions) iter.Seq2[sandbox.Info, error] {
	return b.Provider.List(ctx, opts)
}

type startFunc func(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error)

// sb overrides chosen methods of a real sandbox.
type sb struct {
	driver.Sandbox
	start     startFunc
	readFile  func(ctx context.Context, name string) (io.ReadCloser, error)
	caps      func(sandbox.Capabilities) sandbox.Capabilities
	terminate func(ctx context.Context) error
	expose    func(ctx context.Context, port int, opts *sandbox.ExposeOptions) (driver.Tunnel, error)
}

func (s *sb) Start(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error) {
	if s.start != nil {
		return s.start(ctx, cmd)
	}
	return s.Sandbox.Start(ctx, cmd)
}

func (s *sb) ReadFile(ctx context.Context, name string) (io.ReadCloser, error) {
	if s.readFile != nil {
		return s.readFile(ctx, name)
	}
	return s.Sandbox.ReadFile(ctx, name)
}

func (s *sb) Capabilities() sandbox.Capabilities {
	if s.caps != nil {
		return s.caps(s.Sandbox.Capabilities())
	}
	return s.Sandbox.Capabilities()
}

func (s *sb) Terminate(ctx context.Context) error {
	if s.terminate != nil {
		return s.terminate(ctx)
	}
	return s.Sandbox.Terminate(ctx)
}

func (s *sb) Expose(ctx context.Context, port int, opts *sandbox.ExposeOptions) (driver.Tunnel, error) {
	if s.expose != nil {
		return s.expose(ctx, port, opts)
	}
	return s.Sandbox.Expose(ctx, port, opts)
}

// exitZero reports every command as a success.
type exitZero struct{ driver.Process }

func (p exitZero) Wait(ctx context.Context) (sandbox.ExitStatus, error) {
	st, err := p.Process.Wait(ctx)
	st.Code = 0
	return st, err
}

type fakeTunnel struct{}

func (fakeTunnel) URL() string  { return "http://127.0.0.1:1" }
func (fakeTunnel) Close() error { return nil }
func (fakeTunnel) As(any) bool  { return false }

func TestBrokenProvidersAreCaught(t *testing.T) {
	cases := []struct {
		name  string
		check string
		wrap  func(real driver.Sandbox) *sb
	}{
		{"stderr swallowed", "exec/stdout-stderr", func(r driver.Sandbox) *sb {
			return &sb{Sandbox: r, start: func(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error) {
				c := *cmd
				c.Stderr = nil
				return r.Start(ctx, &c)
			}}
		}},
		{"stderr merged into stdout", "exec/stdout-stderr", func(r driver.Sandbox) *sb {
			return &sb{Sandbox: r, start: func(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error) {
				c := *cmd
				c.Stderr = cmd.Stdout
				return r.Start(ctx, &c)
			}}
		}},
		{"TextOutput declared by a byte-exact provider", "exec/stdout-stderr", func(r driver.Sandbox) *sb {
			return &sb{Sandbox: r, caps: func(c sandbox.Capabilities) sandbox.Capabilities { c.TextOutput = true; return c }}
		}},
		{"env ignored", "exec/env", func(r driver.Sandbox) *sb {
			return &sb{Sandbox: r, start: func(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error) {
				c := *cmd
				c.Env = nil
				return r.Start(ctx, &c)
			}}
		}},
		{"exit code wrong", "exec/exit-codes", func(r driver.Sandbox) *sb {
			return &sb{Sandbox: r, start: func(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error) {
				p, err := r.Start(ctx, cmd)
				if err != nil {
					return nil, err
				}
				return exitZero{p}, nil
			}}
		}},
		{"command not found is an error", "exec/exit-codes", func(r driver.Sandbox) *sb {
			return &sb{Sandbox: r, start: func(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error) {
				if strings.HasPrefix(cmd.Args[0], "perimeter-") {
					return nil, errors.New("exec: not found")
				}
				return r.Start(ctx, cmd)
			}}
		}},
		{"stdin dropped", "exec/stdin", func(r driver.Sandbox) *sb {
			return &sb{Sandbox: r, start: func(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error) {
				c := *cmd
				if c.Stdin != nil {
					c.Stdin = io.LimitReader(c.Stdin, 1000)
				}
				return r.Start(ctx, &c)
			}}
		}},
		{"ErrNotFound missing", "files/not-found", func(r driver.Sandbox) *sb {
			return &sb{Sandbox: r, readFile: func(ctx context.Context, name string) (io.ReadCloser, error) {
				rc, err := r.ReadFile(ctx, name)
				if err != nil {
					return nil, errors.New("read failed: " + err.Error())
				}
				return rc, nil
			}}
		}},
		{"cancel ignored", "exec/cancel-kills-tree", func(r driver.Sandbox) *sb {
			return &sb{Sandbox: r, start: func(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error) {
				return r.Start(context.WithoutCancel(ctx), cmd)
			}}
		}},
		{"timeout ignored", "exec/timeout", func(r driver.Sandbox) *sb {
			return &sb{Sandbox: r, start: func(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error) {
				c := *cmd
				c.Timeout = 0
				return r.Start(ctx, &c)
			}}
		}},
		{"output buffered until exit", "exec/large-output", func(r driver.Sandbox) *sb {
			return &sb{Sandbox: r, start: func(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error) {
				c := *cmd
				var buf bytes.Buffer
				c.Stdout = &buf
				p, err := r.Start(ctx, &c)
				if err != nil {
					return nil, err
				}
				return &flushOnExit{Process: p, buf: &buf, w: cmd.Stdout}, nil
			}}
		}},
		{"PTY claimed but not working", "pty/run", func(r driver.Sandbox) *sb {
			return &sb{Sandbox: r, caps: func(c sandbox.Capabilities) sandbox.Capabilities { c.PTY = true; return c }}
		}},
		{"Pause claimed but not working", "caps/pause", func(r driver.Sandbox) *sb {
			return &sb{Sandbox: r, caps: func(c sandbox.Capabilities) sandbox.Capabilities { c.Pause = true; return c }}
		}},
		{"Expose claimed but serving nothing", "ports/expose", func(r driver.Sandbox) *sb {
			return &sb{Sandbox: r, expose: func(ctx context.Context, port int, opts *sandbox.ExposeOptions) (driver.Tunnel, error) {
				return fakeTunnel{}, nil
			}}
		}},
		{"network none claimed but not enforced", "network/none", func(r driver.Sandbox) *sb {
			return &sb{Sandbox: r, caps: func(c sandbox.Capabilities) sandbox.Capabilities {
				c.NetworkModes = append(c.NetworkModes, sandbox.NetworkNone)
				return c
			}}
		}},
		{"terminate not idempotent", "lifecycle/terminate-idempotent", func() func(r driver.Sandbox) *sb {
			var mu sync.Mutex
			done := map[string]bool{} // shared by every handle
			return func(r driver.Sandbox) *sb {
				return &sb{Sandbox: r, terminate: func(ctx context.Context) error {
					mu.Lock()
					again := done[r.ID()]
					done[r.ID()] = true
					mu.Unlock()
					if again {
						return errors.New("already terminated")
					}
					return r.Terminate(ctx)
				}}
			}
		}()},
		{"file data truncated", "files/binary-roundtrip", func(r driver.Sandbox) *sb {
			return &sb{Sandbox: r, readFile: truncatingRead(r)}
		}},
		{"large file truncated", "files/large", func(r driver.Sandbox) *sb {
			return &sb{Sandbox: r, readFile: truncatingRead(r)}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			base := newLocal(t)
			// network/none needs the provider to accept the mode too.
			var prov driver.Provider = &broken{Provider: base, wrap: func(s driver.Sandbox) driver.Sandbox { return tc.wrap(s) }}
			if tc.check == "network/none" {
				prov = &acceptAnyNetwork{broken: prov.(*broken)}
			}
			rep, err := conformance.RunChecks(context.Background(), harness(prov),
				&conformance.Options{Run: "^" + tc.check + "$"})
			require.NoError(t, err)
			require.Len(t, rep.Results, 1)
			res := rep.Results[0]
			assert.False(t, res.Passed, "check %s did not catch %q", tc.check, tc.name)
			t.Logf("%s caught it: %s", tc.check, res.Message)
		})
	}
}

// acceptAnyNetwork creates sandboxes whatever the network mode, giving them
// open egress.
type acceptAnyNetwork struct{ *broken }

func (a *acceptAnyNetwork) Create(ctx context.Context, spec *sandbox.Spec) (driver.Sandbox, error) {
	s := *spec
	s.Network = &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}
	return a.broken.Create(ctx, &s)
}

func truncatingRead(r driver.Sandbox) func(ctx context.Context, name string) (io.ReadCloser, error) {
	return func(ctx context.Context, name string) (io.ReadCloser, error) {
		rc, err := r.ReadFile(ctx, name)
		if err != nil {
			return nil, err
		}
		fi, err := r.Stat(ctx, name)
		if err != nil {
			return nil, err
		}
		return struct {
			io.Reader
			io.Closer
		}{io.LimitReader(rc, fi.Size-1), rc}, nil
	}
}

// flushOnExit delivers a command's output only once it has exited.
type flushOnExit struct {
	driver.Process
	buf *bytes.Buffer
	w   io.Writer
}

func (f *flushOnExit) Wait(ctx context.Context) (sandbox.ExitStatus, error) {
	st, err := f.Process.Wait(ctx)
	if f.w != nil {
		f.w.Write(f.buf.Bytes())
	}
	return st, err
}
