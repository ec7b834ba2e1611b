package tunnel

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// GatewayOptions configures a [Gateway]. Routes and a decision about
// ClientAuth are required.
type GatewayOptions struct {
	// ID prefixes the IDs of stdio sessions; default "gateway".
	ID string
	// Routes are the MCP servers to serve, as a connector's.
	Routes []Route
	// AllowedNetworks bound the addresses HTTP upstreams may have; default
	// DefaultAllowedNetworks.
	AllowedNetworks []netip.Prefix
	// UpstreamTLSConfig is used for https:// upstreams; nil means defaults.
	UpstreamTLSConfig *tls.Config
	// ClientAuth authenticates the MCP clients (or the proxy in front).
	// Required: set Tokens, ClientCAs, or Disabled.
	ClientAuth ClientAuth
	// Policy applies to every route, merged under each route's own
	// policy (see [Policy.Merge]).
	Policy Policy
	// MaxSessions and MaxSessionsPerClient cap MCP sessions as an edge's
	// do; defaults 1024 and 64.
	MaxSessions, MaxSessionsPerClient int
	// MaxStdioSessions and MaxStdioSessionsPerClient cap stdio children as
	// a connector's do; defaults 64 and 16.
	MaxStdioSessions, MaxStdioSessionsPerClient int
	// SessionIdleTimeout ends a stdio session after this long without a
	// request in flight, and stops counting an idle session against the
	// caps; default 10 minutes.
	SessionIdleTimeout time.Duration
	// Logger receives one audit record per call; default slog.Default().
	Logger *slog.Logger
	// Metrics receives counters and histograms; default none.
	Metrics Metrics
}

// Gateway serves a connector's routes directly on a local listener, with no
// carrier: stdio MCP servers bridged and HTTP MCP servers proxied, with the
// same policy, audit, metrics and caps. Use it as the upstream of another
// tunnel that routes by hostname to HTTP only (such as Anthropic's MCP
// tunnels), to add stdio servers, per-tool policy and MCP-level audit.
// Create it with [NewGateway], mount [Gateway.Handler], stop it with
// [Gateway.Close].
type Gateway struct {
	rs      *routeSet
	auth    *clientAuth
	caps    *sessionCaps
	logger  *slog.Logger
	metrics Metrics
	handler http.Handler

	closeOnce sync.Once
}

// NewGateway checks opts and returns a gateway whose stdio reapers run until
// Close.
func NewGateway(opts *GatewayOptions) (*Gateway, error) {
	if opts == nil {
		return nil, errors.New("tunnel: gateway: nil options")
	}
	o := *opts
	if o.ID == "" {
		o.ID = "gateway"
	}
	if !ValidName(o.ID) {
		return nil, fmt.Errorf("tunnel: gateway: invalid id %q (want 1-63 of [A-Za-z0-9_-])", o.ID)
	}
	if len(o.Routes) == 0 {
		return nil, errors.New("tunnel: gateway: no routes")
	}
	auth, err := newClientAuth(o.ClientAuth)
	if err != nil {
		return nil, fmt.Errorf("tunnel: gateway: %w", err)
	}
	if err := o.Policy.validate(); err != nil {
		return nil, fmt.Errorf("tunnel: gateway: policy: %w", err)
	}
	if len(o.AllowedNetworks) == 0 {
		o.AllowedNetworks = DefaultAllowedNetworks
	}
	setDefault(&o.SessionIdleTimeout, 10*time.Minute)
	if o.MaxSessions <= 0 {
		o.MaxSessions = 1024
	}
	if o.MaxSessionsPerClient <= 0 {
		o.MaxSessionsPerClient = 64
	}
	if o.MaxStdioSessions <= 0 {
		o.MaxStdioSessions = 64
	}
	if o.MaxStdioSessionsPerClient <= 0 {
		o.MaxStdioSessionsPerClient = 16
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Metrics == nil {
		o.Metrics = nopMetrics{}
	}
	g := &Gateway{auth: auth, logger: o.Logger, metrics: o.Metrics,
		caps: newSessionCaps(o.MaxSessions, o.MaxSessionsPerClient, o.SessionIdleTimeout)}
	global := o.Policy
	g.rs, err = newRouteSet(o.Routes, routeSetOptions{
		id: o.ID, side: "gateway", allowed: o.AllowedNetworks, upstreamTLS: o.UpstreamTLSConfig,
		idle: o.SessionIdleTimeout, maxChildren: o.MaxStdioSessions, maxChildrenPerClient: o.MaxStdioSessionsPerClient,
		logger: o.Logger, metrics: o.Metrics, client: clientFrom, global: &global, front: true,
		wrap: func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if ci := callInfoFrom(r.Context()); ci != nil {
					g.caps.serve(w, r, ci, next)
					return
				}
				next.ServeHTTP(w, r)
			})
		},
	})
	if err != nil {
		return nil, fmt.Errorf("tunnel: gateway: %w", err)
	}
	if auth.disabled {
		o.Logger.Warn("MCP CLIENT AUTHENTICATION IS DISABLED: anyone who can reach the gateway can call every route and start stdio servers (within the session caps)",
			"max_sessions", o.MaxSessions, "max_stdio_sessions", o.MaxStdioSessions)
	}
	g.rs.start()
	g.handler = http.HandlerFunc(g.serveHTTP)
	return g, nil
}

// Handler serves every route as an MCP Streamable HTTP endpoint at /<route>
// (and below it), OAuth discovery at /.well-known/<kind>/<route>, and
// /healthz, as an edge's Handler does.
func (g *Gateway) Handler() http.Handler { return g.handler }

func (g *Gateway) serveHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if p == "/healthz" {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		routes := make([]string, 0, len(g.rs.guards))
		for name := range g.rs.guards {
			routes = append(routes, name)
		}
		slices.Sort(routes)
		json.NewEncoder(w).Encode(map[string]any{"state": "healthy", "routes": routes})
		return
	}
	client, ok := g.auth.authenticate(r)
	if !ok {
		g.logger.Warn("MCP client refused", "remote", r.RemoteAddr, "path", p, "reason", "authentication failed")
		g.metrics.Count("tunnel_client_auth_failures_total")
		if g.auth.bearer {
			w.Header().Set("WWW-Authenticate", `Bearer realm="perimeter-gateway"`)
		}
		writeRefusal(w, http.StatusUnauthorized, "tunnel: MCP client authentication failed: present the gateway's client token or certificate")
		return
	}
	r = r.WithContext(context.WithValue(r.Context(), clientKey{}, sanitizeClient(client)))
	r.Header.Del(clientHeader)
	if rest, ok := strings.CutPrefix(p, "/.well-known/"); ok {
		kind, rest := splitFirst(rest)
		route, rest := splitFirst(strings.TrimPrefix(rest, "/"))
		if kind == "" || !ValidName(route) {
			http.NotFound(w, r)
			return
		}
		g.rs.serve(w, r, route, rest, kind)
		return
	}
	route, rest := splitFirst(strings.TrimPrefix(p, "/"))
	if !ValidName(route) {
		http.NotFound(w, r)
		return
	}
	g.rs.serve(w, r, route, rest, "")
}

// Close ends every stdio session and waits for the children. It is
// idempotent. Close the HTTP server serving Handler first.
func (g *Gateway) Close() error {
	g.closeOnce.Do(g.rs.close)
	return nil
}
