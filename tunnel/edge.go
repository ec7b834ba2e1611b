package tunnel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ErrEdgeClosed is returned by [Edge.Serve] after [Edge.Close].
var ErrEdgeClosed = errors.New("tunnel: edge closed")

// EdgeOptions configures an [Edge]. TLSConfig with a server certificate is
// required, and at least one way to authenticate connectors: Tokens, or
// TLSConfig.ClientAuth = tls.RequireAndVerifyClientCert with ClientCAs. When
// both are set, a connector needs both.
type EdgeOptions struct {
	// TLSConfig is the TLS server configuration for connectors' carrier
	// connections: Certificates, and ClientCAs/ClientAuth for mTLS. The edge
	// forces TLS 1.3 and its own ALPN protocol.
	TLSConfig *tls.Config
	// Tokens are the accepted connector tokens (each at least 16
	// characters). Several may be valid at once, so a token can be rotated
	// without dropping a connection.
	Tokens []string
	// Authorize, if set, is asked about every connector that passed
	// authentication, before it is admitted: return an error to refuse it.
	// Use it to bind a token or a certificate to a connector ID and to the
	// routes it may serve (without it, any authenticated connector may serve
	// any route it advertises).
	Authorize func(ConnectorIdentity) error
	// MaxPendingHandshakes bounds the connections in the TLS handshake or
	// hello at once; more are closed at once. Default 256.
	MaxPendingHandshakes int
	// ClientAuth authenticates the MCP clients that call Handler (the
	// in-process HTTPClient is always admitted). Required: set Tokens,
	// ClientCAs, or Disabled.
	ClientAuth ClientAuth
	// MaxSessions bounds the MCP sessions open through the edge in all;
	// MaxSessionsPerClient bounds them per authenticated client (per
	// address when ClientAuth is Disabled; the in-process client only
	// counts toward MaxSessions). An initialize beyond them gets
	// 503 or 429 with a JSON-RPC error. Defaults 1024 and 64.
	MaxSessions, MaxSessionsPerClient int
	// SessionIdleTimeout is how long a session without requests still
	// counts against the caps; default 10 minutes (a connector's own
	// default idle timeout).
	SessionIdleTimeout time.Duration
	// Policy applies at the edge to every route.
	Policy Policy
	// Routes adds per-route policy to Policy (see [Policy.Merge]: a route
	// can replace the allow lists, body cap and protocol versions, and adds
	// deny rules, origins and hosts; it never drops the global ones).
	Routes map[string]Policy
	// Connectors lists the IDs of the connectors the edge expects. /healthz
	// reports "degraded" while one of them (or any connector seen since
	// the edge started) has no connection.
	Connectors []string
	// HandshakeTimeout bounds a connector's TLS handshake and hello;
	// default 10 s.
	HandshakeTimeout time.Duration
	// PingInterval and PingTimeout: after PingInterval without a frame from
	// a connector the edge sends an HTTP/2 PING, and drops the connection if
	// no answer comes within PingTimeout. Defaults 15 s and 5 s.
	PingInterval, PingTimeout time.Duration
	// Logger receives connection events and one audit record per call;
	// default slog.Default().
	Logger *slog.Logger
	// Metrics receives counters and histograms; default none.
	Metrics Metrics
}

// ConnectorIdentity is what an edge knows about an authenticated connector,
// for [EdgeOptions.Authorize].
type ConnectorIdentity struct {
	// ID and Routes are as the connector declared them in its hello.
	ID     string
	Routes []string
	// TokenIndex is the index in EdgeOptions.Tokens of the token the
	// connector presented, or -1 when no token was required.
	TokenIndex int
	// Certificate is the connector's verified client certificate, or nil.
	Certificate *x509.Certificate
}

// Edge is the host application's end of the tunnel. It accepts connectors on
// the listeners given to [Edge.Serve] and serves their routes through
// [Edge.Handler]. Create it with [NewEdge]; stop it with [Edge.Close].
type Edge struct {
	opts    EdgeOptions
	tlsConf *tls.Config
	tokens  tokenSet
	logger  *slog.Logger
	metrics Metrics
	h2      *http.Transport // only for NewClientConn over carrier connections
	proxy   *httputil.ReverseProxy
	handler http.Handler
	rr      atomic.Uint64
	auth    *clientAuth
	caps    *sessionCaps
	line    edgeLine

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	peers     map[*peer]struct{}
	seen      map[string]*hello     // every connector seen, by ID: its last hello
	pending   map[net.Conn]struct{} // connections in the handshake
	wg        sync.WaitGroup        // handshakes and peer watchers
}

// peer is one authenticated carrier connection from a connector.
type peer struct {
	hello *hello
	cc    *http.ClientConn
	conn  *watchedConn
	since time.Time
}

// watchedConn signals done when a read fails: the HTTP/2 client's read loop
// is then over, and the connection is dead. Close closes the underlying
// transport connection at once, without a TLS close_notify that could block
// behind a stuck write (GOAWAY is the graceful path).
//
// It also ends a connection the connector has drained: after GOAWAY the
// connector's HTTP/2 server waits for this side to close (for up to a
// second, the server's fixed GOAWAY timeout). The HTTP/2 client closes it
// when its last request ends, but not when GOAWAY finds it idle; so before
// each read (the client's read loop reads again right after handling
// GOAWAY) a connection that can take no request and has none is closed.
type watchedConn struct {
	net.Conn
	raw  net.Conn
	once sync.Once
	done chan struct{}
	cc   atomic.Pointer[http.ClientConn] // set once the client exists
}

func (w *watchedConn) Close() error { return w.raw.Close() }

// closeIfDrained closes the connection if it can take no request and has
// none in flight: after a GOAWAY, or once the client has given it up. A
// usable connection with nothing in flight can always take a request
// (Available is its concurrency limit); a busy one can read Available 0 at
// its limit, so InFlight is read on both sides: a connection would have to
// fill to its limit and empty again between the reads to be taken for
// drained.
func (w *watchedConn) closeIfDrained() {
	cc := w.cc.Load()
	if cc == nil || cc.InFlight() != 0 || cc.Available() != 0 || cc.InFlight() != 0 {
		return
	}
	w.raw.Close()
}

func (w *watchedConn) Read(p []byte) (int, error) {
	w.closeIfDrained()
	n, err := w.Conn.Read(p)
	if err != nil {
		w.once.Do(func() { close(w.done) })
	}
	return n, err
}

// NewEdge checks opts and returns an edge.
func NewEdge(opts *EdgeOptions) (*Edge, error) {
	if opts == nil {
		return nil, errors.New("tunnel: edge: nil options")
	}
	o := *opts
	if o.TLSConfig == nil || (len(o.TLSConfig.Certificates) == 0 && o.TLSConfig.GetCertificate == nil && o.TLSConfig.GetConfigForClient == nil) {
		return nil, errors.New("tunnel: edge: TLSConfig with a server certificate is required")
	}
	tokens, err := newTokenSet(o.Tokens)
	if err != nil {
		return nil, fmt.Errorf("tunnel: edge: %w", err)
	}
	mtls := o.TLSConfig.ClientAuth == tls.RequireAndVerifyClientCert
	if len(tokens) == 0 && !mtls {
		return nil, errors.New("tunnel: edge: no connector authentication: set Tokens, or TLSConfig.ClientAuth = tls.RequireAndVerifyClientCert with ClientCAs")
	}
	if err := o.Policy.validate(); err != nil {
		return nil, fmt.Errorf("tunnel: edge: policy: %w", err)
	}
	auth, err := newClientAuth(o.ClientAuth)
	if err != nil {
		return nil, fmt.Errorf("tunnel: edge: %w", err)
	}
	for name, p := range o.Routes {
		if err := p.validate(); err != nil {
			return nil, fmt.Errorf("tunnel: edge: route %q policy: %w", name, err)
		}
	}
	setDefault(&o.HandshakeTimeout, 10*time.Second)
	if o.MaxPendingHandshakes <= 0 {
		o.MaxPendingHandshakes = 256
	}
	setDefault(&o.PingInterval, 15*time.Second)
	setDefault(&o.PingTimeout, 5*time.Second)
	setDefault(&o.SessionIdleTimeout, 10*time.Minute)
	if o.MaxSessions <= 0 {
		o.MaxSessions = 1024
	}
	if o.MaxSessionsPerClient <= 0 {
		o.MaxSessionsPerClient = 64
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Metrics == nil {
		o.Metrics = nopMetrics{}
	}
	if auth.disabled {
		o.Logger.Warn("MCP CLIENT AUTHENTICATION IS DISABLED: anyone who can reach the edge's MCP handler can call every route and start stdio servers (within the session caps)",
			"max_sessions", o.MaxSessions, "max_sessions_per_client", o.MaxSessionsPerClient)
	}
	e := &Edge{
		opts: o, tokens: tokens, logger: o.Logger, metrics: o.Metrics, auth: auth,
		caps:      newSessionCaps(o.MaxSessions, o.MaxSessionsPerClient, o.SessionIdleTimeout),
		listeners: make(map[net.Listener]struct{}),
		peers:     make(map[*peer]struct{}),
		seen:      make(map[string]*hello),
		pending:   make(map[net.Conn]struct{}),
	}
	e.tlsConf = o.TLSConfig.Clone()
	e.tlsConf.MinVersion = tls.VersionTLS13
	e.tlsConf.NextProtos = []string{ALPN}
	// HTTP/2 with prior knowledge over the carrier connection, which
	// newPeer hands to the transport through the dial context. Connections
	// made with NewClientConn stay out of the transport's pool.
	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	e.h2 = &http.Transport{
		Protocols:          &h2c,
		DisableCompression: true,
		HTTP2: &http.HTTP2Config{
			SendPingTimeout:  o.PingInterval,
			PingTimeout:      o.PingTimeout,
			MaxReadFrameSize: 1 << 20,
		},
		// The tunnel carries long-lived SSE streams: do not close idle
		// connections, the connector owns their life.
		IdleConnTimeout: 0,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			if c, ok := ctx.Value(carrierKey{}).(net.Conn); ok {
				return c, nil
			}
			return nil, errors.New("tunnel: edge: no carrier connection to run HTTP/2 on")
		},
	}
	e.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			fw := pr.In.Context().Value(forwardKey{}).(*forward)
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = "connector"
			pr.Out.URL.Path = fw.path
			pr.Out.URL.RawPath = ""
			pr.Out.URL.RawQuery = pr.In.URL.RawQuery
			pr.Out.Header.Del(clientHeader)
			pr.Out.Header.Del(seqHeader) // set by edgeTransport
			if ci := callInfoFrom(pr.In.Context()); ci != nil {
				pr.Out.Header.Set(clientHeader, ci.client)
			}
		},
		Transport:     edgeTransport{e},
		FlushInterval: -1,
		BufferPool:    proxyBuffers,
		ModifyResponse: func(resp *http.Response) error {
			if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
				// Ask proxies in front of the host (nginx and the like) not
				// to buffer the stream either.
				resp.Header.Set("X-Accel-Buffering", "no")
			}
			return nil
		},
		ErrorLog: slog.NewLogLogger(o.Logger.Handler(), slog.LevelDebug),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			fw := r.Context().Value(forwardKey{}).(*forward)
			e.logger.Warn("forwarding to connector failed", "route", fw.route, "error", err)
			http.Error(w, fmt.Sprintf("tunnel: route %q: connector connection failed: %v", fw.route, err), http.StatusBadGateway)
		},
	}
	e.handler = http.HandlerFunc(e.serveHTTP)
	return e, nil
}

// Serve accepts connectors on ln (a TCP listener; the edge does TLS itself)
// until ln fails or the edge is closed, and returns ErrEdgeClosed after
// Close. Serve may be called for several listeners.
func (e *Edge) Serve(ln net.Listener) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		ln.Close()
		return ErrEdgeClosed
	}
	e.listeners[ln] = struct{}{}
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.listeners, ln)
		e.mu.Unlock()
	}()
	var tempDelay time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			e.mu.Lock()
			closed := e.closed
			e.mu.Unlock()
			if closed {
				return ErrEdgeClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				tempDelay = min(max(2*tempDelay, 5*time.Millisecond), time.Second)
				time.Sleep(tempDelay)
				continue
			}
			return err
		}
		tempDelay = 0
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			conn.Close()
			return ErrEdgeClosed
		}
		if len(e.pending) >= e.opts.MaxPendingHandshakes {
			e.mu.Unlock()
			conn.Close()
			e.handshakeFailed(conn.RemoteAddr().String(), "overload", errors.New("too many handshakes in progress"))
			continue
		}
		e.pending[conn] = struct{}{}
		e.wg.Add(1)
		e.mu.Unlock()
		go e.accept(conn)
	}
}

// accept authenticates a connector and adds its connection.
func (e *Edge) accept(raw net.Conn) {
	defer e.wg.Done()
	drop := func() {
		e.mu.Lock()
		delete(e.pending, raw)
		e.mu.Unlock()
	}
	raw.SetDeadline(time.Now().Add(e.opts.HandshakeTimeout))
	tc := tls.Server(raw, e.tlsConf)
	if err := tc.Handshake(); err != nil {
		e.handshakeFailed(raw.RemoteAddr().String(), "tls", err)
		raw.Close()
		drop()
		return
	}
	if tc.ConnectionState().NegotiatedProtocol != ALPN {
		e.handshakeFailed(raw.RemoteAddr().String(), "alpn", errors.New("client did not negotiate "+ALPN))
		tc.Close()
		drop()
		return
	}
	var cert *x509.Certificate
	if chains := tc.ConnectionState().VerifiedChains; len(chains) > 0 {
		cert = chains[0][0]
	}
	e.attach(tc, raw, raw, raw.RemoteAddr().String(), cert)
}

// attach authenticates a connector on conn (TLS already done; raw is the
// connection under TLS) and serves it until the connection ends. pending is
// the key conn was registered under in e.pending.
func (e *Edge) attach(conn, raw, pending net.Conn, remote string, cert *x509.Certificate) {
	drop := func() {
		e.mu.Lock()
		delete(e.pending, pending)
		e.mu.Unlock()
	}
	h, err := e.handshake(conn, cert)
	if err != nil {
		e.handshakeFailed(remote, "hello", err)
		conn.Close()
		drop()
		return
	}
	conn.SetDeadline(time.Time{})
	wc := &watchedConn{Conn: conn, raw: raw, done: make(chan struct{})}
	cc, err := e.h2.NewClientConn(context.WithValue(context.Background(), carrierKey{}, net.Conn(wc)), "http", "connector:80")
	if err != nil {
		e.handshakeFailed(remote, "http2", err)
		conn.Close()
		drop()
		return
	}
	wc.cc.Store(cc)
	p := &peer{hello: h, cc: cc, conn: wc, since: time.Now()}
	e.mu.Lock()
	delete(e.pending, pending)
	if e.closed {
		e.mu.Unlock()
		cc.Close()
		return
	}
	e.peers[p] = struct{}{}
	e.seen[h.Connector] = h
	e.mu.Unlock()
	e.metrics.Count("tunnel_connects_total", "side", "edge", "connector", h.Connector)
	e.logger.Info("connector connected", "connector", h.Connector, "version", h.Version, "routes", h.Routes, "remote", remote)
	<-wc.done
	e.mu.Lock()
	delete(e.peers, p)
	e.mu.Unlock()
	cc.Close()
	e.metrics.Count("tunnel_disconnects_total", "side", "edge", "connector", h.Connector)
	e.logger.Info("connector disconnected", "connector", h.Connector, "remote", remote)
}

func (e *Edge) handshakeFailed(remote string, reason string, err error) {
	e.metrics.Count("tunnel_handshake_failures_total", "reason", reason)
	e.logger.Warn("connector refused", "remote", remote, "stage", reason, "error", err)
}

// handshake reads a hello from conn, authenticates it and answers. The TLS
// layer (and a client certificate, if required) is already verified; cert is
// that certificate or nil.
func (e *Edge) handshake(conn io.ReadWriter, cert *x509.Certificate) (*hello, error) {
	h, err := readHello(conn)
	if err != nil {
		writeFrame(conn, &welcome{Error: "malformed handshake"})
		return nil, err
	}
	idx := -1
	if len(e.tokens) > 0 {
		if idx = e.tokens.index(h.Token); idx < 0 {
			writeFrame(conn, &welcome{Error: "authentication failed"})
			return nil, fmt.Errorf("connector %q: wrong or missing token", h.Connector)
		}
	}
	h.Token = "" // not kept
	if e.opts.Authorize != nil {
		id := ConnectorIdentity{ID: h.Connector, Routes: slices.Clone(h.Routes), TokenIndex: idx, Certificate: cert}
		if err := e.opts.Authorize(id); err != nil {
			writeFrame(conn, &welcome{Error: "not authorized"})
			return nil, fmt.Errorf("connector %q not authorized: %w", h.Connector, err)
		}
	}
	if err := writeFrame(conn, &welcome{OK: true}); err != nil {
		return nil, err
	}
	return h, nil
}

// Handler returns the http.Handler that serves every route as an MCP
// Streamable HTTP endpoint at /<route> (and below it), OAuth discovery at
// /.well-known/<kind>/<route>, and the edge's status at /healthz. Mount it
// with http.StripPrefix to serve it under a prefix.
func (e *Edge) Handler() http.Handler { return e.handler }

type forwardKey struct{}

// carrierKey passes a carrier connection to the HTTP/2 transport's dialer.
type carrierKey struct{}

// forward is where the edge sends one request.
type forward struct {
	route   string
	path    string
	session string
	ticket  *ticket // the request's place in its session's line, or nil
	seq     int64   // its number, once its turn came
}

func (e *Edge) serveHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if p == "/healthz" {
		e.serveHealth(w, r)
		return
	}
	client, ok := e.auth.authenticate(r)
	if !ok {
		e.logger.Warn("MCP client refused", "remote", r.RemoteAddr, "path", p, "reason", "authentication failed")
		e.metrics.Count("tunnel_client_auth_failures_total")
		if e.auth.bearer {
			w.Header().Set("WWW-Authenticate", `Bearer realm="perimeter-edge"`)
		}
		writeRefusal(w, http.StatusUnauthorized, "tunnel: MCP client authentication failed: present the edge's client token or certificate")
		return
	}
	client = sanitizeClient(client)
	r = r.WithContext(context.WithValue(r.Context(), clientKey{}, client))
	if rest, ok := strings.CutPrefix(p, "/.well-known/"); ok {
		kind, rest := splitFirst(rest)
		route, rest := splitFirst(strings.TrimPrefix(rest, "/"))
		if kind == "" || !ValidName(route) {
			http.NotFound(w, r)
			return
		}
		fw := &forward{route: route, path: "/well-known/" + route + "/" + kind + rest}
		e.forwardTo(w, r.WithContext(context.WithValue(r.Context(), forwardKey{}, fw)))
		return
	}
	route, rest := splitFirst(strings.TrimPrefix(p, "/"))
	if !ValidName(route) {
		http.NotFound(w, r)
		return
	}
	fw := &forward{route: route, path: "/route/" + route + rest, session: r.Header.Get("Mcp-Session-Id")}
	if fw.session != "" && r.Method == http.MethodPost {
		// Take this request's place in its session's line now, as it
		// arrives (see order.go).
		t := e.line.take(fw.session)
		defer t.release()
		fw.ticket = t
		r = r.WithContext(context.WithValue(r.Context(), handedOnKey{}, handedOnFuncs{eof: t.handedOn, closed: t.release}))
	}
	g := e.guard(route)
	g.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), forwardKey{}, fw)))
}

// guard builds the policy guard for route. It is built per request (it is
// small) so that requests for unknown route names cannot grow any table.
func (e *Edge) guard(route string) *guard {
	pol := e.opts.Policy
	if rp, ok := e.opts.Routes[route]; ok {
		pol = pol.Merge(rp)
	}
	return &guard{side: "edge", route: route, policy: pol, next: http.HandlerFunc(e.forwardTo), logger: e.logger, metrics: e.metrics,
		front: true, client: clientFrom}
}

type clientKey struct{}

func clientFrom(r *http.Request) string {
	s, _ := r.Context().Value(clientKey{}).(string)
	return s
}

// forwardTo checks that a connector serves the route, then proxies.
func (e *Edge) forwardTo(w http.ResponseWriter, r *http.Request) {
	fw := r.Context().Value(forwardKey{}).(*forward)
	p, status := e.pick(fw.route, fw.session, nil)
	if p == nil {
		msg := fmt.Sprintf("tunnel: no connector serves route %q", fw.route)
		if status == http.StatusNotFound {
			msg = "Not Found: the session's connector is gone; initialize a new session"
		}
		http.Error(w, msg, status)
		return
	}
	ci := callInfoFrom(r.Context())
	if ci != nil {
		ci.connector = p.hello.Connector
	}
	if ci == nil { // OAuth discovery: no session to count
		e.proxy.ServeHTTP(w, r)
		return
	}
	if fw.ticket != nil {
		n, err := fw.ticket.wait(r.Context())
		if err != nil {
			return // the client went away while waiting for its turn
		}
		fw.seq = n
	}
	e.forwardCounted(w, r, ci)
}

// forwardCounted proxies r within the session caps.
func (e *Edge) forwardCounted(w http.ResponseWriter, r *http.Request, ci *callInfo) {
	e.caps.serve(w, r, ci, e.proxy)
	if sid := r.Header.Get("Mcp-Session-Id"); sid != "" && r.Method == http.MethodDelete {
		e.line.drop(sid)
	}
}

// serve passes r to next within the caps: an initialize without a session
// needs a free slot, and a session ends with DELETE or a 404 on it.
func (c *sessionCaps) serve(w http.ResponseWriter, r *http.Request, ci *callInfo, next http.Handler) {
	sid := r.Header.Get("Mcp-Session-Id")
	now := time.Now()
	if sid == "" && r.Method == http.MethodPost && ci.method == "initialize" {
		if status, why := c.reserve(ci.client, now); status != 0 {
			ci.denied = why
			writeRefusal(w, status, "tunnel: "+why)
			return
		}
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		got := ""
		if sw.status/100 == 2 {
			got = sw.Header().Get("Mcp-Session-Id")
		}
		c.settle(ci.client, got, time.Now())
		return
	}
	if sid == "" {
		next.ServeHTTP(w, r)
		return
	}
	c.begin(sid, now)
	sw := &statusWriter{ResponseWriter: w}
	next.ServeHTTP(sw, r)
	gone := sw.status == http.StatusNotFound || (r.Method == http.MethodDelete && sw.status/100 == 2)
	c.end(sid, gone, time.Now())
}

// statusWriter notes the status of a response.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 && code >= 200 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
}

// Flush keeps SSE unbuffered.
func (s *statusWriter) Flush() { _ = http.NewResponseController(s.ResponseWriter).Flush() }

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// pick chooses a connection for route. A session ID "<connector>.<random>"
// naming a known connector goes to that connector (a stdio session lives in
// one process); otherwise connections take turns. It returns nil and 503 if
// no connector serves the route, nil and 404 if the session's connector has
// no usable connection.
func (e *Edge) pick(route, session string, not *peer) (*peer, int) {
	owner := ""
	if i := strings.IndexByte(session, '.'); i > 0 {
		owner = session[:i]
	}
	e.mu.Lock()
	var cands []*peer
	ownerKnown := false
	for p := range e.peers {
		if !slices.Contains(p.hello.Routes, route) {
			continue
		}
		if owner != "" && p.hello.Connector == owner {
			ownerKnown = true
		}
		cands = append(cands, p)
	}
	e.mu.Unlock()
	if ownerKnown {
		cands = slices.DeleteFunc(cands, func(p *peer) bool { return p.hello.Connector != owner })
	}
	cands = slices.DeleteFunc(cands, func(p *peer) bool { return p == not || p.cc.Available() == 0 })
	if len(cands) == 0 {
		if ownerKnown {
			return nil, http.StatusNotFound
		}
		return nil, http.StatusServiceUnavailable
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].since.Before(cands[j].since) })
	if session != "" {
		// One connection per session while the set of connections stays
		// the same: requests of a session keep their order on it.
		h := fnv.New64a()
		h.Write([]byte(session))
		return cands[h.Sum64()%uint64(len(cands))], 0
	}
	return cands[e.rr.Add(1)%uint64(len(cands))], 0
}

// edgeTransport sends a request over the chosen connector connection, and
// retries once on another connection if the first refused it unprocessed
// (GOAWAY raced the request).
type edgeTransport struct{ e *Edge }

func (t edgeTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	fw := req.Context().Value(forwardKey{}).(*forward)
	var tried *peer
	for attempt := 0; ; attempt++ {
		p, _ := t.e.pick(fw.route, fw.session, tried)
		if p == nil {
			return nil, fmt.Errorf("no connector connection serves route %q", fw.route)
		}
		if ci := callInfoFrom(req.Context()); ci != nil {
			ci.connector = p.hello.Connector
		}
		if fw.seq > 0 {
			req.Header.Set(seqHeader, t.e.line.seqValue(fw.session, fw.seq, p))
		}
		resp, err := p.cc.RoundTrip(req)
		if err == nil || attempt > 0 || !unprocessed(err) {
			return resp, err
		}
		if req.Body != nil && req.Body != http.NoBody {
			if req.GetBody == nil {
				return nil, err
			}
			if req.Body, err = req.GetBody(); err != nil {
				return nil, err
			}
		}
		tried = p
	}
}

// unprocessed reports whether an HTTP/2 client error means the connector
// never saw the request. net/http does not export these HTTP/2 errors.
func unprocessed(err error) bool {
	s := err.Error()
	return s == "http2: client conn not usable" || s == "http2: Transport received Server's graceful shutdown GOAWAY"
}

// EdgeStatus is the edge's view of its connectors, served at /healthz.
type EdgeStatus struct {
	// State is "healthy" (every connector has all the connections it
	// wants), "degraded" (some connection is missing, or an expected or
	// previously seen connector has none) or "down" (no connection at all).
	State      string            `json:"state"`
	Connectors []ConnectorStatus `json:"connectors"`
}

// ConnectorStatus describes one connector at the edge.
type ConnectorStatus struct {
	ID          string    `json:"id"`          // the connector's ID
	Version     string    `json:"version"`     // its protocol implementation's version
	Routes      []string  `json:"routes"`      // the routes it serves
	Connections int       `json:"connections"` // carrier connections up now
	Wanted      int       `json:"wanted"`      // carrier connections it keeps when healthy
	Since       time.Time `json:"since"`       // when its oldest live connection was made
}

// Status reports the connected connectors.
func (e *Edge) Status() EdgeStatus {
	e.mu.Lock()
	byID := map[string]*ConnectorStatus{}
	for p := range e.peers {
		cs := byID[p.hello.Connector]
		if cs == nil {
			cs = &ConnectorStatus{ID: p.hello.Connector, Version: p.hello.Version, Routes: slices.Clone(p.hello.Routes), Wanted: p.hello.Connections, Since: p.since}
			byID[p.hello.Connector] = cs
		}
		cs.Connections++
		if p.since.Before(cs.Since) {
			cs.Since = p.since
		}
	}
	connected := len(byID) > 0
	for id, h := range e.seen {
		if byID[id] == nil {
			byID[id] = &ConnectorStatus{ID: id, Version: h.Version, Routes: slices.Clone(h.Routes), Wanted: h.Connections}
		}
	}
	for _, id := range e.opts.Connectors {
		if byID[id] == nil {
			byID[id] = &ConnectorStatus{ID: id, Routes: []string{}, Wanted: 1}
		}
	}
	e.mu.Unlock()
	st := EdgeStatus{State: "healthy", Connectors: []ConnectorStatus{}}
	for _, cs := range byID {
		if cs.Connections < cs.Wanted {
			st.State = "degraded"
		}
		st.Connectors = append(st.Connectors, *cs)
	}
	if !connected {
		st.State = "down"
	}
	sort.Slice(st.Connectors, func(i, j int) bool { return st.Connectors[i].ID < st.Connectors[j].ID })
	return st
}

func (e *Edge) serveHealth(w http.ResponseWriter, r *http.Request) {
	st := e.Status()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if st.State == "down" {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	json.NewEncoder(w).Encode(st)
}

// Close stops accepting connectors, closes every connector connection (calls
// in flight fail) and waits for the edge's goroutines. It is idempotent.
func (e *Edge) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	for ln := range e.listeners {
		ln.Close()
	}
	for c := range e.pending {
		c.Close()
	}
	peers := make([]*peer, 0, len(e.peers))
	for p := range e.peers {
		peers = append(peers, p)
	}
	e.mu.Unlock()
	for _, p := range peers {
		p.cc.Close()
		p.conn.Close()
	}
	e.wg.Wait()
	return nil
}
