package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Version is the tunnel protocol implementation's version, sent in the
// connector's handshake and shown in the edge's status.
const Version = "perimeter-tunnel/1"

// Route is one MCP server a connector makes reachable. Exactly one of URL and
// Command is set.
type Route struct {
	// Name is the route's name: 1 to 63 characters from [A-Za-z0-9_-]. The
	// edge serves the route under /<name>.
	Name string `yaml:"name"`
	// URL is an MCP Streamable HTTP endpoint, such as
	// "http://10.1.2.3:8080/mcp". Its address must lie inside the connector's
	// allowed networks.
	URL string `yaml:"url"`
	// Command is the argv of a stdio MCP server, run with no shell. The
	// connector starts one child per MCP session.
	Command []string `yaml:"command"`
	// Env is the child's extra environment ("KEY=value"); the child inherits
	// only PATH and HOME from the connector besides.
	Env []string `yaml:"env"`
	// Dir is the child's working directory; empty means the connector's.
	Dir string `yaml:"dir"`
	// Policy filters the route's requests at the connector.
	Policy Policy `yaml:"policy"`
}

// ConnectorOptions configures a [Connector]. ID, Edges, Routes and either
// Token or a client certificate in TLSConfig are required.
type ConnectorOptions struct {
	// ID names the connector (same rules as a route name). Connectors that
	// serve the same routes for availability use different IDs.
	ID string
	// Edges are the edges' addresses: "host:port" for the TLS carrier, or
	// "wss://host/path" for the WebSocket fallback (an edge's
	// WebSocketHandler behind an HTTPS server). Connection i dials
	// Edges[i % len(Edges)] first and moves on to the next after a failure.
	Edges []string
	// Token authenticates the connector to the edge. It is sent only in the
	// handshake on the TLS connection, never in a forwarded request.
	Token string
	// TLSConfig is the TLS client configuration for the carrier: RootCAs to
	// verify the edge, Certificates for mTLS, ServerName. The connector forces
	// TLS 1.3 and its own ALPN protocol.
	TLSConfig *tls.Config
	// Connections is how many carrier connections to keep; default 2.
	Connections int
	// Routes are the MCP servers to make reachable.
	Routes []Route
	// AllowedNetworks bound the addresses HTTP upstreams may have; default
	// DefaultAllowedNetworks.
	AllowedNetworks []netip.Prefix
	// UpstreamTLSConfig is used for https:// upstreams; nil means defaults.
	UpstreamTLSConfig *tls.Config
	// SessionIdleTimeout ends a stdio session (and its child) after this long
	// without a request in flight; default 10 minutes.
	SessionIdleTimeout time.Duration
	// MaxStdioSessions bounds the stdio children (one per session) of all
	// routes together; MaxStdioSessionsPerClient bounds them per client as
	// the edge names it. An initialize beyond them gets 503 or 429 with a
	// JSON-RPC error. Defaults 64 and 16.
	MaxStdioSessions, MaxStdioSessionsPerClient int
	// DrainTimeout bounds how long Run waits for calls in flight after its
	// context is cancelled; default 30 s.
	DrainTimeout time.Duration
	// PingInterval and PingTimeout: after PingInterval without a frame from
	// the edge, the connector sends an HTTP/2 PING and drops the connection
	// if no answer comes within PingTimeout. Defaults 15 s and 5 s.
	PingInterval, PingTimeout time.Duration
	// BackoffMin and BackoffMax bound the wait between reconnection attempts
	// (exponential, full jitter); defaults 250 ms and 30 s.
	BackoffMin, BackoffMax time.Duration
	// Dial opens the TCP connection to an edge; default a net.Dialer. Use it
	// to go through an HTTP CONNECT proxy.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// Logger receives connection events and one audit record per call;
	// default slog.Default().
	Logger *slog.Logger
	// Metrics receives counters and histograms; default none.
	Metrics Metrics
}

// Connector is the private-network end of the tunnel. It only ever dials out.
// Create it with [NewConnector] and start it with [Connector.Run].
type Connector struct {
	opts    ConnectorOptions
	tlsConf *tls.Config
	logger  *slog.Logger
	metrics Metrics
	handler http.Handler
	*routeSet

	// h2 serves HTTP/2 with prior knowledge on each carrier connection
	// (one single-connection listener per connection); its Shutdown sends
	// GOAWAY on them all.
	h2 *http.Server

	connected atomic.Int32
	ran       atomic.Bool

	mu    sync.Mutex
	conns map[net.Conn]net.Conn // carrier connection → the connection under TLS
}

// NewConnector checks opts and returns a connector. It refuses an HTTP
// route whose literal IP address lies outside the allowed networks (a host
// name is checked at every connection, after resolution), a stdio route
// without a command, and duplicate or invalid names.
func NewConnector(opts *ConnectorOptions) (_ *Connector, err error) {
	if opts == nil {
		return nil, errors.New("tunnel: connector: nil options")
	}
	o := *opts
	if !ValidName(o.ID) {
		return nil, fmt.Errorf("tunnel: connector: invalid id %q (want 1-63 of [A-Za-z0-9_-])", o.ID)
	}
	if len(o.Edges) == 0 {
		return nil, fmt.Errorf("tunnel: connector %s: no edge address", o.ID)
	}
	if len(o.Routes) == 0 {
		return nil, fmt.Errorf("tunnel: connector %s: no routes", o.ID)
	}
	for _, a := range o.Edges {
		if isWebSocketAddr(a) {
			if u, err := url.Parse(a); err != nil || u.Host == "" {
				return nil, fmt.Errorf("tunnel: connector %s: edge address %q is not a valid wss:// URL", o.ID, a)
			}
		} else if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("tunnel: connector %s: edge address %q: want host:port or wss://host/path", o.ID, a)
		}
	}
	if o.TLSConfig == nil {
		o.TLSConfig = &tls.Config{}
	}
	if o.Token == "" && len(o.TLSConfig.Certificates) == 0 && o.TLSConfig.GetClientCertificate == nil {
		return nil, fmt.Errorf("tunnel: connector %s: neither a token nor a client certificate to authenticate with", o.ID)
	}
	if o.Connections <= 0 {
		o.Connections = 2
	}
	if o.Connections > 64 {
		return nil, fmt.Errorf("tunnel: connector %s: %d connections is more than 64", o.ID, o.Connections)
	}
	if len(o.AllowedNetworks) == 0 {
		o.AllowedNetworks = DefaultAllowedNetworks
	}
	setDefault(&o.SessionIdleTimeout, 10*time.Minute)
	if o.MaxStdioSessions <= 0 {
		o.MaxStdioSessions = 64
	}
	if o.MaxStdioSessionsPerClient <= 0 {
		o.MaxStdioSessionsPerClient = 16
	}
	setDefault(&o.DrainTimeout, 30*time.Second)
	setDefault(&o.PingInterval, 15*time.Second)
	setDefault(&o.PingTimeout, 5*time.Second)
	setDefault(&o.BackoffMin, 250*time.Millisecond)
	setDefault(&o.BackoffMax, 30*time.Second)
	if o.Dial == nil {
		d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
		o.Dial = d.DialContext
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Metrics == nil {
		o.Metrics = nopMetrics{}
	}
	c := &Connector{
		opts:    o,
		logger:  o.Logger.With("connector", o.ID),
		metrics: o.Metrics,
		conns:   make(map[net.Conn]net.Conn),
	}
	c.tlsConf = o.TLSConfig.Clone()
	c.tlsConf.MinVersion = tls.VersionTLS13
	c.tlsConf.NextProtos = []string{ALPN}

	rs, err := newRouteSet(o.Routes, routeSetOptions{
		id: o.ID, side: "connector", allowed: o.AllowedNetworks, upstreamTLS: o.UpstreamTLSConfig,
		idle: o.SessionIdleTimeout, maxChildren: o.MaxStdioSessions, maxChildrenPerClient: o.MaxStdioSessionsPerClient,
		logger: c.logger, metrics: c.metrics, client: clientFromHeader,
	})
	if err != nil {
		return nil, fmt.Errorf("tunnel: connector %s: %w", o.ID, err)
	}
	c.routeSet = rs
	c.handler = &connectorMux{rs: rs, gate: &connectorGate{}}
	defer func() {
		if err != nil {
			rs.close()
		}
	}()

	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	c.h2 = &http.Server{
		Handler:   c.handler,
		Protocols: &h2c,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: 10000,
			SendPingTimeout:      o.PingInterval,
			PingTimeout:          o.PingTimeout,
			// Request bodies up to the 4 MiB policy cap flow without
			// waiting for window updates; larger frames cut per-frame
			// work on bulk.
			MaxReceiveBufferPerStream:     4 << 20,
			MaxReceiveBufferPerConnection: 64 << 20,
			MaxReadFrameSize:              1 << 20,
		},
		BaseContext: func(ln net.Listener) context.Context { return ln.(*carrierListener).ctx },
		ErrorLog:    slog.NewLogLogger(c.logger.Handler(), slog.LevelDebug),
	}
	return c, nil
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d <= 0 {
		*d = v
	}
}

// Connected reports how many carrier connections are up and authenticated.
func (c *Connector) Connected() int { return int(c.connected.Load()) }

// Run keeps the connector's connections to the edges until ctx is cancelled,
// then drains: it sends GOAWAY on every connection, lets calls in flight
// finish for up to DrainTimeout, closes what is left, and ends every stdio
// child. It returns nil after a drain, or an error if called twice.
func (c *Connector) Run(ctx context.Context) error {
	if !c.ran.CompareAndSwap(false, true) {
		return fmt.Errorf("tunnel: connector %s: Run called twice", c.opts.ID)
	}
	// serveCtx outlives ctx during the drain, so that calls in flight finish.
	serveCtx, cancelServe := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelServe()
	c.routeSet.start()
	var wg sync.WaitGroup
	for i := range c.opts.Connections {
		wg.Go(func() { c.keep(ctx, serveCtx, i) })
	}
	<-ctx.Done()
	c.logger.Info("draining", "timeout", c.opts.DrainTimeout)
	// Shutdown sends GOAWAY on every connection, then waits for them to
	// close; the drain timeout bounds the wait.
	shutCtx, cancelShut := context.WithCancel(context.Background())
	shut := make(chan struct{})
	go func() { _ = c.h2.Shutdown(shutCtx); close(shut) }()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(c.opts.DrainTimeout):
		c.logger.Warn("drain timeout: closing connections with calls in flight")
		cancelServe()
		c.closeConns()
		<-done
	}
	cancelShut()
	<-shut
	c.routeSet.close()
	return nil
}

func (c *Connector) closeConns() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, raw := range c.conns {
		raw.Close() // no close_notify: it could block behind a stuck write
	}
}

// keep maintains connection slot i: dial, handshake, serve, back off, again.
func (c *Connector) keep(ctx, serveCtx context.Context, slot int) {
	attempt := 0
	for ctx.Err() == nil {
		addr := c.opts.Edges[(slot+attempt)%len(c.opts.Edges)]
		conn, raw, err := c.dial(ctx, addr)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.logger.Warn("connecting to edge failed", "edge", addr, "slot", slot, "attempt", attempt+1, "error", err)
			if !sleepCtx(ctx, backoff(c.opts.BackoffMin, c.opts.BackoffMax, attempt)) {
				return
			}
			attempt++
			continue
		}
		start := time.Now()
		c.serve(serveCtx, conn, raw, addr, slot)
		// A connection that dies young counts as a failure, so an edge that
		// accepts and drops at once is not hammered.
		if time.Since(start) > 10*time.Second {
			attempt = 0
		}
		if !sleepCtx(ctx, backoff(c.opts.BackoffMin, c.opts.BackoffMax, attempt)) {
			return
		}
		attempt++
	}
}

// backoff returns a random wait in [0, min(max, base*2^attempt)] (full
// jitter), at least 10 ms.
func backoff(base, ceiling time.Duration, attempt int) time.Duration {
	d := ceiling
	if attempt < 30 && base<<attempt < ceiling {
		d = base << attempt
	}
	return max(time.Duration(rand.Int64N(int64(d)+1)), 10*time.Millisecond)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// dial opens and authenticates one carrier connection. It returns the
// connection to speak HTTP/2 on and the one under its TLS (the same for the
// WebSocket carrier).
func (c *Connector) dial(ctx context.Context, addr string) (_, _ net.Conn, err error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var tc, under net.Conn
	if isWebSocketAddr(addr) {
		if tc, err = c.dialWebSocket(ctx, addr); err != nil {
			return nil, nil, err
		}
		under = tc
	} else {
		raw, err := c.opts.Dial(ctx, "tcp", addr)
		if err != nil {
			return nil, nil, err
		}
		conf := c.tlsConf
		if conf.ServerName == "" {
			conf = conf.Clone()
			host, _, _ := net.SplitHostPort(addr)
			conf.ServerName = host
		}
		tlc := tls.Client(raw, conf)
		if err := tlc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, nil, fmt.Errorf("TLS handshake: %w", err)
		}
		if p := tlc.ConnectionState().NegotiatedProtocol; p != ALPN {
			tlc.Close()
			return nil, nil, fmt.Errorf("edge did not negotiate %q (got %q)", ALPN, p)
		}
		tc, under = tlc, raw
	}
	deadline, _ := ctx.Deadline()
	tc.SetDeadline(deadline)
	routes := make([]string, 0, len(c.opts.Routes))
	for _, r := range c.opts.Routes {
		routes = append(routes, r.Name)
	}
	h := hello{Token: c.opts.Token, Connector: c.opts.ID, Version: Version, Routes: routes, Connections: c.opts.Connections}
	if err := writeFrame(tc, &h); err != nil {
		tc.Close()
		return nil, nil, fmt.Errorf("sending handshake: %w", err)
	}
	var wel welcome
	if err := readFrame(tc, &wel); err != nil {
		tc.Close()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, nil, errors.New("edge closed the connection during the handshake (authentication refused?)")
		}
		return nil, nil, err
	}
	if !wel.OK {
		tc.Close()
		return nil, nil, fmt.Errorf("edge refused the connector: %s", wel.Error)
	}
	tc.SetDeadline(time.Time{})
	return tc, under, nil
}

// serve runs HTTP/2 (server side) on an authenticated connection until it
// ends.
func (c *Connector) serve(ctx context.Context, conn, raw net.Conn, addr string, slot int) {
	c.mu.Lock()
	c.conns[conn] = raw
	c.mu.Unlock()
	c.connected.Add(1)
	c.metrics.Count("tunnel_connects_total", "side", "connector", "connector", c.opts.ID)
	c.logger.Info("connected to edge", "edge", addr, "slot", slot)
	cc := &carrierConn{Conn: conn, closed: make(chan struct{})}
	ln := newCarrierListener(context.WithValue(ctx, edgeAddrKey{}, addr), cc)
	// Serve returns when the connection has closed (the listener's second
	// Accept waits for that) or when Shutdown closes the listener; the
	// server then keeps serving the connection until GOAWAY has drained it
	// or closeConns cut it.
	_ = c.h2.Serve(ln)
	if ln.handed.Load() {
		<-cc.closed
	} else { // shut down before it was accepted
		conn.Close()
	}
	c.connected.Add(-1)
	c.mu.Lock()
	delete(c.conns, conn)
	c.mu.Unlock()
	c.metrics.Count("tunnel_disconnects_total", "side", "connector", "connector", c.opts.ID)
	c.logger.Info("disconnected from edge", "edge", addr, "slot", slot)
}

// clientFromHeader reads the client identity the edge set (the carrier is
// authenticated; the edge always replaces a client's own value).
func clientFromHeader(r *http.Request) string {
	return sanitizeClient(r.Header.Get(clientHeader))
}

// connectorMux dispatches the edge's requests: /route/<name><rest> and
// /well-known/<name>/<kind><rest>.
type connectorMux struct {
	rs   *routeSet
	gate *connectorGate
}

type restKey struct{}

// edgeAddrKey holds, in a request's context, the address of the edge whose
// carrier connection brought it.
type edgeAddrKey struct{}
type wellKnownKey struct{}

func restFrom(r *http.Request) string {
	s, _ := r.Context().Value(restKey{}).(string)
	return s
}

func wellKnownFrom(r *http.Request) string {
	s, _ := r.Context().Value(wellKnownKey{}).(string)
	return s
}

func (m *connectorMux) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	var name, rest, wk string
	if s, ok := strings.CutPrefix(p, "/route/"); ok {
		name, rest = splitFirst(s)
	} else if s, ok := strings.CutPrefix(p, "/well-known/"); ok {
		name, rest = splitFirst(s)
		wk, rest = splitFirst(strings.TrimPrefix(rest, "/"))
		if wk == "" {
			http.NotFound(w, r)
			return
		}
	} else {
		http.NotFound(w, r)
		return
	}
	sid := r.Header.Get("Mcp-Session-Id")
	edge, _ := r.Context().Value(edgeAddrKey{}).(string)
	if n, base := parseSeq(r); n > 0 && sid != "" && r.Method == http.MethodPost {
		// Keep the order the edge numbered the session's requests in.
		k := gateKey{edge, sid}
		if err := m.gate.enter(r.Context(), k, n, base); err != nil {
			return
		}
		handed := func() { m.gate.handedOn(k, n) }
		defer handed()
		r = r.WithContext(context.WithValue(r.Context(), handedOnKey{}, handedOnFuncs{eof: handed, closed: handed}))
	}
	if r.Method == http.MethodDelete && sid != "" {
		defer m.gate.forget(sid)
	}
	if sid == "" && r.Method == http.MethodPost {
		w = &sessionStarter{ResponseWriter: w, gate: m.gate, edge: edge}
	}
	m.rs.serve(w, r, name, rest, wk)
}

// splitFirst splits "a/b/c" into "a" and "/b/c".
func splitFirst(s string) (string, string) {
	if i := strings.IndexByte(s, '/'); i >= 0 {
		return s[:i], s[i:]
	}
	return s, ""
}

// carrierConn is a carrier connection served by the connector's HTTP/2
// server; closed is closed when the server closes it.
type carrierConn struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
}

func (c *carrierConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.closed) })
	return err
}

// carrierListener hands one carrier connection to [http.Server.Serve], then
// blocks until that connection has closed, so that Serve returns with it.
// ctx is the base context of the connection's requests.
type carrierListener struct {
	ctx    context.Context
	conn   *carrierConn
	handed atomic.Bool
	once   sync.Once
	closed chan struct{}
}

func newCarrierListener(ctx context.Context, conn *carrierConn) *carrierListener {
	return &carrierListener{ctx: ctx, conn: conn, closed: make(chan struct{})}
}

func (l *carrierListener) Accept() (net.Conn, error) {
	if l.handed.CompareAndSwap(false, true) {
		return l.conn, nil
	}
	select {
	case <-l.conn.closed:
	case <-l.closed:
	}
	return nil, net.ErrClosed
}

// Close ends a pending Accept; the connection stays with the server.
func (l *carrierListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *carrierListener) Addr() net.Addr { return l.conn.LocalAddr() }
