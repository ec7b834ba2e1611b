package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultAllowedNetworks is the upstream allowlist a connector uses when its
// options name none: the private address ranges of RFC 1918 and RFC 4193.
// Loopback is not in it: a connector that should reach servers on its own
// host must list 127.0.0.0/8 or ::1/128 explicitly.
var DefaultAllowedNetworks = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("fc00::/7"),
}

// errAddressNotAllowed marks an upstream dial refused by the allowlist.
var errAddressNotAllowed = errors.New("upstream address outside the connector's allowed networks")

// allowlist is the connector's SSRF defence: every upstream connection is
// checked at dial time, after name resolution, so a DNS answer cannot point a
// route somewhere else.
type allowlist []netip.Prefix

func (a allowlist) allows(ip netip.Addr) bool {
	ip = ip.Unmap()
	return slices.ContainsFunc(a, func(p netip.Prefix) bool { return p.Contains(ip) })
}

func (a allowlist) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot parse %q", errAddressNotAllowed, address)
	}
	if !a.allows(ap.Addr()) {
		return fmt.Errorf("%w: %s", errAddressNotAllowed, ap.Addr())
	}
	return nil
}

// httpUpstream forwards a route's requests to an MCP Streamable HTTP server.
type httpUpstream struct {
	route  string
	target *url.URL
	proxy  *httputil.ReverseProxy
	tr     *http.Transport
}

type upstreamURLKey struct{}

// upstreamIdleTimeout is how long an upstream connection may sit idle in
// the pool.
const upstreamIdleTimeout = 4 * time.Second

func newHTTPUpstream(route string, target *url.URL, allow allowlist, tlsConf *tls.Config, logger *slog.Logger) *httpUpstream {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: allow.control}
	tr := &http.Transport{
		Proxy:               nil, // never an environment proxy: the allowlist is checked on the real peer
		DialContext:         dialer.DialContext,
		TLSClientConfig:     tlsConf,
		ForceAttemptHTTP2:   true,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 1024,
		// Close pooled connections before the upstream's keep-alive timeout
		// can: Node's and uvicorn's default is 5 s, and reusing a
		// connection the server is closing at that moment fails a request
		// that was already written (which must not be retried: a
		// tools/call must not run twice). A request never written on a
		// stale connection is retried by net/http (it has GetBody).
		IdleConnTimeout:       upstreamIdleTimeout,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true, // pass Content-Encoding through untouched
	}
	u := &httpUpstream{route: route, target: target, tr: tr}
	u.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			out := pr.In.Context().Value(upstreamURLKey{}).(*url.URL)
			pr.Out.URL = out
			// The upstream sees its own host name, not the edge's: MCP
			// servers bound to localhost refuse a foreign Host (DNS
			// rebinding protection).
			pr.Out.Host = ""
		},
		Transport:     tr,
		FlushInterval: -1, // SSE: every write is flushed at once
		BufferPool:    proxyBuffers,
		ErrorLog:      slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			status := http.StatusBadGateway
			if errors.Is(err, errAddressNotAllowed) {
				status = http.StatusForbidden
			}
			logger.LogAttrs(r.Context(), slog.LevelWarn, "upstream request failed",
				slog.String("route", route), slog.String("error", err.Error()))
			http.Error(w, fmt.Sprintf("tunnel: route %q: upstream: %v", route, err), status)
		},
	}
	return u
}

// serve forwards r; rest is the path below the route, wellKnown the
// /.well-known/ suffix name when the request is OAuth discovery.
func (u *httpUpstream) serve(w http.ResponseWriter, r *http.Request, rest, wellKnown string) {
	out := *u.target
	if wellKnown != "" {
		// RFC 8414 / RFC 9728: the well-known segment goes between the host
		// and the resource's path.
		out.Path = "/.well-known/" + wellKnown + strings.TrimSuffix(u.target.Path, "/") + rest
	} else {
		out.Path = strings.TrimSuffix(u.target.Path, "/") + rest
		if out.Path == "" {
			out.Path = "/"
		}
	}
	out.RawPath = ""
	out.RawQuery = r.URL.RawQuery
	ctx := context.WithValue(r.Context(), upstreamURLKey{}, &out)
	u.proxy.ServeHTTP(w, r.WithContext(ctx))
}

func (u *httpUpstream) close() { u.tr.CloseIdleConnections() }

// proxyBuffers lends the reverse proxies their 32 KiB copy buffers.
var proxyBuffers = &bufferPool{}

type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }
