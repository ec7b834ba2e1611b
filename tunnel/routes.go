package tunnel

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// routeSet is the upstream side shared by a [Connector] and a [Gateway]:
// each route's guard, HTTP upstream or stdio bridge.
type routeSet struct {
	guards map[string]*guard
	http   map[string]*httpUpstream
	stdio  map[string]*stdioBridge
}

type routeSetOptions struct {
	id                                string // session ID prefix of stdio sessions
	side                              string // for the audit record
	allowed                           []netip.Prefix
	upstreamTLS                       *tls.Config
	idle                              time.Duration
	maxChildren, maxChildrenPerClient int
	logger                            *slog.Logger
	metrics                           Metrics
	client                            func(*http.Request) string
	// global, if set, is merged under each route's policy (the gateway's
	// own policy); front marks a guard that faces MCP clients directly.
	global *Policy
	front  bool
	// wrap, if set, wraps each route's upstream handler (the gateway's
	// session caps).
	wrap func(http.Handler) http.Handler
}

// newRouteSet checks routes and builds their handlers. It refuses an HTTP
// route whose literal IP address lies outside the allowed networks (a host
// name is checked at every connection, after resolution), a stdio route
// without a command, and duplicate or invalid names.
func newRouteSet(routes []Route, o routeSetOptions) (*routeSet, error) {
	rs := &routeSet{
		guards: make(map[string]*guard),
		http:   make(map[string]*httpUpstream),
		stdio:  make(map[string]*stdioBridge),
	}
	allow := allowlist(o.allowed)
	children := &childCaps{max: o.maxChildren, perClient: o.maxChildrenPerClient, byClient: make(map[string]int)}
	for i := range routes {
		rt := &routes[i]
		if !ValidName(rt.Name) || rt.Name == "healthz" {
			return nil, fmt.Errorf("invalid route name %q", rt.Name)
		}
		if rs.guards[rt.Name] != nil {
			return nil, fmt.Errorf("route %q defined twice", rt.Name)
		}
		if err := rt.Policy.validate(); err != nil {
			return nil, fmt.Errorf("route %q: policy: %w", rt.Name, err)
		}
		var next http.Handler
		switch {
		case rt.URL != "" && len(rt.Command) > 0:
			return nil, fmt.Errorf("route %q has both url and command", rt.Name)
		case rt.URL != "":
			u, err := url.Parse(rt.URL)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return nil, fmt.Errorf("route %q: url %q is not an absolute http(s) URL", rt.Name, rt.URL)
			}
			if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
				return nil, fmt.Errorf("route %q: url %q must not carry user info, query or fragment", rt.Name, rt.URL)
			}
			if ip, err := netip.ParseAddr(strings.Trim(u.Hostname(), "[]")); err == nil && !allow.allows(ip) {
				return nil, fmt.Errorf("route %q: %w: %s", rt.Name, errAddressNotAllowed, ip)
			}
			up := newHTTPUpstream(rt.Name, u, allow, o.upstreamTLS, o.logger)
			rs.http[rt.Name] = up
			next = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				up.serve(w, r, restFrom(r), wellKnownFrom(r))
			})
		case len(rt.Command) > 0:
			if rt.Command[0] == "" {
				return nil, fmt.Errorf("route %q: empty program name", rt.Name)
			}
			br := newStdioBridge(rt.Name, o.id, rt, o.idle, o.logger, o.metrics)
			br.caps = children
			rs.stdio[rt.Name] = br
			next = br
		default:
			return nil, fmt.Errorf("route %q has neither url nor command", rt.Name)
		}
		if o.wrap != nil {
			next = o.wrap(next)
		}
		pol := rt.Policy
		if o.global != nil {
			pol = o.global.Merge(rt.Policy)
		}
		connector := o.id
		if o.front {
			connector = ""
		}
		rs.guards[rt.Name] = &guard{side: o.side, route: rt.Name, policy: pol, next: next,
			logger: o.logger, metrics: o.metrics, connector: connector, front: o.front, client: o.client}
	}
	return rs, nil
}

// start starts the stdio bridges' idle reapers.
func (rs *routeSet) start() {
	for _, b := range rs.stdio {
		b.start()
	}
}

// close ends every stdio session and drops idle upstream connections.
func (rs *routeSet) close() {
	for _, b := range rs.stdio {
		b.close()
	}
	for _, u := range rs.http {
		u.close()
	}
}

// serve handles a request for route name; rest is the path below the
// route, wk the /.well-known/ kind for OAuth discovery.
func (rs *routeSet) serve(w http.ResponseWriter, r *http.Request, name, rest, wk string) {
	for _, seg := range strings.Split(rest, "/") {
		if seg == ".." {
			// A route maps to one upstream base path; do not let a request
			// climb out of it.
			http.Error(w, "Bad Request: \"..\" in path", http.StatusBadRequest)
			return
		}
	}
	g := rs.guards[name]
	if g == nil {
		http.Error(w, fmt.Sprintf("tunnel: no route %q here", name), http.StatusNotFound)
		return
	}
	ctx := context.WithValue(r.Context(), restKey{}, rest)
	if wk != "" {
		ctx = context.WithValue(ctx, wellKnownKey{}, wk)
	}
	g.ServeHTTP(w, r.WithContext(ctx))
}
