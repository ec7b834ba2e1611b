package conformance_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"iter"
	"maps"
	"net"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/conformance"
	"github.com/perimeter-sdk/perimeter/providers/local"
	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

// The mutation battery: each mutant wraps the unisolated local provider with
// one plausible adapter bug, and the check named for it must fail at MUST.
// The checks run as the suite runs them (conformance.RunChecks with
// Options.Run selecting the check); nothing here special-cases a mutant. A
// control run of the same wrappers with no bug must not fail any of those
// checks, so a catch is the bug's doing.

// bp is a provider whose parts a mutant may replace; the rest is the real
// driver's.
type bp struct {
	driver.Provider
	wrap   func(driver.Sandbox) driver.Sandbox
	create func(ctx context.Context, spec *sandbox.Spec) (driver.Sandbox, error)
	get    func(ctx context.Context, id string) (driver.Sandbox, error)
	list   func(ctx context.Context, opts *sandbox.ListOptions) iter.Seq2[sandbox.Info, error]
	close  func() error
}

func (p *bp) w(s driver.Sandbox, err error) (driver.Sandbox, error) {
	if err != nil || p.wrap == nil {
		return s, err
	}
	return p.wrap(s), nil
}

func (p *bp) Create(ctx context.Context, spec *sandbox.Spec) (driver.Sandbox, error) {
	if p.create != nil {
		return p.w(p.create(ctx, spec))
	}
	return p.w(p.Provider.Create(ctx, spec))
}

func (p *bp) Get(ctx context.Context, id string) (driver.Sandbox, error) {
	if p.get != nil {
		return p.w(p.get(ctx, id))
	}
	return p.w(p.Provider.Get(ctx, id))
}

func (p *bp) List(ctx context.Context, opts *sandbox.ListOptions) iter.Seq2[sandbox.Info, error] {
	if p.list != nil {
		return p.list(ctx, opts)
	}
	return p.Provider.List(ctx, opts)
}

func (p *bp) Close() error {
	if p.close != nil {
		return p.close()
	}
	return p.Provider.Close()
}

// bs is a sandbox whose methods a mutant may replace. It implements the
// optional interfaces the unisolated local provider claims (Dialer,
// TimeoutExtender), forwarding them.
type bs struct {
	driver.Sandbox
	start     func(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error)
	readFile  func(ctx context.Context, name string) (io.ReadCloser, error)
	writeFile func(ctx context.Context, name string, r io.Reader, perm fs.FileMode) error
	stat      func(ctx context.Context, name string) (sandbox.FileInfo, error)
	readDir   func(ctx context.Context, name string) ([]sandbox.FileInfo, error)
	mkdirAll  func(ctx context.Context, name string, perm fs.FileMode) error
	remove    func(ctx context.Context, name string) error
	removeAll func(ctx context.Context, name string) error
	rename    func(ctx context.Context, from, to string) error
	info      func(ctx context.Context) (sandbox.Info, error)
	caps      func(sandbox.Capabilities) sandbox.Capabilities
	terminate func(ctx context.Context) error
	expose    func(ctx context.Context, port int, opts *sandbox.ExposeOptions) (driver.Tunnel, error)
	extend    func(ctx context.Context, d time.Duration) error
	dial      func(ctx context.Context, port int) (net.Conn, error)
}

func (s *bs) Start(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error) {
	if s.start != nil {
		return s.start(ctx, cmd)
	}
	return s.Sandbox.Start(ctx, cmd)
}

func (s *bs) ReadFile(ctx context.Context, name string) (io.ReadCloser, error) {
	if s.readFile != nil {
		return s.readFile(ctx, name)
	}
	return s.Sandbox.ReadFile(ctx, name)
}

func (s *bs) WriteFile(ctx context.Context, name string, r io.Reader, perm fs.FileMode) error {
	if s.writeFile != nil {
		return s.writeFile(ctx, name, r, perm)
	}
	return s.Sandbox.WriteFile(ctx, name, r, perm)
}

func (s *bs) Stat(ctx context.Context, name string) (sandbox.FileInfo, error) {
	if s.stat != nil {
		return s.stat(ctx, name)
	}
	return s.Sandbox.Stat(ctx, name)
}

func (s *bs) ReadDir(ctx context.Context, name string) ([]sandbox.FileInfo, error) {
	if s.readDir != nil {
		return s.readDir(ctx, name)
	}
	return s.Sandbox.ReadDir(ctx, name)
}

func (s *bs) MkdirAll(ctx context.Context, name string, perm fs.FileMode) error {
	if s.mkdirAll != nil {
		return s.mkdirAll(ctx, name, perm)
	}
	return s.Sandbox.MkdirAll(ctx, name, perm)
}

func (s *bs) Remove(ctx context.Context, name string) error {
	if s.remove != nil {
		return s.remove(ctx, name)
	}
	return s.Sandbox.Remove(ctx, name)
}

func (s *bs) RemoveAll(ctx context.Context, name string) error {
	if s.removeAll != nil {
		return s.removeAll(ctx, name)
	}
	return s.Sandbox.RemoveAll(ctx, name)
}

func (s *bs) Rename(ctx context.Context, from, to string) error {
	if s.rename != nil {
		return s.rename(ctx, from, to)
	}
	return s.Sandbox.Rename(ctx, from, to)
}

func (s *bs) Info(ctx context.Context) (sandbox.Info, error) {
	if s.info != nil {
		return s.info(ctx)
	}
	return s.Sandbox.Info(ctx)
}

func (s *bs) Capabilities() sandbox.Capabilities {
	if s.caps != nil {
		return s.caps(s.Sandbox.Capabilities())
	}
	return s.Sandbox.Capabilities()
}

func (s *bs) Terminate(ctx context.Context) error {
	if s.terminate != nil {
		return s.terminate(ctx)
	}
	return s.Sandbox.Terminate(ctx)
}

func (s *bs) Expose(ctx context.Context, port int, opts *sandbox.ExposeOptions) (driver.Tunnel, error) {
	if s.expose != nil {
		return s.expose(ctx, port, opts)
	}
	return s.Sandbox.Expose(ctx, port, opts)
}

func (s *bs) ExtendTimeout(ctx context.Context, d time.Duration) error {
	if s.extend != nil {
		return s.extend(ctx, d)
	}
	return s.Sandbox.(driver.TimeoutExtender).ExtendTimeout(ctx, d)
}

func (s *bs) DialContext(ctx context.Context, port int) (net.Conn, error) {
	if s.dial != nil {
		return s.dial(ctx, port)
	}
	return s.Sandbox.(driver.Dialer).DialContext(ctx, port)
}

// bproc is a process whose Wait or Signal a mutant may replace.
type bproc struct {
	driver.Process
	wait   func(ctx context.Context) (sandbox.ExitStatus, error)
	signal func(ctx context.Context, sig sandbox.Signal) error
}

func (p *bproc) Wait(ctx context.Context) (sandbox.ExitStatus, error) {
	if p.wait != nil {
		return p.wait(ctx)
	}
	return p.Process.Wait(ctx)
}

func (p *bproc) Signal(ctx context.Context, sig sandbox.Signal) error {
	if p.signal != nil {
		return p.signal(ctx, sig)
	}
	return p.Process.Signal(ctx, sig)
}

// mutant is one broken provider and the check that must catch it.
type mutant struct {
	name, check string
	// build makes the broken provider from a real one; it is called once
	// per provider, so state it keeps is shared by every handle.
	build func(real driver.Provider) driver.Provider
}

// sbx builds a mutant that changes only sandboxes.
func sbx(f func(r driver.Sandbox) *bs) func(driver.Provider) driver.Provider {
	return func(real driver.Provider) driver.Provider {
		return &bp{Provider: real, wrap: func(s driver.Sandbox) driver.Sandbox { return f(s) }}
	}
}

// cmdEdit builds a mutant that changes each command before it starts.
func cmdEdit(edit func(ctx context.Context, c *sandbox.Cmd)) func(driver.Provider) driver.Provider {
	return sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, start: func(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error) {
			c := *cmd
			c.Env = maps.Clone(cmd.Env)
			if c.Env == nil {
				c.Env = map[string]string{}
			}
			edit(ctx, &c)
			return r.Start(ctx, &c)
		}}
	})
}

// procEdit builds a mutant that wraps each process.
func procEdit(f func(p driver.Process) *bproc) func(driver.Provider) driver.Provider {
	return sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, start: func(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error) {
			p, err := r.Start(ctx, cmd)
			if err != nil {
				return nil, err
			}
			return f(p), nil
		}}
	})
}

// statusEdit builds a mutant that rewrites each exit status.
func statusEdit(f func(st sandbox.ExitStatus) sandbox.ExitStatus) func(driver.Provider) driver.Provider {
	return procEdit(func(p driver.Process) *bproc {
		return &bproc{Process: p, wait: func(ctx context.Context) (sandbox.ExitStatus, error) {
			st, err := p.Wait(ctx)
			return f(st), err
		}}
	})
}

// capsEdit builds a mutant that claims what the sandbox does not have.
func capsEdit(f func(c *sandbox.Capabilities)) func(driver.Provider) driver.Provider {
	return sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, caps: func(c sandbox.Capabilities) sandbox.Capabilities { f(&c); return c }}
	})
}

// specEdit builds a mutant that changes the spec before the real Create.
func specEdit(f func(s *sandbox.Spec)) func(driver.Provider) driver.Provider {
	return func(real driver.Provider) driver.Provider {
		return &bp{Provider: real, create: func(ctx context.Context, spec *sandbox.Spec) (driver.Sandbox, error) {
			s := *spec
			f(&s)
			return real.Create(ctx, &s)
		}}
	}
}

func readAll(ctx context.Context, r driver.Sandbox, name string) ([]byte, error) {
	rc, err := r.ReadFile(ctx, name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

type fakeTunnel struct{}

func (fakeTunnel) URL() string  { return "http://127.0.0.1:1" }
func (fakeTunnel) Close() error { return nil }
func (fakeTunnel) As(any) bool  { return false }

// lineWriter passes on complete lines only: a reader that splits output into
// lines and drops what follows the last newline.
type lineWriter struct {
	w   io.Writer
	buf []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	if i := bytes.LastIndexByte(l.buf, '\n'); i >= 0 {
		l.w.Write(l.buf[:i+1])
		l.buf = append([]byte(nil), l.buf[i+1:]...)
	}
	return len(p), nil
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

func truncatingRead(r driver.Sandbox) func(ctx context.Context, name string) (io.ReadCloser, error) {
	return func(ctx context.Context, name string) (io.ReadCloser, error) {
		rc, err := r.ReadFile(ctx, name)
		if err != nil {
			return nil, err
		}
		fi, err := r.Stat(ctx, name)
		if err != nil {
			rc.Close()
			return nil, err
		}
		return struct {
			io.Reader
			io.Closer
		}{io.LimitReader(rc, fi.Size-1), rc}, nil
	}
}

// acceptAnyNetwork creates sandboxes whatever the network mode, giving them
// open egress.
func acceptAnyNetwork(build func(driver.Provider) driver.Provider) func(driver.Provider) driver.Provider {
	return func(real driver.Provider) driver.Provider {
		inner := build(real)
		return &bp{Provider: inner, create: func(ctx context.Context, spec *sandbox.Spec) (driver.Sandbox, error) {
			s := *spec
			s.Network = &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}
			return inner.Create(ctx, &s)
		}}
	}
}

var mutants = []mutant{
	// exec: output
	{"stderr swallowed", "exec/stdout-stderr", cmdEdit(func(_ context.Context, c *sandbox.Cmd) { c.Stderr = nil })},
	{"stderr merged into stdout", "exec/stdout-stderr", cmdEdit(func(_ context.Context, c *sandbox.Cmd) { c.Stderr = c.Stdout })},
	{"TextOutput declared by a byte-exact provider", "exec/stdout-stderr", capsEdit(func(c *sandbox.Capabilities) { c.TextOutput = true })},
	{"output after the last newline dropped", "exec/stdout-stderr", cmdEdit(func(_ context.Context, c *sandbox.Cmd) {
		if c.Stdout != nil {
			c.Stdout = &lineWriter{w: c.Stdout}
		}
	})},
	{"output buffered until exit", "exec/large-output", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, start: func(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error) {
			c := *cmd
			var buf bytes.Buffer
			c.Stdout = &buf
			p, err := r.Start(ctx, &c)
			if err != nil {
				return nil, err
			}
			return &flushOnExit{Process: p, buf: &buf, w: cmd.Stdout}, nil
		}}
	})},
	{"output of concurrent commands goes to the last one started", "exec/concurrent", sbx(func(r driver.Sandbox) *bs {
		var mu sync.Mutex
		var last io.Writer
		return &bs{Sandbox: r, start: func(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error) {
			mu.Lock()
			last = cmd.Stdout
			mu.Unlock()
			c := *cmd
			c.Stdout = writerFunc(func(p []byte) (int, error) {
				mu.Lock()
				w := last
				mu.Unlock()
				if w != nil {
					w.Write(p)
				}
				return len(p), nil
			})
			return r.Start(ctx, &c)
		}}
	})},
	{"commands serialised", "exec/concurrent", sbx(func(r driver.Sandbox) *bs {
		var one sync.Mutex
		return &bs{Sandbox: r, start: func(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error) {
			one.Lock()
			p, err := r.Start(ctx, cmd)
			if err != nil {
				one.Unlock()
				return nil, err
			}
			go func() { p.Wait(context.Background()); one.Unlock() }()
			return p, nil
		}}
	})},

	// exec: environment
	{"Cmd.Env ignored", "exec/env", cmdEdit(func(_ context.Context, c *sandbox.Cmd) { c.Env = nil })},
	{"env values cut at '='", "exec/env", cmdEdit(func(_ context.Context, c *sandbox.Cmd) {
		for k, v := range c.Env {
			c.Env[k], _, _ = strings.Cut(v, "=")
		}
	})},
	{"Spec.Env ignored", "exec/env", specEdit(func(s *sandbox.Spec) { s.Env = nil })},
	{"Spec.Env wins over Cmd.Env", "exec/env", func(real driver.Provider) driver.Provider {
		return &bp{Provider: real, create: func(ctx context.Context, spec *sandbox.Spec) (driver.Sandbox, error) {
			r, err := real.Create(ctx, spec)
			if err != nil {
				return nil, err
			}
			specEnv := maps.Clone(spec.Env)
			return &bs{Sandbox: r, start: func(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error) {
				c := *cmd
				c.Env = maps.Clone(cmd.Env)
				if c.Env == nil {
					c.Env = map[string]string{}
				}
				maps.Copy(c.Env, specEnv)
				return r.Start(ctx, &c)
			}}, nil
		}}
	}},
	{"host environment passed to commands", "exec/env-host", cmdEdit(func(_ context.Context, c *sandbox.Cmd) {
		for _, kv := range os.Environ() {
			k, v, _ := strings.Cut(kv, "=")
			if _, set := c.Env[k]; !set && k != "PATH" && k != "HOME" {
				c.Env[k] = v
			}
		}
	})},
	{"provider forces its own PATH", "exec/env-override", cmdEdit(func(_ context.Context, c *sandbox.Cmd) { c.Env["PATH"] = "/usr/local/bin:/usr/bin:/bin" })},
	{"provider forces its own HOME", "exec/env-override", cmdEdit(func(_ context.Context, c *sandbox.Cmd) { c.Env["HOME"] = "/root" })},

	// exec: exit status
	{"exit code always 0", "exec/exit-codes", statusEdit(func(st sandbox.ExitStatus) sandbox.ExitStatus { st.Code = 0; return st })},
	{"non-zero exit codes reported as 1", "exec/exit-codes", statusEdit(func(st sandbox.ExitStatus) sandbox.ExitStatus {
		if st.Code > 0 {
			st.Code = 1
		}
		return st
	})},
	{"not executable reported as not found", "exec/exit-codes", statusEdit(func(st sandbox.ExitStatus) sandbox.ExitStatus {
		if st.Code == 126 {
			st.Code = 127
		}
		return st
	})},
	{"command not found is an error", "exec/exit-codes", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, start: func(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error) {
			if strings.HasPrefix(cmd.Args[0], "perimeter-") {
				return nil, errors.New("exec: not found")
			}
			return r.Start(ctx, cmd)
		}}
	})},

	// exec: stdin, directory
	{"stdin truncated", "exec/stdin", cmdEdit(func(_ context.Context, c *sandbox.Cmd) {
		if c.Stdin != nil {
			c.Stdin = io.LimitReader(c.Stdin, 1000)
		}
	})},
	{"nil stdin left open", "exec/stdin-nil", cmdEdit(func(ctx context.Context, c *sandbox.Cmd) {
		if c.Stdin == nil {
			pr, pw := io.Pipe()
			go func() { <-ctx.Done(); pw.Close() }()
			c.Stdin = pr
		}
	})},
	{"Cmd.Dir ignored", "exec/dir", cmdEdit(func(_ context.Context, c *sandbox.Cmd) { c.Dir = "" })},
	{"missing Cmd.Dir falls back to the default", "exec/dir", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, start: func(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error) {
			c := *cmd
			if _, err := r.Stat(ctx, c.Dir); c.Dir != "" && err != nil {
				c.Dir = ""
			}
			return r.Start(ctx, &c)
		}}
	})},

	// exec: cancel, timeout, Wait
	{"cancel ignored", "exec/cancel-kills-tree", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, start: func(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error) {
			return r.Start(context.WithoutCancel(ctx), cmd)
		}}
	})},
	{"Wait after cancel reports no error", "exec/cancel-kills-tree", procEdit(func(p driver.Process) *bproc {
		return &bproc{Process: p, wait: func(ctx context.Context) (sandbox.ExitStatus, error) {
			st, err := p.Wait(ctx)
			if errors.Is(err, context.Canceled) && ctx.Err() == nil {
				err = nil
			}
			return st, err
		}}
	})},
	{"Cmd.Timeout ignored", "exec/timeout", cmdEdit(func(_ context.Context, c *sandbox.Cmd) { c.Timeout = 0 })},
	{"TimedOut not reported", "exec/timeout", statusEdit(func(st sandbox.ExitStatus) sandbox.ExitStatus { st.TimedOut = false; return st })},
	{"second Wait fails", "exec/wait-twice", procEdit(func(p driver.Process) *bproc {
		var mu sync.Mutex
		waited := false
		return &bproc{Process: p, wait: func(ctx context.Context) (sandbox.ExitStatus, error) {
			st, err := p.Wait(ctx)
			mu.Lock()
			defer mu.Unlock()
			if err == nil && waited {
				return sandbox.ExitStatus{}, errors.New("process already waited for")
			}
			waited = waited || err == nil
			return st, err
		}}
	})},
	{"Wait's ctx kills the process", "exec/wait-ctx", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, start: func(ctx context.Context, cmd *sandbox.Cmd) (driver.Process, error) {
			life, kill := context.WithCancel(ctx)
			p, err := r.Start(life, cmd)
			if err != nil {
				kill()
				return nil, err
			}
			return &bproc{Process: p, wait: func(ctx context.Context) (sandbox.ExitStatus, error) {
				if ctx.Err() != nil {
					kill()
				}
				return p.Wait(ctx)
			}}, nil
		}}
	})},
	{"Wait ignores its ctx", "exec/wait-ctx", procEdit(func(p driver.Process) *bproc {
		return &bproc{Process: p, wait: func(ctx context.Context) (sandbox.ExitStatus, error) {
			return p.Wait(context.WithoutCancel(ctx))
		}}
	})},

	// exec: signals
	{"Signal does nothing", "exec/signal", procEdit(func(p driver.Process) *bproc {
		return &bproc{Process: p, signal: func(context.Context, sandbox.Signal) error { return nil }}
	})},
	{"death by signal reported as exit 0", "exec/signal", statusEdit(func(st sandbox.ExitStatus) sandbox.ExitStatus {
		if st.Signal != "" {
			st = sandbox.ExitStatus{}
		}
		return st
	})},
	{"Signal after exit is an error", "exec/signal", procEdit(func(p driver.Process) *bproc {
		var exited atomic.Bool
		return &bproc{Process: p,
			wait: func(ctx context.Context) (sandbox.ExitStatus, error) {
				st, err := p.Wait(ctx)
				if err == nil {
					exited.Store(true)
				}
				return st, err
			},
			signal: func(ctx context.Context, sig sandbox.Signal) error {
				if exited.Load() {
					return errors.New("no such process")
				}
				return p.Signal(ctx, sig)
			}}
	})},
	{"every signal sent as SIGTERM", "exec/signal-group", procEdit(func(p driver.Process) *bproc {
		return &bproc{Process: p, signal: func(ctx context.Context, _ sandbox.Signal) error { return p.Signal(ctx, sandbox.SIGTERM) }}
	})},

	// lifecycle
	{"Info.State not running after Create", "lifecycle/create", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, info: func(ctx context.Context) (sandbox.Info, error) {
			i, err := r.Info(ctx)
			i.State = sandbox.StateStarting
			return i, err
		}}
	})},
	{"Info without labels", "lifecycle/create", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, info: func(ctx context.Context) (sandbox.Info, error) {
			i, err := r.Info(ctx)
			i.Labels = nil
			return i, err
		}}
	})},
	{"Info.Isolation empty", "lifecycle/create", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, info: func(ctx context.Context) (sandbox.Info, error) {
			i, err := r.Info(ctx)
			i.Isolation = ""
			return i, err
		}}
	})},
	{"labels matched by prefix", "lifecycle/list-labels", func(real driver.Provider) driver.Provider {
		return &bp{Provider: real, list: func(ctx context.Context, opts *sandbox.ListOptions) iter.Seq2[sandbox.Info, error] {
			return func(yield func(sandbox.Info, error) bool) {
				for info, err := range real.List(ctx, &sandbox.ListOptions{}) {
					if err == nil && !prefixMatch(info.Labels, opts.Labels) {
						continue
					}
					if !yield(info, err) {
						return
					}
				}
			}
		}}
	}},
	{"label filter ignored", "lifecycle/list-labels", func(real driver.Provider) driver.Provider {
		return &bp{Provider: real, list: func(ctx context.Context, _ *sandbox.ListOptions) iter.Seq2[sandbox.Info, error] {
			return real.List(ctx, &sandbox.ListOptions{})
		}}
	}},
	{"Terminate not idempotent", "lifecycle/terminate-idempotent", func() func(driver.Provider) driver.Provider {
		var mu sync.Mutex
		done := map[string]bool{} // shared by every handle
		return sbx(func(r driver.Sandbox) *bs {
			return &bs{Sandbox: r, terminate: func(ctx context.Context) error {
				mu.Lock()
				again := done[r.ID()]
				done[r.ID()] = true
				mu.Unlock()
				if again {
					return errors.New("already terminated")
				}
				return r.Terminate(ctx)
			}}
		})
	}()},
	{"Terminate leaves processes running", "lifecycle/terminate-stops-processes", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, terminate: func(context.Context) error { return nil }}
	})},
	{"Get finds terminated sandboxes in a cache", "lifecycle/gone-after-terminate", func(real driver.Provider) driver.Provider {
		var mu sync.Mutex
		cache := map[string]driver.Sandbox{}
		return &bp{Provider: real,
			create: func(ctx context.Context, spec *sandbox.Spec) (driver.Sandbox, error) {
				s, err := real.Create(ctx, spec)
				if err == nil {
					mu.Lock()
					cache[s.ID()] = s
					mu.Unlock()
				}
				return s, err
			},
			get: func(ctx context.Context, id string) (driver.Sandbox, error) {
				mu.Lock()
				s, ok := cache[id]
				mu.Unlock()
				if ok {
					return s, nil
				}
				return real.Get(ctx, id)
			}}
	}},
	{"List yields terminated sandboxes as running", "lifecycle/gone-after-terminate", func(real driver.Provider) driver.Provider {
		var mu sync.Mutex
		var created []sandbox.Info
		return &bp{Provider: real,
			create: func(ctx context.Context, spec *sandbox.Spec) (driver.Sandbox, error) {
				s, err := real.Create(ctx, spec)
				if err == nil {
					info, _ := s.Info(ctx)
					mu.Lock()
					created = append(created, info)
					mu.Unlock()
				}
				return s, err
			},
			list: func(ctx context.Context, opts *sandbox.ListOptions) iter.Seq2[sandbox.Info, error] {
				return func(yield func(sandbox.Info, error) bool) {
					seen := map[string]bool{}
					for info, err := range real.List(ctx, opts) {
						if err != nil {
							yield(info, err)
							return
						}
						seen[info.ID] = true
						if !yield(info, nil) {
							return
						}
					}
					mu.Lock()
					cached := slices.Clone(created)
					mu.Unlock()
					for _, info := range cached {
						if !seen[info.ID] && prefixMatch(info.Labels, opts.Labels) && !yield(info, nil) {
							return
						}
					}
				}
			}}
	}},
	{"Provider.Close terminates its sandboxes", "lifecycle/close-keeps-sandboxes", func(real driver.Provider) driver.Provider {
		return &bp{Provider: real, close: func() error {
			ctx := context.Background()
			for info, err := range real.List(ctx, &sandbox.ListOptions{}) {
				if err != nil {
					break
				}
				if s, err := real.Get(ctx, info.ID); err == nil {
					s.Terminate(ctx)
				}
			}
			return real.Close()
		}}
	}},
	{"Spec.Timeout dropped, Info.Expires still reported", "lifecycle/timeout", func(real driver.Provider) driver.Provider {
		return &bp{Provider: real, create: func(ctx context.Context, spec *sandbox.Spec) (driver.Sandbox, error) {
			s := *spec
			ttl := s.Timeout
			s.Timeout = 0
			r, err := real.Create(ctx, &s)
			if err != nil || ttl == 0 {
				return r, err
			}
			expires := time.Now().Add(ttl)
			return &bs{Sandbox: r, info: func(ctx context.Context) (sandbox.Info, error) {
				i, err := r.Info(ctx)
				i.Expires = expires
				return i, err
			}}, nil
		}}
	}},
	{"ExtendTimeout moves only the reported time", "caps/extend-timeout", sbx(func(r driver.Sandbox) *bs {
		var mu sync.Mutex
		var extra time.Duration
		return &bs{Sandbox: r,
			extend: func(_ context.Context, d time.Duration) error { mu.Lock(); extra += d; mu.Unlock(); return nil },
			info: func(ctx context.Context) (sandbox.Info, error) {
				i, err := r.Info(ctx)
				mu.Lock()
				defer mu.Unlock()
				if !i.Expires.IsZero() {
					i.Expires = i.Expires.Add(extra)
				}
				return i, err
			}}
	})},
	{"ExtendTimeout claimed but refused", "caps/extend-timeout", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, extend: func(context.Context, time.Duration) error {
			return sandbox.Errorf("local", r.ID(), "extend timeout", sandbox.ErrNotSupported, "not implemented")
		}}
	})},
	{"Spec.Workdir ignored", "lifecycle/workdir", specEdit(func(s *sandbox.Spec) { s.Workdir = "" })},
	{"unsupported Spec fields ignored", "lifecycle/spec-unsupported", specEdit(func(s *sandbox.Spec) { s.Resources.GPU = ""; s.RootFS = "" })},

	// errors
	{"Get of an unknown ID is a plain error", "errors/unknown-id", func(real driver.Provider) driver.Provider {
		return &bp{Provider: real, get: func(ctx context.Context, id string) (driver.Sandbox, error) {
			s, err := real.Get(ctx, id)
			if err != nil {
				return nil, errors.New("no such sandbox: " + id)
			}
			return s, nil
		}}
	}},
	{"native error dropped", "errors/native", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, readFile: func(ctx context.Context, name string) (io.ReadCloser, error) {
			rc, err := r.ReadFile(ctx, name)
			if err != nil {
				return nil, sandbox.Errorf("local", r.ID(), "read file", sandbox.KindOf(err), "%s: failed", name)
			}
			return rc, nil
		}}
	})},

	// files
	{"ErrNotFound missing (a plain error)", "files/not-found", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, readFile: func(ctx context.Context, name string) (io.ReadCloser, error) {
			rc, err := r.ReadFile(ctx, name)
			if err != nil {
				return nil, errors.New("read failed: " + err.Error())
			}
			return rc, nil
		}}
	})},
	{"WriteFile creates missing parents", "files/not-found", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, writeFile: func(ctx context.Context, name string, rd io.Reader, perm fs.FileMode) error {
			if err := r.MkdirAll(ctx, path.Dir(name), 0o755); err != nil {
				return err
			}
			return r.WriteFile(ctx, name, rd, perm)
		}}
	})},
	{"Remove of a missing file succeeds", "files/not-found", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, remove: func(ctx context.Context, name string) error {
			if err := r.Remove(ctx, name); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
				return err
			}
			return nil
		}}
	})},
	{"file data truncated", "files/binary-roundtrip", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, readFile: truncatingRead(r)}
	})},
	{"large file truncated", "files/large", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, readFile: truncatingRead(r)}
	})},
	{"WriteFile overwrites without truncating", "files/overwrite", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, writeFile: func(ctx context.Context, name string, rd io.Reader, perm fs.FileMode) error {
			data, err := io.ReadAll(rd)
			if err != nil {
				return err
			}
			if old, err := readAll(ctx, r, name); err == nil && len(old) > len(data) {
				data = append(data, old[len(data):]...)
			}
			return r.WriteFile(ctx, name, bytes.NewReader(data), perm)
		}}
	})},
	{"ReadFile served from a stale cache", "files/fresh-read", sbx(func(r driver.Sandbox) *bs {
		var mu sync.Mutex
		cache := map[string][]byte{}
		return &bs{Sandbox: r, readFile: func(ctx context.Context, name string) (io.ReadCloser, error) {
			mu.Lock()
			b, ok := cache[name]
			mu.Unlock()
			if !ok {
				var err error
				if b, err = readAll(ctx, r, name); err != nil {
					return nil, err
				}
				mu.Lock()
				cache[name] = b
				mu.Unlock()
			}
			return io.NopCloser(bytes.NewReader(b)), nil
		}}
	})},
	{"empty write creates nothing", "files/empty-write", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, writeFile: func(ctx context.Context, name string, rd io.Reader, perm fs.FileMode) error {
			data, err := io.ReadAll(rd)
			if err != nil || len(data) == 0 {
				return err
			}
			return r.WriteFile(ctx, name, bytes.NewReader(data), perm)
		}}
	})},
	{"Stat without ModTime", "files/modtime", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, stat: func(ctx context.Context, name string) (sandbox.FileInfo, error) {
			fi, err := r.Stat(ctx, name)
			fi.ModTime = time.Time{}
			return fi, err
		}}
	})},
	{"ReadDir without ModTime", "files/modtime", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, readDir: func(ctx context.Context, name string) ([]sandbox.FileInfo, error) {
			list, err := r.ReadDir(ctx, name)
			for i := range list {
				list[i].ModTime = time.Time{}
			}
			return list, err
		}}
	})},
	{"Stat follows a final symbolic link", "files/stat-no-follow", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, stat: func(ctx context.Context, name string) (sandbox.FileInfo, error) {
			fi, err := r.Stat(ctx, name)
			if err == nil && fi.Mode&fs.ModeSymlink != 0 {
				b, rerr := readAll(ctx, r, name)
				if rerr != nil {
					return sandbox.FileInfo{}, rerr
				}
				fi.Mode, fi.Size = 0o644, int64(len(b))
			}
			return fi, err
		}}
	})},
	{"ReadDir omits dotfiles", "files/readdir", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, readDir: func(ctx context.Context, name string) ([]sandbox.FileInfo, error) {
			list, err := r.ReadDir(ctx, name)
			return slices.DeleteFunc(list, func(fi sandbox.FileInfo) bool { return strings.HasPrefix(fi.Name, ".") }), err
		}}
	})},
	{"ReadDir sorted case-insensitively", "files/readdir", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, readDir: func(ctx context.Context, name string) ([]sandbox.FileInfo, error) {
			list, err := r.ReadDir(ctx, name)
			slices.SortStableFunc(list, func(a, b sandbox.FileInfo) int {
				return strings.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name))
			})
			return list, err
		}}
	})},
	{"MkdirAll ignores perm", "files/mkdir-perm", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, mkdirAll: func(ctx context.Context, name string, _ fs.FileMode) error {
			return r.MkdirAll(ctx, name, 0o755)
		}}
	})},
	{"WriteFile ignores perm", "files/perm", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, writeFile: func(ctx context.Context, name string, rd io.Reader, _ fs.FileMode) error {
			return r.WriteFile(ctx, name, rd, 0o644)
		}}
	})},
	{"WriteFile truncates before reading", "files/atomic-write", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, writeFile: func(ctx context.Context, name string, rd io.Reader, perm fs.FileMode) error {
			if err := r.WriteFile(ctx, name, strings.NewReader(""), perm); err != nil {
				return err
			}
			return r.WriteFile(ctx, name, rd, perm)
		}}
	})},
	{"Remove deletes non-empty directories", "files/ops", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, remove: func(ctx context.Context, name string) error {
			if _, err := r.Stat(ctx, name); err != nil {
				return err
			}
			return r.RemoveAll(ctx, name)
		}}
	})},
	{"Rename does not replace", "files/ops", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, rename: func(ctx context.Context, from, to string) error {
			if _, err := r.Stat(ctx, to); err == nil {
				return sandbox.Errorf("local", r.ID(), "rename", sandbox.ErrAlreadyExists, "%s exists", to)
			}
			return r.Rename(ctx, from, to)
		}}
	})},
	{"RemoveAll of a missing path fails", "files/ops", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, removeAll: func(ctx context.Context, name string) error {
			if _, err := r.Stat(ctx, name); err != nil {
				return err
			}
			return r.RemoveAll(ctx, name)
		}}
	})},

	// ports
	{"Expose claimed but serving nothing", "ports/expose", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, expose: func(context.Context, int, *sandbox.ExposeOptions) (driver.Tunnel, error) {
			return fakeTunnel{}, nil
		}}
	})},
	{"Expose reuses the sandbox's first tunnel", "ports/expose", sbx(func(r driver.Sandbox) *bs {
		var mu sync.Mutex
		var first driver.Tunnel
		return &bs{Sandbox: r, expose: func(ctx context.Context, port int, opts *sandbox.ExposeOptions) (driver.Tunnel, error) {
			mu.Lock()
			defer mu.Unlock()
			if first != nil {
				return first, nil
			}
			t, err := r.Expose(ctx, port, opts)
			first = t
			return t, err
		}}
	})},
	{"Tunnel.Close leaves the endpoint answering", "ports/expose", sbx(func(r driver.Sandbox) *bs {
		return &bs{Sandbox: r, expose: func(ctx context.Context, port int, opts *sandbox.ExposeOptions) (driver.Tunnel, error) {
			t, err := r.Expose(ctx, port, opts)
			if err != nil {
				return nil, err
			}
			return noClose{t}, nil
		}}
	})},
	{"Dial connects to the first port dialled", "ports/dial", sbx(func(r driver.Sandbox) *bs {
		var mu sync.Mutex
		first := 0
		return &bs{Sandbox: r, dial: func(ctx context.Context, port int) (net.Conn, error) {
			mu.Lock()
			if first == 0 {
				first = port
			}
			p := first
			mu.Unlock()
			return r.(driver.Dialer).DialContext(ctx, p)
		}}
	})},

	// claims that are not kept
	{"PTY claimed but not working", "pty/run", capsEdit(func(c *sandbox.Capabilities) { c.PTY = true })},
	{"PTY claimed, TTY.Term unchecked", "pty/term", capsEdit(func(c *sandbox.Capabilities) { c.PTY = true })},
	{"Pause claimed but not working", "caps/pause", capsEdit(func(c *sandbox.Capabilities) { c.Pause = true })},
	{"Snapshot claimed but not working", "caps/snapshot", capsEdit(func(c *sandbox.Capabilities) { c.Snapshot = true })},
	{"network none claimed but not enforced", "network/none", acceptAnyNetwork(capsEdit(func(c *sandbox.Capabilities) {
		c.NetworkModes = append(c.NetworkModes, sandbox.NetworkNone)
	}))},
	{"network allowlist claimed but not enforced", "network/allowlist", acceptAnyNetwork(capsEdit(func(c *sandbox.Capabilities) {
		c.NetworkModes = append(c.NetworkModes, sandbox.NetworkAllowlist)
	}))},
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// noClose is a tunnel whose Close does nothing.
type noClose struct{ driver.Tunnel }

func (noClose) Close() error { return nil }

func prefixMatch(have, want map[string]string) bool {
	for k, v := range want {
		if !strings.HasPrefix(have[k], v) {
			return false
		}
	}
	return true
}

// battery is a mutant's provider over a fresh unisolated local provider, and
// how to clean up after it.
type battery struct {
	root string
	base *local.Provider
}

func newBattery() (*battery, error) {
	root, err := os.MkdirTemp("", "perimeter-mutant-")
	if err != nil {
		return nil, err
	}
	base, err := local.NewDriver(&local.Options{Root: root, Unisolated: true})
	if err != nil {
		os.RemoveAll(root)
		return nil, err
	}
	return &battery{root: root, base: base}, nil
}

// harness is the suite's harness for a provider built by build over b: the
// unisolated local provider runs plain host processes, so its sandboxes ask
// for open egress. Open builds another such provider on the same root.
func (b *battery) harness(build func(driver.Provider) driver.Provider) *conformance.Harness {
	return &conformance.Harness{
		Provider:    sandbox.NewProvider(build(b.base), nil),
		NativeError: func() any { return new(*fs.PathError) },
		Spec: func() *sandbox.Spec {
			return &sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}}
		},
		Open: func(context.Context) (*sandbox.Provider, error) {
			d, err := local.NewDriver(&local.Options{Root: b.root, Unisolated: true})
			if err != nil {
				return nil, err
			}
			return sandbox.NewProvider(build(d), nil), nil
		},
	}
}

// close terminates whatever a mutant left behind (its Terminate may be the
// bug) and removes the root.
func (b *battery) close() error {
	ctx := context.Background()
	var errs []error
	for info, err := range b.base.List(ctx, &sandbox.ListOptions{}) {
		if err != nil {
			errs = append(errs, err)
			break
		}
		if s, err := b.base.Get(ctx, info.ID); err == nil {
			if err := s.Terminate(ctx); err != nil {
				errs = append(errs, err)
			}
		}
	}
	errs = append(errs, b.base.Close(), os.RemoveAll(b.root))
	return errors.Join(errs...)
}

func runMutant(build func(driver.Provider) driver.Provider, run string) (*conformance.Report, error) {
	b, err := newBattery()
	if err != nil {
		return nil, err
	}
	rep, err := conformance.RunChecks(context.Background(), b.harness(build), &conformance.Options{Run: run})
	return rep, errors.Join(err, b.close())
}

// caughtByBound names the mutants that a check catches only when one of its
// time bounds runs out (10 s to 2 min each: a command that never ends, a
// tunnel that never answers). go test -short, the fast tier, leaves them
// out; make test runs them all.
var caughtByBound = map[string]bool{
	"output buffered until exit":                        true,
	"Spec.Timeout dropped, Info.Expires still reported": true,
	"Tunnel.Close leaves the endpoint answering":        true,
	"Expose reuses the sandbox's first tunnel":          true,
	"cancel ignored":                             true,
	"Terminate leaves processes running":         true,
	"Expose claimed but serving nothing":         true,
	"Wait ignores its ctx":                       true,
	"nil stdin left open":                        true,
	"commands serialised":                        true,
	"Cmd.Timeout ignored":                        true,
	"ExtendTimeout moves only the reported time": true,
	"Signal does nothing":                        true,
}

func TestMutantsAreCaught(t *testing.T) {
	require.GreaterOrEqual(t, len(mutants), 60, "the battery holds at least 60 broken providers")
	named := map[string]bool{}
	for _, m := range mutants {
		named[m.name] = true
	}
	for name := range caughtByBound {
		require.True(t, named[name], "caughtByBound names %q, which is not a mutant", name)
	}
	skip := func(m mutant) bool { return testing.Short() && caughtByBound[m.name] }
	checks := map[string]bool{}
	var union []string
	for _, m := range mutants {
		if skip(m) {
			continue
		}
		if !checks[m.check] {
			checks[m.check] = true
			union = append(union, "^"+m.check+"$")
		}
	}

	type outcome struct {
		rep *conformance.Report
		err error
	}
	// The control: the same wrappers, no bug.
	control := make(chan outcome, 1)
	go func() {
		rep, err := runMutant(sbx(func(r driver.Sandbox) *bs { return &bs{Sandbox: r} }), strings.Join(union, "|"))
		control <- outcome{rep, err}
	}()
	results := make([]chan outcome, len(mutants))
	sem := make(chan struct{}, 6)
	for i, m := range mutants {
		results[i] = make(chan outcome, 1)
		if skip(m) {
			continue
		}
		go func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			rep, err := runMutant(m.build, "^"+m.check+"$")
			results[i] <- outcome{rep, err}
		}()
	}

	ctl := <-control
	require.NoError(t, ctl.err)
	controlOutcome := map[string]conformance.Outcome{}
	for _, res := range ctl.rep.Results {
		controlOutcome[res.ID] = res.Outcome
		assert.NotEqual(t, conformance.Fail, res.Outcome, "control: %s fails without any bug: %s", res.ID, res.Message)
	}

	caught := 0
	for i, m := range mutants {
		t.Run(m.name, func(t *testing.T) {
			if skip(m) {
				t.Skipf("-short: %s catches it only when a time bound runs out; make test runs it", m.check)
			}
			o := <-results[i]
			require.NoError(t, o.err)
			require.Len(t, o.rep.Results, 1)
			res := o.rep.Results[0]
			require.Equal(t, m.check, res.ID)
			require.Equal(t, conformance.MUST, res.Level, "mutants must be caught at MUST")
			if res.Outcome != conformance.Fail {
				t.Errorf("SURVIVED: %q passed %s (%s %s)", m.name, m.check, res.Outcome, res.Message)
				return
			}
			caught++
			t.Logf("%s caught it in %v: %s", m.check, res.Duration.Round(time.Millisecond), res.Message)
		})
	}
	ran := len(mutants)
	if testing.Short() {
		ran -= len(caughtByBound)
	}
	t.Logf("mutation score: %d of %d broken providers caught at MUST", caught, ran)
}

func TestMutantNamesAreUnique(t *testing.T) {
	seen := map[string]bool{}
	ids := map[string]bool{}
	for _, ch := range conformance.Checks() {
		ids[ch.ID] = true
	}
	for _, m := range mutants {
		assert.False(t, seen[m.name], "duplicate mutant %q", m.name)
		seen[m.name] = true
		assert.True(t, ids[m.check], "mutant %q names the unknown check %s", m.name, m.check)
	}
}

// slowWrites builds an honest provider whose WriteFile goes on for a
// second after the file has appeared (as one that renames an upload into
// place and then removes its parts does) and fails if the sandbox is
// terminated meanwhile.
func slowWrites(real driver.Provider) driver.Provider {
	return sbx(func(r driver.Sandbox) *bs {
		terminated := make(chan struct{})
		var once sync.Once
		return &bs{Sandbox: r,
			writeFile: func(ctx context.Context, name string, rd io.Reader, perm fs.FileMode) error {
				if err := r.WriteFile(ctx, name, rd, perm); err != nil {
					return err
				}
				select {
				case <-terminated:
					return errors.New("the sandbox was terminated while WriteFile was still removing its temporary parts")
				case <-time.After(time.Second):
					return nil
				}
			},
			terminate: func(ctx context.Context) error {
				once.Do(func() { close(terminated) })
				return r.Terminate(ctx)
			}}
	})(real)
}

// TestChecksWaitForTheirWrites: a check that writes a file while a command
// waits for it ends only once WriteFile has returned, so a provider whose
// WriteFile finishes after the file appears is not failed by the check's
// own Terminate. (exec/large-output did not wait: the Cloudflare adapter's
// clean-up script was killed by the fake's Terminate under load.)
func TestChecksWaitForTheirWrites(t *testing.T) {
	rep, err := runMutant(slowWrites, "^exec/large-output$")
	require.NoError(t, err)
	require.Len(t, rep.Results, 1)
	assert.Equal(t, conformance.Pass, rep.Results[0].Outcome, rep.Results[0].Message)
}

// refuse builds a provider that honestly refuses a Spec field with
// ErrNotSupported, and claims, or not, ExtendTimeout.
func refuse(field func(*sandbox.Spec) bool, extend bool) func(driver.Provider) driver.Provider {
	return func(real driver.Provider) driver.Provider {
		return &bp{Provider: real,
			create: func(ctx context.Context, spec *sandbox.Spec) (driver.Sandbox, error) {
				if field(spec) {
					return nil, sandbox.Errorf("local", "", "create", sandbox.ErrNotSupported, "this provider cannot honour the field")
				}
				return real.Create(ctx, spec)
			},
			wrap: func(s driver.Sandbox) driver.Sandbox {
				return &bs{Sandbox: s, caps: func(c sandbox.Capabilities) sandbox.Capabilities { c.ExtendTimeout = extend; return c }}
			}}
	}
}

// TestHonestRefusalsAreNotFailures: a provider that refuses Spec.Timeout or
// Spec.Ports with ErrNotSupported does not fail the checks that use them;
// they adapt or report n/a, and the capability is still held both ways.
func TestHonestRefusalsAreNotFailures(t *testing.T) {
	noTimeout := func(s *sandbox.Spec) bool { return s.Timeout > 0 }
	noPorts := func(s *sandbox.Spec) bool { return len(s.Ports) > 0 }
	for _, tc := range []struct {
		name  string
		build func(driver.Provider) driver.Provider
		want  map[string]conformance.Outcome
	}{
		{"Spec.Timeout refused, ExtendTimeout unclaimed", refuse(noTimeout, false), map[string]conformance.Outcome{
			"caps/extend-timeout": conformance.NotApplicable, "lifecycle/timeout": conformance.NotApplicable}},
		{"Spec.Timeout refused, ExtendTimeout claimed", refuse(noTimeout, true), map[string]conformance.Outcome{
			"caps/extend-timeout": conformance.Pass, "lifecycle/timeout": conformance.NotApplicable}},
		{"Spec.Ports refused", refuse(noPorts, true), map[string]conformance.Outcome{
			"ports/expose": conformance.Pass, "ports/dial": conformance.Pass}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ids []string
			for id := range tc.want {
				ids = append(ids, "^"+id+"$")
			}
			rep, err := runMutant(tc.build, strings.Join(ids, "|"))
			require.NoError(t, err)
			require.Len(t, rep.Results, len(tc.want))
			for _, res := range rep.Results {
				assert.Equal(t, tc.want[res.ID], res.Outcome, "%s: %s", res.ID, res.Message)
			}
		})
	}
}
