package tunnel

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// stdioBridge serves a stdio MCP server as a Streamable HTTP endpoint: one
// child process per MCP session, session IDs "<connector>.<random>" owned by
// the connector, children ended when their session is deleted, goes idle, or
// the connector stops.
type stdioBridge struct {
	route     string
	connector string
	argv      []string
	env       []string
	dir       string
	idle      time.Duration
	logger    *slog.Logger
	metrics   Metrics
	caps      *childCaps // shared by the connector's stdio routes

	mu       sync.Mutex
	sessions map[string]*stdioSession
	closed   bool

	stop chan struct{}
	wg   sync.WaitGroup // the reaper and every session's pumps
}

type stdioSession struct {
	id        string
	transport *mcp.StreamableServerTransport
	server    mcp.Connection // faces HTTP
	child     mcp.Connection // the child's stdin/stdout
	pid       int
	client    string
	cancel    context.CancelFunc

	// guarded by stdioBridge.mu
	active   int
	lastUsed time.Time

	// inflight holds the IDs of the client's requests the child has not
	// answered; if the child dies they get an error at once.
	inflightMu sync.Mutex
	inflight   map[jsonrpc.ID]struct{}
	posts      int           // POST requests being served
	postsZero  chan struct{} // closed when posts drops to 0, if set

	closeOnce sync.Once
}

// childEnv is the environment of a stdio child when its route sets none: the
// connector's PATH and HOME, nothing else (never the connector's token).
func childEnv(extra []string) []string {
	var env []string
	for _, k := range []string{"PATH", "HOME"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return append(env, extra...)
}

func newStdioBridge(route, connector string, rt *Route, idle time.Duration, logger *slog.Logger, metrics Metrics) *stdioBridge {
	b := &stdioBridge{
		route: route, connector: connector,
		argv: rt.Command, env: childEnv(rt.Env), dir: rt.Dir,
		idle: idle, logger: logger, metrics: metrics,
		sessions: make(map[string]*stdioSession),
		stop:     make(chan struct{}),
	}
	return b
}

// start starts the idle reaper; close stops it.
func (b *stdioBridge) start() {
	b.wg.Add(1)
	go b.reap()
}

// errBridgeClosed is returned for a session asked of a stopped bridge.
var errBridgeClosed = errors.New("stdio bridge stopped")

// writeDiscoverRefusal answers a 2026-07-28 server/discover, which
// would make the session stateless: a bridged stdio server is stateful, so the
// client falls back to initialize.
func writeDiscoverRefusal(w http.ResponseWriter, id json.RawMessage) {
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	body, _ := json.Marshal(map[string]any{
		"jsonrpc": "2.0",
		"id":      id,
		"error": map[string]any{
			"code":    -32022, // UnsupportedProtocolVersion (SEP-2575)
			"message": "bridged stdio MCP servers are stateful: use initialize",
			"data":    map[string]any{"supported": []string{"2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"}, "requested": "2026-07-28"},
		},
	})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(body)
}

func (b *stdioBridge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sid := r.Header.Get("Mcp-Session-Id")
	var s *stdioSession
	if sid == "" {
		ci := callInfoFrom(r.Context())
		method := ""
		if ci != nil {
			method = ci.method
		}
		switch {
		case r.Method == http.MethodPost && method == "initialize":
			client := ""
			if ci != nil {
				client = ci.client
			}
			if status, why := b.caps.take(client); status != 0 {
				if ci != nil {
					ci.denied = why
				}
				b.logger.Warn("stdio session refused", "route", b.route, "client", client, "reason", why)
				writeRefusal(w, status, "tunnel: route "+b.route+": "+why)
				return
			}
			var err error
			if s, err = b.newSession(client); err != nil {
				b.caps.put(client)
				b.logger.Error("starting stdio MCP server", "route", b.route, "error", err)
				writeRPCError(w, http.StatusBadGateway, nil, -32603, "tunnel: route "+b.route+": starting the stdio server failed")
				return
			}
		case r.Method == http.MethodPost && method == "server/discover":
			writeDiscoverRefusal(w, ci.id)
			return
		default:
			writeRPCError(w, http.StatusBadRequest, nil, -32600, "Bad Request: missing Mcp-Session-Id (send initialize first)")
			return
		}
	} else {
		b.mu.Lock()
		s = b.sessions[sid]
		b.mu.Unlock()
		if s == nil {
			http.Error(w, "session not found", http.StatusNotFound) // as the MCP Go SDK
			return
		}
		if r.Method == http.MethodDelete {
			b.closeSession(s, "deleted")
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	b.mu.Lock()
	s.active++
	b.mu.Unlock()
	if r.Method == http.MethodPost {
		s.inflightMu.Lock()
		s.posts++
		s.inflightMu.Unlock()
		defer func() {
			s.inflightMu.Lock()
			if s.posts--; s.posts == 0 && s.postsZero != nil {
				close(s.postsZero)
				s.postsZero = nil
			}
			s.inflightMu.Unlock()
		}()
	}
	defer func() {
		b.mu.Lock()
		s.active--
		s.lastUsed = time.Now()
		b.mu.Unlock()
	}()
	s.transport.ServeHTTP(w, r)
}

func (b *stdioBridge) newSession(client string) (*stdioSession, error) {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return nil, errBridgeClosed
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &stdioSession{
		id:        b.connector + "." + rand.Text(),
		client:    client,
		inflight:  make(map[jsonrpc.ID]struct{}),
		cancel:    cancel,
		lastUsed:  time.Now(),
		transport: nil,
	}
	s.transport = &mcp.StreamableServerTransport{SessionID: s.id, EventStore: mcp.NewMemoryEventStore(nil)}
	var err error
	if s.server, err = s.transport.Connect(ctx); err != nil {
		cancel()
		return nil, err
	}
	cmd := exec.Command(b.argv[0], b.argv[1:]...)
	cmd.Env = b.env
	cmd.Dir = b.dir
	ct := &mcp.CommandTransport{Command: cmd, TerminateDuration: 2 * time.Second}
	if s.child, err = ct.Connect(ctx); err != nil {
		s.server.Close()
		cancel()
		return nil, err
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		s.server.Close()
		s.child.Close()
		cancel()
		return nil, errBridgeClosed
	}
	s.pid = cmd.Process.Pid
	b.sessions[s.id] = s
	b.wg.Add(2)
	b.mu.Unlock()
	go b.pump(ctx, s, s.server, s.child, true)
	go b.pump(ctx, s, s.child, s.server, false)
	b.metrics.Count("tunnel_stdio_sessions_total", "route", b.route)
	b.logger.Info("stdio session started", "route", b.route, "session", s.id, "pid", cmd.Process.Pid)
	return s, nil
}

// pump copies JSON-RPC messages from src to dst until either fails; then the
// whole session ends. toChild is set for the direction client → child, whose
// requests are noted until the child answers them.
func (b *stdioBridge) pump(ctx context.Context, s *stdioSession, src, dst mcp.Connection, toChild bool) {
	defer b.wg.Done()
	for {
		msg, err := src.Read(ctx)
		if err != nil {
			if !toChild && ctx.Err() == nil {
				// The child's stdout ended: it exited or crashed. Its
				// unanswered calls fail now, as a direct stdio client's
				// would, rather than at the client's timeout.
				s.failInflight(ctx)
			}
			break
		}
		switch m := msg.(type) {
		case *jsonrpc.Request:
			if toChild && m.ID.IsValid() {
				s.inflightMu.Lock()
				s.inflight[m.ID] = struct{}{}
				s.inflightMu.Unlock()
			}
		case *jsonrpc.Response:
			if !toChild {
				s.inflightMu.Lock()
				delete(s.inflight, m.ID)
				s.inflightMu.Unlock()
			}
		}
		if err := dst.Write(ctx, msg); err != nil {
			break
		}
	}
	b.closeSession(s, "ended")
}

// failInflight answers every request the child left unanswered with a
// JSON-RPC error.
func (s *stdioSession) failInflight(ctx context.Context) {
	s.inflightMu.Lock()
	ids := make([]jsonrpc.ID, 0, len(s.inflight))
	for id := range s.inflight {
		ids = append(ids, id)
	}
	clear(s.inflight)
	s.inflightMu.Unlock()
	for _, id := range ids {
		_ = s.server.Write(ctx, &jsonrpc.Response{ID: id, Error: &jsonrpc.Error{
			Code: codeConnectionClosed, Message: "Connection closed: the stdio MCP server exited"}})
	}
	// Let the calls' own streams carry these errors before the session
	// (and its standalone stream) closes; bounded in case a client stops
	// reading.
	s.inflightMu.Lock()
	if s.posts == 0 {
		s.inflightMu.Unlock()
		return
	}
	done := make(chan struct{})
	s.postsZero = done
	s.inflightMu.Unlock()
	t := time.NewTimer(2 * time.Second)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// codeConnectionClosed is the JSON-RPC code MCP SDKs use for a connection
// that closed with a request outstanding.
const codeConnectionClosed = -32000

// closeSession ends s: it leaves the session table at once (a DELETE is
// answered without waiting) and the child is ended in the background:
// stdin closed, then SIGTERM after a grace period, then SIGKILL.
func (b *stdioBridge) closeSession(s *stdioSession, why string) {
	s.closeOnce.Do(func() {
		b.wg.Add(1)
		b.mu.Lock()
		delete(b.sessions, s.id)
		b.mu.Unlock()
		s.cancel()
		s.server.Close()
		go func() {
			defer b.wg.Done()
			err := s.child.Close()
			b.caps.put(s.client)
			b.logger.Info("stdio session closed", "route", b.route, "session", s.id, "reason", why, "exit", errString(err))
		}()
	})
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// reap ends sessions with no request in flight for longer than b.idle.
func (b *stdioBridge) reap() {
	defer b.wg.Done()
	every := min(max(b.idle/4, 10*time.Millisecond), 30*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case now := <-t.C:
			var idle []*stdioSession
			b.mu.Lock()
			for _, s := range b.sessions {
				if s.active == 0 && now.Sub(s.lastUsed) > b.idle {
					idle = append(idle, s)
				}
			}
			b.mu.Unlock()
			for _, s := range idle {
				b.metrics.Count("tunnel_stdio_sessions_reaped_total", "route", b.route)
				b.closeSession(s, "idle")
			}
		}
	}
}

// childCaps counts a connector's stdio children, in all and per client.
type childCaps struct {
	max, perClient int

	mu       sync.Mutex
	total    int
	byClient map[string]int
}

// take reserves a child for client, or returns the HTTP status and reason
// of the refusal.
func (c *childCaps) take(client string) (int, string) {
	if c == nil {
		return 0, ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byClient[client] >= c.perClient {
		return http.StatusTooManyRequests, fmt.Sprintf("too many stdio sessions for this client (limit %d): end one (DELETE) or wait", c.perClient)
	}
	if c.total >= c.max {
		return http.StatusServiceUnavailable, fmt.Sprintf("too many stdio sessions in all (limit %d): try again later", c.max)
	}
	c.total++
	c.byClient[client]++
	return 0, ""
}

// put releases a child taken for client.
func (c *childCaps) put(client string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total--
	if c.byClient[client]--; c.byClient[client] <= 0 {
		delete(c.byClient, client)
	}
}

// pids reports the child process of every live session.
func (b *stdioBridge) pids() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := make(map[string]int, len(b.sessions))
	for id, s := range b.sessions {
		m[id] = s.pid
	}
	return m
}

// sessionCount reports the live sessions.
func (b *stdioBridge) sessionCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.sessions)
}

// close ends every session and child and waits for them.
func (b *stdioBridge) close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	all := make([]*stdioSession, 0, len(b.sessions))
	for _, s := range b.sessions {
		all = append(all, s)
	}
	b.mu.Unlock()
	close(b.stop)
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Go(func() { b.closeSession(s, "connector stopped") })
	}
	wg.Wait()
	b.wg.Wait()
}
