package tunnel

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startWebSocketEdge serves an edge's WebSocketHandler on an HTTP/1.1-only
// TLS server, as a host's HTTPS server on 443 would, and its MCP Handler on
// plain HTTP.
func startWebSocketEdge(t *testing.T, opts *EdgeOptions, clientAuth tls.ClientAuthType) (*testEdge, string) {
	t.Helper()
	e, err := NewEdge(opts)
	require.NoError(t, err)
	ws := httptest.NewUnstartedServer(e.WebSocketHandler())
	ws.TLS = &tls.Config{Certificates: []tls.Certificate{getCerts().server}, NextProtos: []string{"http/1.1"}, ClientAuth: clientAuth, ClientCAs: getCerts().pool}
	ws.StartTLS()
	srv := httptest.NewServer(e.Handler())
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		require.NoError(t, e.Close())
		ws.CloseClientConnections()
		ws.Close()
	})
	return &testEdge{Edge: e, url: srv.URL, srv: srv}, "wss://" + strings.TrimPrefix(ws.URL, "https://") + "/tunnel"
}

func TestWebSocketFallbackCarrier(t *testing.T) {
	up, _ := startUpstream(t, nil)
	e, wsURL := startWebSocketEdge(t, edgeOptions(t), tls.NoClientCert)
	co := connectorOptions(t, wsURL, Route{Name: "r", URL: up}, stdioRoute("local"))
	co.Connections = 2
	c, _ := startConnector(t, co)
	waitConnected(t, e, c, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, route := range []string{"r", "local"} {
		cs := connect(t, e.url+"/"+route, nil, nil)
		got, err := callEcho(ctx, cs, "over websocket")
		require.NoError(t, err)
		assert.Equal(t, "over websocket", got)
	}
}

func TestWebSocketCarrierRefusesBadCredentials(t *testing.T) {
	up, _ := startUpstream(t, nil)
	t.Run("wrong token", func(t *testing.T) {
		eo := edgeOptions(t)
		m := &countMetrics{}
		eo.Metrics = m
		e, wsURL := startWebSocketEdge(t, eo, tls.NoClientCert)
		co := connectorOptions(t, wsURL, Route{Name: "r", URL: up})
		co.Token = "wrong-token-0123456789abcdef"
		c, _ := startConnector(t, co)
		waitFor(t, "refusals", func() bool { return m.get("tunnel_handshake_failures_total") >= 2 })
		assert.Equal(t, 0, c.Connected())
		assert.Equal(t, "down", e.Status().State)
	})
	t.Run("mtls certificate from another CA", func(t *testing.T) {
		eo := edgeOptions(t)
		eo.Tokens = nil
		eo.TLSConfig.ClientAuth = tls.RequireAndVerifyClientCert
		eo.TLSConfig.ClientCAs = getCerts().pool
		m := &countMetrics{}
		eo.Metrics = m
		// The host's server asks for a certificate but leaves checking it
		// to the edge.
		e, wsURL := startWebSocketEdge(t, eo, tls.RequestClientCert)
		co := connectorOptions(t, wsURL, Route{Name: "r", URL: up})
		co.Token = ""
		co.TLSConfig.Certificates = []tls.Certificate{getCerts().rogueClient}
		c, _ := startConnector(t, co)
		waitFor(t, "refusals", func() bool { return m.get("tunnel_handshake_failures_total") >= 2 })
		assert.Equal(t, 0, c.Connected())
		resp, err := http.Get(e.url + "/healthz")
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	})
	t.Run("mtls right certificate", func(t *testing.T) {
		eo := edgeOptions(t)
		eo.Tokens = nil
		eo.TLSConfig.ClientAuth = tls.RequireAndVerifyClientCert
		eo.TLSConfig.ClientCAs = getCerts().pool
		e, wsURL := startWebSocketEdge(t, eo, tls.RequestClientCert)
		co := connectorOptions(t, wsURL, Route{Name: "r", URL: up})
		co.Token = ""
		co.TLSConfig.Certificates = []tls.Certificate{getCerts().client}
		c, _ := startConnector(t, co)
		waitConnected(t, e, c, 1)
	})
}
