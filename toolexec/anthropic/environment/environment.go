// Package environment runs Claude Managed Agents self-hosted environment
// sessions in Perimeter sandboxes.
//
// The Anthropic Go SDK's environment worker (lib/environments) polls the
// environment's work queue, claims a session, downloads its skills and memory
// stores into a host directory, and hands the session's tool calls to the
// tools its ToolsFunc returns. [Sandboxes] supplies those tools: every session
// gets its own sandbox from any provider, the agent_toolset_20260401 tools
// (bash, read, write, edit, glob, grep; the SDK's own names, descriptions and
// input schemas) run in it through toolexec, the session's skills and memory
// folders are copied into the sandbox before the first call, and what the agent
// changes in its memory folders is carried back to the host folders the SDK
// syncs, after every call that can write and when the session ends.
//
// [Worker] is the poll loop: the SDK's WorkPoller claims work items and the
// SDK's EnvironmentWorker.HandleItem serves each, up to MaxSessions at once,
// each with its own host directory and its own sandbox.
//
//	p, _ := sandbox.Open(ctx, "local://")
//	w, _ := environment.NewWorker(client, environment.WorkerOptions{
//		EnvironmentID: id, EnvironmentKey: key, Workdir: "/var/lib/perimeter-worker",
//		Sandboxes: environment.Options{Provider: p},
//	})
//	err := w.Run(ctx) // until ctx ends; then in-flight calls finish and sandboxes go
//
// Paths the agent sees are the sandbox's: the host directory of a session maps
// to the sandbox's working directory, and a memory store mounted at an absolute
// path outside it is placed at the same path in the sandbox (the path the
// agent's system prompt names).
package environment

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	sdk "github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/tools/agenttoolset"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/toolexec"
	perimeter "github.com/perimeter-sdk/perimeter/toolexec/anthropic"
)

// Defaults of [Options].
const (
	// DefaultDrainTimeout is how long a tool call that is running when the
	// worker shuts down may go on to finish.
	DefaultDrainTimeout = 2 * time.Minute
	// DefaultCreateTimeout bounds the creation of one session's sandbox.
	DefaultCreateTimeout = 5 * time.Minute
)

// ToolNames are the agent_toolset_20260401 tools a session gets.
var ToolNames = []string{toolexec.BashName, toolexec.ReadName, toolexec.WriteName, toolexec.EditName, toolexec.GlobName, toolexec.GrepName}

// Options configures [Sandboxes].
type Options struct {
	// Provider creates the sandboxes. Required.
	Provider *sandbox.Provider
	// Spec is every session's sandbox. Nil means the provider's defaults. Its
	// Workdir, if set, is where the session's host directory is placed.
	Spec *sandbox.Spec
	// Tools configures the tools (bash timeout, output limits). Its Tools
	// list and Files.Workdir/Roots are set by the binding.
	Tools *toolexec.Options
	// Grace keeps a session's sandbox this long after its work item ends;
	// if the same session is claimed again meanwhile it continues in the
	// same sandbox (files and shell). Zero terminates at once.
	Grace time.Duration
	// DrainTimeout: see [DefaultDrainTimeout]. Negative means none: a
	// shutdown cancels running calls.
	DrainTimeout time.Duration
	// CreateTimeout: see [DefaultCreateTimeout].
	CreateTimeout time.Duration
	// Logger receives a line per session and per tool call (tool, duration,
	// error flag, sandbox and session ids; never inputs or outputs). Nil
	// means slog.Default().
	Logger *slog.Logger
	// Metrics, if not nil, is updated.
	Metrics *Metrics
}

// Sandboxes gives each session its own sandbox; see the package
// documentation. It is safe for concurrent use.
type Sandboxes struct {
	opts  Options
	log   *slog.Logger
	defs  []sdk.BetaTool // the SDK's definitions, never executed
	drain atomic.Bool

	mu     sync.Mutex
	kept   map[string]*session // session id → sandbox kept for Grace
	live   map[*session]bool
	closed bool
}

// New returns a Sandboxes for opts.
func New(opts Options) (*Sandboxes, error) {
	if opts.Provider == nil {
		return nil, errors.New("environment: Options.Provider is required")
	}
	if opts.Grace < 0 {
		return nil, fmt.Errorf("environment: negative Options.Grace %v", opts.Grace)
	}
	if opts.DrainTimeout == 0 {
		opts.DrainTimeout = DefaultDrainTimeout
	}
	if opts.CreateTimeout <= 0 {
		opts.CreateTimeout = DefaultCreateTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	// The SDK's own tools for the exact names, descriptions and input
	// schemas of agent_toolset_20260401. They are built lazily by the SDK
	// (no shell starts) and never executed here.
	defs := agenttoolset.BetaAgentToolset20260401(&agenttoolset.AgentToolContext{})
	return &Sandboxes{opts: opts, log: log, defs: defs, kept: map[string]*session{}, live: map[*session]bool{}}, nil
}

// Drain starts a shutdown: from now on a tool call whose context is
// cancelled goes on for up to Options.DrainTimeout so that its result can
// still be posted, and sessions that end are not kept for Grace.
func (b *Sandboxes) Drain() { b.drain.Store(true) }

// Close terminates the sandboxes kept for Grace and refuses new sessions.
// Sessions still running terminate theirs when they end.
func (b *Sandboxes) Close(ctx context.Context) error {
	b.mu.Lock()
	b.closed = true
	kept := b.kept
	b.kept = map[string]*session{}
	b.mu.Unlock()
	var errs []error
	for _, s := range kept {
		s.stopTimer()
		errs = append(errs, s.destroy(ctx))
	}
	return errors.Join(errs...)
}

// Live reports how many sessions hold a sandbox now, running or kept.
func (b *Sandboxes) Live() (running, kept int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.live), len(b.kept)
}

// ToolsFunc returns the function for the SDK's
// EnvironmentWorkerOptions.ToolsFunc that serves session sessionID (empty
// when unknown: the sandbox is then never kept for reuse). ctx bounds the
// sandbox's creation and seeding. The tools close (agenttoolset.CloseAll,
// which the SDK's worker calls when the session ends) by carrying memory
// back and terminating or keeping the sandbox.
//
// If the sandbox cannot be made, every tool answers every call with an
// error naming the cause, so the agent sees it, and the worker goes on.
func (b *Sandboxes) ToolsFunc(ctx context.Context, sessionID string) func(env *agenttoolset.AgentToolContext) []sdk.BetaTool {
	return func(env *agenttoolset.AgentToolContext) []sdk.BetaTool {
		if env == nil {
			env = &agenttoolset.AgentToolContext{}
		}
		s, err := b.open(ctx, sessionID, env)
		if err != nil {
			b.opts.Metrics.add(func(m *Metrics) *atomic.Int64 { return &m.SessionFailures }, 1)
			b.log.Error("session sandbox unavailable", slog.String("session_id", sessionID), slog.Any("error", err))
			return b.tools(&session{b: b, id: sessionID, failed: err})
		}
		return b.tools(s)
	}
}

func (b *Sandboxes) tools(s *session) []sdk.BetaTool {
	c := &closer{s: s}
	out := make([]sdk.BetaTool, 0, len(b.defs))
	for _, d := range b.defs {
		out = append(out, &tool{def: d, s: s, c: c})
	}
	return out
}

// open makes or reuses the session's sandbox and seeds it.
func (b *Sandboxes) open(ctx context.Context, sessionID string, env *agenttoolset.AgentToolContext) (*session, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, errors.New("the worker is shutting down")
	}
	s := b.kept[sessionID]
	if s != nil {
		delete(b.kept, sessionID)
		s.stopTimer()
	}
	b.mu.Unlock()

	cctx, cancel := context.WithTimeout(ctx, b.opts.CreateTimeout)
	defer cancel()
	if s != nil {
		if info, err := s.sb.Info(cctx); err != nil || info.State != sandbox.StateRunning {
			b.log.Warn("kept sandbox is gone; creating another", slog.String("session_id", sessionID), slog.String("sandbox_id", s.sb.ID()))
			_ = s.destroy(context.WithoutCancel(ctx))
			s = nil
		} else {
			b.log.Info("session continues in its kept sandbox", slog.String("session_id", sessionID), slog.String("sandbox_id", s.sb.ID()))
		}
	}
	if s == nil {
		start := time.Now()
		sb, err := b.opts.Provider.Create(cctx, b.opts.Spec)
		b.opts.Metrics.observeCreate(time.Since(start), err)
		if err != nil {
			return nil, fmt.Errorf("creating the session's sandbox: %w", err)
		}
		s = &session{b: b, id: sessionID, sb: sb}
		b.log.Info("session sandbox created", slog.String("session_id", sessionID), slog.String("sandbox_id", sb.ID()),
			slog.Duration("duration", time.Since(start)))
		if err := s.init(cctx); err != nil {
			_ = s.destroy(context.WithoutCancel(ctx))
			return nil, err
		}
	}
	if err := s.seed(cctx, env); err != nil {
		_ = s.destroy(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("placing the session's files in sandbox %s: %w", s.sb.ID(), err)
	}
	b.mu.Lock()
	b.live[s] = true
	b.mu.Unlock()
	b.opts.Metrics.add(func(m *Metrics) *atomic.Int64 { return &m.SessionsActive }, 1)
	b.opts.Metrics.add(func(m *Metrics) *atomic.Int64 { return &m.Sessions }, 1)
	return s, nil
}

// session is one session's sandbox and toolset.
type session struct {
	b      *Sandboxes
	id     string
	failed error // the sandbox could not be made: every call answers this

	sb        *sandbox.Sandbox
	ts        *toolexec.Toolset
	sbWorkdir string

	mu     sync.Mutex // serialises carry-back and guards mounts, dead
	mounts []*mount
	dead   error
	timer  *time.Timer
}

// init finds the sandbox's working directory and makes the toolset.
func (s *session) init(ctx context.Context) error {
	wd := ""
	if s.b.opts.Spec != nil {
		wd = s.b.opts.Spec.Workdir
	}
	if wd == "" || !path.IsAbs(wd) {
		res, err := sandbox.Run(ctx, s.sb, &sandbox.Cmd{Args: []string{"pwd"}, Dir: wd}, nil)
		if err != nil {
			return fmt.Errorf("finding sandbox %s's working directory: %w", s.sb.ID(), err)
		}
		wd = strings.TrimSpace(string(res.Stdout))
		if res.Status.Code != 0 || !path.IsAbs(wd) {
			return fmt.Errorf("finding sandbox %s's working directory: pwd exited %d", s.sb.ID(), res.Status.Code)
		}
	}
	s.sbWorkdir = path.Clean(wd)
	return nil
}

func (s *session) stopTimer() {
	if s.timer != nil {
		s.timer.Stop()
	}
}

// destroy closes the toolset and terminates the sandbox.
func (s *session) destroy(ctx context.Context) error {
	var errs []error
	if s.ts != nil {
		errs = append(errs, s.ts.Close())
	}
	if s.sb != nil {
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := s.sb.Terminate(tctx); err != nil {
			errs = append(errs, fmt.Errorf("terminating sandbox %s: %w", s.sb.ID(), err))
		} else {
			s.b.log.Info("session sandbox terminated", slog.String("session_id", s.id), slog.String("sandbox_id", s.sb.ID()))
		}
	}
	return errors.Join(errs...)
}

// end runs when the SDK closes the session's tools.
func (s *session) end() error {
	if s.failed != nil {
		return nil
	}
	b := s.b
	ctx := context.Background()
	err := s.carryBack(ctx)
	if err != nil {
		b.log.Warn("carrying memory back at session end failed", slog.String("session_id", s.id), slog.String("sandbox_id", s.sb.ID()), slog.Any("error", err))
	}
	b.mu.Lock()
	delete(b.live, s)
	keep := b.opts.Grace > 0 && s.id != "" && !b.closed && !b.drain.Load() && s.deadErr() == nil
	if keep {
		if old := b.kept[s.id]; old != nil && old != s { // cannot happen: one claim per session
			old.stopTimer()
			go old.destroy(ctx) //nolint:errcheck // logged by destroy
		}
		b.kept[s.id] = s
		s.timer = time.AfterFunc(b.opts.Grace, func() { b.expire(s) })
	}
	b.mu.Unlock()
	b.opts.Metrics.add(func(m *Metrics) *atomic.Int64 { return &m.SessionsActive }, -1)
	if keep {
		b.log.Info("session sandbox kept for reuse", slog.String("session_id", s.id), slog.String("sandbox_id", s.sb.ID()), slog.Duration("grace", b.opts.Grace))
		return err
	}
	return errors.Join(err, s.destroy(ctx))
}

// expire ends a kept sandbox whose grace period passed.
func (b *Sandboxes) expire(s *session) {
	b.mu.Lock()
	if b.kept[s.id] != s {
		b.mu.Unlock()
		return
	}
	delete(b.kept, s.id)
	b.mu.Unlock()
	if err := s.destroy(context.Background()); err != nil {
		b.log.Warn("ending a kept sandbox failed", slog.String("session_id", s.id), slog.Any("error", err))
	}
}

func (s *session) deadErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dead
}

// checkAlive is called after an infrastructure error: if the sandbox no
// longer runs, the session is marked dead with the reason.
func (s *session) checkAlive(cause error) error {
	if err := s.deadErr(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := s.sb.Info(ctx)
	var dead error
	switch {
	case errors.Is(cause, sandbox.ErrTerminated):
		dead = fmt.Errorf("sandbox %s was terminated: %w", s.sb.ID(), cause)
	case err != nil:
		dead = fmt.Errorf("sandbox %s stopped answering (%v) after: %w", s.sb.ID(), err, cause)
	case info.State != sandbox.StateRunning:
		dead = fmt.Errorf("sandbox %s is %s: %w", s.sb.ID(), info.State, cause)
	default:
		return nil
	}
	s.mu.Lock()
	if s.dead == nil {
		s.dead = dead
	}
	dead = s.dead
	s.mu.Unlock()
	s.b.log.Error("session sandbox died", slog.String("session_id", s.id), slog.String("sandbox_id", s.sb.ID()), slog.Any("error", dead))
	return dead
}

// closer closes a session's tools once, whichever tool the SDK closes first.
type closer struct {
	s    *session
	once sync.Once
	err  error
}

func (c *closer) close() error {
	c.once.Do(func() { c.err = c.s.end() })
	return c.err
}

// tool is one agent_toolset_20260401 tool of a session.
type tool struct {
	def sdk.BetaTool
	s   *session
	c   *closer
}

func (t *tool) Name() string                              { return t.def.Name() }
func (t *tool) Description() string                       { return t.def.Description() }
func (t *tool) InputSchema() sdk.BetaToolInputSchemaParam { return t.def.InputSchema() }

// Close ends the session's tools: see [Sandboxes.ToolsFunc].
func (t *tool) Close() error { return t.c.close() }

// Execute runs the call in the session's sandbox. Failures are returned as
// errors, which the SDK's session runner posts as is_error results with the
// error's text.
func (t *tool) Execute(ctx context.Context, input json.RawMessage) ([]sdk.BetaToolResultBlockParamContentUnion, error) {
	s, b, name := t.s, t.s.b, t.def.Name()
	if s.failed != nil {
		return nil, s.failed
	}
	start := time.Now()
	log := b.log.With(slog.String("session_id", s.id), slog.String("sandbox_id", s.sb.ID()), slog.String("tool", name))
	if err := s.deadErr(); err != nil {
		b.opts.Metrics.add(func(m *Metrics) *atomic.Int64 { return &m.ToolFailures }, 1)
		log.Warn("tool call refused: the sandbox is gone")
		return nil, fmt.Errorf("the session's sandbox is gone, so the %s call did not run: %v", name, err)
	}
	if err := s.refuseReadOnly(name, input); err != nil {
		return nil, err
	}
	ectx, stop := b.execContext(ctx)
	defer stop()
	res, err := s.ts.Execute(ectx, toolexec.ToolUse{Name: name, Input: input})
	b.opts.Metrics.add(func(m *Metrics) *atomic.Int64 { return &m.ToolCalls }, 1)
	var out []sdk.BetaToolResultBlockParamContentUnion
	var failure error
	switch {
	case err != nil && ctx.Err() == nil && ectx.Err() == nil:
		// Not a cancellation: did the sandbox die?
		if dead := s.checkAlive(err); dead != nil {
			failure = fmt.Errorf("the session's sandbox died during the %s call: %v", name, dead)
		} else {
			failure = errors.New(res.Text())
		}
	case err != nil:
		failure = errors.New(res.Text())
	case res.IsError:
		failure = errors.New(res.Text())
	default:
		out = perimeter.BetaContent(res)
	}
	if failure != nil {
		b.opts.Metrics.add(func(m *Metrics) *atomic.Int64 { return &m.ToolFailures }, 1)
	}
	if name == toolexec.BashName || name == toolexec.WriteName || name == toolexec.EditName {
		if cerr := s.carryBack(ectx); cerr != nil {
			log.Warn("carrying memory back failed", slog.Any("error", cerr))
		}
	}
	log.Info("tool call", slog.Duration("duration", time.Since(start)), slog.Bool("is_error", failure != nil))
	return out, failure
}

// execContext is the context a call runs under: ctx, except that while the
// worker drains a cancelled ctx leaves the call DrainTimeout to finish. A
// deadline on ctx (the runner's per-call timeout) always applies.
func (b *Sandboxes) execContext(ctx context.Context) (context.Context, func()) {
	ectx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var timer atomic.Pointer[time.Timer]
	stopAfter := context.AfterFunc(ctx, func() {
		if b.drain.Load() && b.opts.DrainTimeout > 0 && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			timer.Store(time.AfterFunc(b.opts.DrainTimeout, cancel))
			return
		}
		cancel()
	})
	return ectx, func() {
		stopAfter()
		if t := timer.Load(); t != nil {
			t.Stop()
		}
		cancel()
	}
}

// refuseReadOnly refuses write and edit into a read-only memory store, as the
// SDK's own file tools do.
func (s *session) refuseReadOnly(name string, input json.RawMessage) error {
	if name != toolexec.WriteName && name != toolexec.EditName {
		return nil
	}
	var in struct {
		FilePath string `json:"file_path"`
	}
	if json.Unmarshal(input, &in) != nil || in.FilePath == "" {
		return nil // toolexec names the input error
	}
	p := in.FilePath
	if !path.IsAbs(p) {
		p = path.Join(s.sbWorkdir, p)
	}
	p = path.Clean(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.mounts {
		if m.readOnly && within(m.sandbox, p) {
			return fmt.Errorf("%s: %s is in a read-only memory store", name, in.FilePath)
		}
	}
	return nil
}

// within reports whether p is dir or below it (both clean, slash-separated).
func within(dir, p string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// hostWithin is within for host paths.
func hostWithin(dir, p string) (string, bool) {
	rel, err := filepath.Rel(dir, p)
	if err != nil || !filepath.IsLocal(rel) && rel != "." {
		return "", false
	}
	return filepath.ToSlash(rel), true
}

// readAll reads a sandbox file whole.
func readAll(ctx context.Context, sb *sandbox.Sandbox, name string) ([]byte, error) {
	rc, err := sb.ReadFile(ctx, name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var buf bytes.Buffer
	_, err = io.Copy(&buf, rc)
	return buf.Bytes(), err
}
