package tunnel

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// Requests of one MCP session that arrive together must reach the upstream
// in the order they arrived (a client may post a notification and the next
// request back to back). HTTP gives no such order across connections, and
// the tunnel adds hops where goroutines race, so both ends keep it:
//
//   - the edge gives each POST of a session a place in line when it arrives,
//     sends it only after the one before has been handed to the carrier
//     (its body read to the end, or its answer begun), pins a session to one
//     carrier connection, and numbers what it sends (Perimeter-Seq);
//   - the connector starts request n of a session only after request n-1 has
//     been handed to the upstream (its body read to the end by the upstream
//     transport or the stdio bridge, or its handler done).
//
// A connector that has no record of a session (a new one, or after the
// session moved to this connector) takes the first number it sees as the
// start; a number at or below the last one seen passes at once (the edge
// restarted), so a lost request can never block a session.
//
// Each edge numbers a session's requests on its own, so the connector keeps
// one count per session and edge (the address it dialed): requests of one
// session through one edge keep their order; requests of the same session
// through two edges are ordered per edge only, and neither waits for the
// other's numbers.

// seqHeader carries a request's number within its session from the edge to
// the connector; the edge always replaces a client's own value.
const seqHeader = "Perimeter-Seq"

// edgeLine keeps the edge's per-session lines.
type edgeLine struct {
	mu       sync.Mutex
	sessions map[string]*edgeLineSession
}

type edgeLineSession struct {
	last    chan struct{} // closed when the last request in line is handed on
	sent    int64         // requests handed to the carrier so far
	waiting int
	peer    *peer // the carrier connection the session's requests went to
}

// ticket is one request's place in its session's line.
type ticket struct {
	line    *edgeLine
	id      string
	s       *edgeLineSession
	prev    chan struct{}
	mine    chan struct{}
	once    sync.Once
	counted bool
}

// take puts a request of session id in line.
func (l *edgeLine) take(id string) *ticket {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sessions == nil {
		l.sessions = make(map[string]*edgeLineSession)
	}
	s := l.sessions[id]
	if s == nil {
		if len(l.sessions) >= 65536 {
			// Sessions that ended without DELETE: forget the idle ones
			// (their next request starts a new count at the connector).
			for k, v := range l.sessions {
				if v.waiting == 0 {
					delete(l.sessions, k)
				}
			}
		}
		s = &edgeLineSession{}
		l.sessions[id] = s
	}
	t := &ticket{line: l, id: id, s: s, prev: s.last, mine: make(chan struct{})}
	s.last = t.mine
	s.waiting++
	return t
}

// wait blocks until the request before t has been handed on, then returns
// t's number.
func (t *ticket) wait(ctx context.Context) (int64, error) {
	if t.prev != nil {
		select {
		case <-t.prev:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	t.line.mu.Lock()
	defer t.line.mu.Unlock()
	return t.s.sent + 1, nil
}

// handedOn records that t's request reached the carrier and lets the next
// request go.
func (t *ticket) handedOn() {
	t.line.mu.Lock()
	if !t.counted {
		t.counted = true
		t.s.sent++
	}
	t.line.mu.Unlock()
	t.release()
}

// release lets the next request go (t was refused or failed). The next one
// still waits for the request before t, if t gave up waiting for it.
func (t *ticket) release() {
	t.once.Do(func() {
		if t.prev != nil {
			select {
			case <-t.prev:
			default:
				prev, mine := t.prev, t.mine
				go func() { <-prev; close(mine) }()
				t.forget()
				return
			}
		}
		close(t.mine)
		t.forget()
	})
}

func (t *ticket) forget() {
	t.line.mu.Lock()
	defer t.line.mu.Unlock()
	if t.s.waiting--; t.s.waiting == 0 && t.line.sessions[t.id] == t.s {
		// Nobody in line: the numbering starts again at the connector's
		// last number + 1 only if kept, so keep the count.
		t.s.last = nil
	}
}

// seqValue returns the Perimeter-Seq value of request n of session id about
// to go over p: "n", or "n base" when the session's requests went over
// another connection before (or none did), so that the connector starts
// its count there.
func (l *edgeLine) seqValue(id string, n int64, p *peer) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	v := strconv.FormatInt(n, 10)
	s := l.sessions[id]
	if s == nil {
		return v + " base"
	}
	if s.peer != p {
		s.peer = p
		return v + " base"
	}
	return v
}

// drop forgets a session that ended.
func (l *edgeLine) drop(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := l.sessions[id]; s != nil && s.waiting == 0 {
		delete(l.sessions, id)
	}
}

// connectorGate keeps the connector's per-session order.
type connectorGate struct {
	mu       sync.Mutex
	sessions map[gateKey]*gateSession
	edges    map[string]struct{} // every edge seen, for forget
}

// gateKey names a session's count: the session as numbered by one edge.
type gateKey struct{ edge, id string }

type gateSession struct {
	last    int64         // highest number handed to the upstream
	changed chan struct{} // closed (and replaced) whenever last grows
}

// start records a new session (its initialize was answered here): its
// requests are counted from 1.
func (g *connectorGate) start(k gateKey) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.session(k, 0)
}

// session returns the record of id, making one whose last number is last.
func (g *connectorGate) session(k gateKey, last int64) *gateSession {
	if g.sessions == nil {
		g.sessions = make(map[gateKey]*gateSession)
		g.edges = make(map[string]struct{})
	}
	g.edges[k.edge] = struct{}{}
	s := g.sessions[k]
	if s == nil {
		if len(g.sessions) >= 65536 {
			// Forget old records rather than grow; a forgotten session's
			// next request starts a new count.
			for k, v := range g.sessions {
				delete(g.sessions, k)
				close(v.changed)
			}
		}
		s = &gateSession{last: last, changed: make(chan struct{})}
		g.sessions[k] = s
	}
	return s
}

// enter waits until request n of session k may go to the upstream. base
// starts the count at n (the session's requests came over another
// connection before).
func (g *connectorGate) enter(ctx context.Context, k gateKey, n int64, base bool) error {
	if base {
		g.mu.Lock()
		s := g.session(k, n-1)
		if s.last < n-1 || s.last >= n {
			s.last = n - 1
			close(s.changed)
			s.changed = make(chan struct{})
		}
		g.mu.Unlock()
		return nil
	}
	for {
		g.mu.Lock()
		s := g.session(k, n-1)
		if n <= s.last+1 {
			g.mu.Unlock()
			return nil
		}
		ch := s.changed
		g.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// handedOn records that request n of session k reached the upstream.
func (g *connectorGate) handedOn(k gateKey, n int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.sessions[k]
	if s == nil || n <= s.last {
		return
	}
	s.last = n
	close(s.changed)
	s.changed = make(chan struct{})
}

// forget drops the records of a session that ended, from every edge.
func (g *connectorGate) forget(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for e := range g.edges {
		k := gateKey{e, id}
		if s := g.sessions[k]; s != nil {
			delete(g.sessions, k)
			close(s.changed)
		}
	}
}

// handedOnKey holds the handedOnFuncs of a request in line.
type handedOnKey struct{}

// handedOnFuncs are called by the body a guard passes on: eof once
// whatever is behind the guard has read it to the end (so the request has
// been handed on), closed if it is closed before that.
type handedOnFuncs struct{ eof, closed func() }

// onEOF reports the end of a request body.
type onEOF struct {
	io.ReadCloser
	once sync.Once
	f    handedOnFuncs
}

func (b *onEOF) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.once.Do(b.f.eof)
	}
	return n, err
}

func (b *onEOF) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.f.closed)
	return err
}

// parseSeq reads a request's Perimeter-Seq header (0 when absent or bad).
func parseSeq(r *http.Request) (n int64, base bool) {
	v, b := strings.CutSuffix(r.Header.Get(seqHeader), " base")
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, false
	}
	return n, b
}

// sessionStarter tells the gate about a session an initialize answer
// created.
type sessionStarter struct {
	http.ResponseWriter
	gate *connectorGate
	edge string
	once sync.Once
}

func (s *sessionStarter) start() {
	s.once.Do(func() {
		if id := s.Header().Get("Mcp-Session-Id"); id != "" {
			s.gate.start(gateKey{s.edge, id})
		}
	})
}

func (s *sessionStarter) WriteHeader(code int) {
	if code >= 200 {
		s.start()
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *sessionStarter) Write(p []byte) (int, error) {
	s.start()
	return s.ResponseWriter.Write(p)
}

// Flush keeps SSE unbuffered.
func (s *sessionStarter) Flush() { _ = http.NewResponseController(s.ResponseWriter).Flush() }

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *sessionStarter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
