package tunnel

import (
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
)

// servePath is one way MCP clients reach routes: through an edge and a
// connector, or straight through a gateway (perimeter tunnel serve). The
// end-to-end tests run over both.
type servePath struct {
	name string
	// serve serves routes with the front end's policy pol (the edge's or
	// the gateway's global policy) and returns the clients' base URL and
	// the routes' upstream side.
	serve func(t testing.TB, pol Policy, logger *slog.Logger, routes ...Route) (string, *routeSet)
}

func servePaths() []servePath {
	return []servePath{
		{"connector", func(t testing.TB, pol Policy, logger *slog.Logger, routes ...Route) (string, *routeSet) {
			eo := edgeOptions(t)
			eo.Policy = pol
			co := connectorOptions(t, "", routes...)
			if logger != nil {
				eo.Logger, co.Logger = logger, logger
			}
			e := startEdge(t, eo, "")
			co.Edges = []string{e.addr}
			c, _ := startConnector(t, co)
			waitConnected(t, e, c, 1)
			return e.url, c.routeSet
		}},
		{"gateway", func(t testing.TB, pol Policy, logger *slog.Logger, routes ...Route) (string, *routeSet) {
			if logger == nil {
				logger = quietLogger(t)
			}
			g, err := NewGateway(&GatewayOptions{
				Routes: routes, Policy: pol, Logger: logger,
				AllowedNetworks:      []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
				ClientAuth:           ClientAuth{Disabled: true},
				MaxSessionsPerClient: 2000,
			})
			require.NoError(t, err)
			srv := httptest.NewServer(g.Handler())
			t.Cleanup(func() {
				srv.CloseClientConnections()
				srv.Close()
				g.Close()
			})
			return srv.URL, g.rs
		}},
	}
}

// eachPath runs f as a subtest over every serving path.
func eachPath(t *testing.T, f func(t *testing.T, p servePath)) {
	for _, p := range servePaths() {
		t.Run(p.name, func(t *testing.T) { f(t, p) })
	}
}
