package tunnel

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const clientToken = "client-token-0123456789abcdef"

// TestEdgeRequiresClientAuthentication: the edge refuses to start without a
// decision about MCP client authentication, refuses unauthenticated
// clients, never forwards the client's edge token, and logs loudly when
// authentication is turned off.
func TestEdgeRequiresClientAuthentication(t *testing.T) {
	o := edgeOptions(t)
	o.ClientAuth = ClientAuth{}
	_, err := NewEdge(o)
	require.ErrorContains(t, err, "no MCP client authentication")

	logs := &syncBuffer{}
	o = edgeOptions(t)
	o.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	_, err = NewEdge(o)
	require.NoError(t, err)
	assert.Contains(t, string(logs.Bytes()), "MCP CLIENT AUTHENTICATION IS DISABLED")
	assert.Contains(t, string(logs.Bytes()), `"level":"WARN"`)

	up, rec := startUpstream(t, nil)
	eo := edgeOptions(t)
	eo.ClientAuth = ClientAuth{Tokens: []string{clientToken}}
	e := startEdge(t, eo, "")
	c, _ := startConnector(t, connectorOptions(t, e.addr, Route{Name: "r", URL: up}))
	waitConnected(t, e, c, 1)

	for _, auth := range []string{"", "Bearer wrong-token-0123456789", "Basic " + clientToken, clientToken} {
		req, _ := http.NewRequest("POST", e.url+"/r", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, auth)
		assert.Contains(t, string(b), "authentication failed")
		assert.Contains(t, resp.Header.Get("WWW-Authenticate"), "Bearer")
	}
	assert.Empty(t, rec.all(), "nothing reached the upstream")

	cs := connect(t, e.url+"/r", &http.Client{Transport: headerTransport{"Authorization": "Bearer " + clientToken}}, nil)
	got, err := callEcho(context.Background(), cs, "authenticated")
	require.NoError(t, err)
	assert.Equal(t, "authenticated", got)
	for _, h := range rec.all() {
		assert.Empty(t, h.Get("Authorization"), "the edge's client token is never forwarded")
		assert.Equal(t, "token:0", h.Get(clientHeader))
	}

	// The in-process client of the host's own agent needs no token.
	cs2, err := mcp.NewClient(&mcp.Implementation{Name: "in", Version: "1"}, nil).Connect(context.Background(), e.ClientTransport("r"), nil)
	require.NoError(t, err)
	cs2.Close()
}

// TestClientTokenInCustomHeaderLeavesAuthorizationAlone: with a custom
// header the client's OAuth Authorization reaches the upstream untouched and
// the tunnel's token does not.
func TestClientTokenInCustomHeaderLeavesAuthorizationAlone(t *testing.T) {
	up, rec := startUpstream(t, nil)
	eo := edgeOptions(t)
	eo.ClientAuth = ClientAuth{Tokens: []string{clientToken}, Header: "X-Perimeter-Token"}
	e := startEdge(t, eo, "")
	c, _ := startConnector(t, connectorOptions(t, e.addr, Route{Name: "r", URL: up}))
	waitConnected(t, e, c, 1)
	cs := connect(t, e.url+"/r", &http.Client{Transport: headerTransport{"X-Perimeter-Token": clientToken, "Authorization": "Bearer oauth-for-upstream"}}, nil)
	_, err := callEcho(context.Background(), cs, "x")
	require.NoError(t, err)
	for _, h := range rec.all() {
		assert.Equal(t, "Bearer oauth-for-upstream", h.Get("Authorization"))
		assert.Empty(t, h.Get("X-Perimeter-Token"))
	}
}

// TestClientCertificateAuthentication admits a client by certificate.
func TestClientCertificateAuthentication(t *testing.T) {
	up, _ := startUpstream(t, nil)
	eo := edgeOptions(t)
	eo.ClientAuth = ClientAuth{ClientCAs: getCerts().pool}
	e := startEdge(t, eo, "")
	c, _ := startConnector(t, connectorOptions(t, e.addr, Route{Name: "r", URL: up}))
	waitConnected(t, e, c, 1)
	srv := httptest.NewUnstartedServer(e.Handler())
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{getCerts().server}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: getCerts().pool}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		cert []tls.Certificate
		want int
	}{{nil, http.StatusUnauthorized}, {[]tls.Certificate{getCerts().client}, http.StatusOK}} {
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: getCerts().pool, Certificates: tc.cert}}}
		req, _ := http.NewRequest("POST", srv.URL+"/r", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		resp, err := hc.Do(req)
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		assert.Equal(t, tc.want, resp.StatusCode)
		if sid := resp.Header.Get("Mcp-Session-Id"); sid != "" {
			req, _ := http.NewRequest("DELETE", srv.URL+"/r", nil)
			req.Header.Set("Mcp-Session-Id", sid)
			if resp, err := hc.Do(req); err == nil {
				resp.Body.Close()
			}
		}
		hc.CloseIdleConnections()
	}
}

// TestSessionCapsPerClientAndInTotal: the edge counts sessions per client
// and in all, refuses more with 429/503 and a JSON-RPC error, and frees a
// slot on DELETE; the connector caps stdio children per client and in all.
func TestSessionCapsPerClientAndInTotal(t *testing.T) {
	up, _ := startUpstream(t, nil)
	eo := edgeOptions(t)
	eo.ClientAuth = ClientAuth{Tokens: []string{clientToken, clientToken + "-b"}}
	eo.MaxSessionsPerClient = 2
	eo.MaxSessions = 3
	e := startEdge(t, eo, "")
	co := connectorOptions(t, e.addr, Route{Name: "r", URL: up}, stdioRoute("local"))
	co.MaxStdioSessions = 1
	co.MaxStdioSessionsPerClient = 1
	c, _ := startConnector(t, co)
	waitConnected(t, e, c, 1)

	init := func(route, token string) (int, string, string) {
		req, _ := http.NewRequest("POST", e.url+"/"+route, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Mcp-Session-Id"), string(b)
	}
	del := func(route, token, sid string) {
		req, _ := http.NewRequest("DELETE", e.url+"/"+route, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Mcp-Session-Id", sid)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
	}
	a, b := clientToken, clientToken+"-b"

	// stdio: one child in all.
	code, s1, _ := init("local", a)
	require.Equal(t, http.StatusOK, code)
	code, _, body := init("local", b)
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Contains(t, body, "too many stdio sessions in all (limit 1)")
	del("local", a, s1)

	// Edge: two per client, three in all.
	code, s1, _ = init("r", a)
	require.Equal(t, http.StatusOK, code)
	code, s2, _ := init("r", a)
	require.Equal(t, http.StatusOK, code)
	code, _, body = init("r", a)
	assert.Equal(t, http.StatusTooManyRequests, code)
	var msg struct {
		Error struct {
			Code    int
			Message string
		}
	}
	require.NoError(t, json.Unmarshal([]byte(body), &msg), body)
	assert.Contains(t, msg.Error.Message, "too many MCP sessions for this client (limit 2)")
	code, s3, _ := init("r", b)
	require.Equal(t, http.StatusOK, code)
	code, _, body = init("r", b)
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Contains(t, body, "too many MCP sessions on this edge (limit 3)")
	del("r", a, s1)
	code, s4, _ := init("r", b)
	assert.Equal(t, http.StatusOK, code, "DELETE freed a slot")
	for _, s := range []string{s2} {
		del("r", a, s)
	}
	for _, s := range []string{s3, s4} {
		del("r", b, s)
	}
	assert.Equal(t, 0, e.caps.count("token:0"))
	assert.Equal(t, 0, e.caps.count("token:1"))
}

// TestRoutePolicyMergesWithGlobal: a route's policy adds to the global one;
// the global deny list, body cap and origins still apply on that route.
func TestRoutePolicyMergesWithGlobal(t *testing.T) {
	global := Policy{DenyTools: []string{"drop_*"}, MaxBodyBytes: 100, AllowedOrigins: []string{"https://a.example"}, DenyMethods: []string{"sampling/*"}}
	route := Policy{DenyTools: []string{"rm"}, AllowTools: []string{"echo", "rm", "drop_x"}, AllowedOrigins: []string{"https://b.example"}}
	m := global.Merge(route)
	assert.Equal(t, []string{"drop_*", "rm"}, m.DenyTools)
	assert.Equal(t, int64(100), m.MaxBodyBytes)
	assert.Equal(t, []string{"https://a.example", "https://b.example"}, m.AllowedOrigins)
	assert.Equal(t, []string{"sampling/*"}, m.DenyMethods)
	assert.Equal(t, []string{"echo", "rm", "drop_x"}, m.AllowTools)
	assert.NotEmpty(t, m.checkMethod("tools/call", "drop_x"), "global deny wins over the route's allow")
	assert.Equal(t, int64(5000), global.Merge(Policy{MaxBodyBytes: 5000}).MaxBodyBytes, "a route may set its own cap")

	e, _ := setup(t, nil, func(o *EdgeOptions) {
		o.Policy = Policy{DenyTools: []string{"blob"}, MaxBodyBytes: 300}
		o.Routes = map[string]Policy{"r": {DenyTools: []string{"stream"}}}
	}, nil)
	sid := initializeRaw(t, e.url+"/r")
	for _, tool := range []string{"blob", "stream"} {
		code, body := postRaw(t, e.url+"/r", sid, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"`+tool+`","arguments":{}}}`)
		assert.Equal(t, http.StatusOK, code)
		assert.Contains(t, body, `is denied on this route`, tool)
	}
	code, _ := postRaw(t, e.url+"/r", sid, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"`+strings.Repeat("a", 400)+`"}}}`)
	assert.Equal(t, http.StatusRequestEntityTooLarge, code, "the global body cap applies on the route")
}

// TestOriginAndHost: the edge's own origin passes by default, a foreign one
// and a repeated Origin do not; Host is checked (loopback names on a
// loopback listener, configured names otherwise).
func TestOriginAndHost(t *testing.T) {
	e, _ := setup(t, nil, nil, nil)
	host := strings.TrimPrefix(e.url, "http://")
	try := func(hostHdr string, origins ...string) int {
		req, _ := http.NewRequest("POST", e.url+"/r", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if hostHdr != "" {
			req.Host = hostHdr
		}
		for _, o := range origins {
			req.Header.Add("Origin", o)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if sid := resp.Header.Get("Mcp-Session-Id"); sid != "" {
			req, _ := http.NewRequest("DELETE", e.url+"/r", nil)
			req.Header.Set("Mcp-Session-Id", sid)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}
		return resp.StatusCode
	}
	assert.Equal(t, http.StatusOK, try("", "http://"+host), "own origin")
	assert.Equal(t, http.StatusOK, try("localhost:1234", "http://localhost:1234"), "loopback name and its origin")
	assert.Equal(t, http.StatusForbidden, try("", "http://evil.example"), "foreign origin")
	assert.Equal(t, http.StatusForbidden, try("", "http://"+host, "http://"+host), "repeated Origin")
	assert.Equal(t, http.StatusForbidden, try("evil.example"), "foreign Host on a loopback listener")
	assert.Equal(t, http.StatusForbidden, try("evil.example", "http://evil.example"), "rebinding: Host and Origin both foreign")

	// Configured names; any port for a bare name.
	g := &guard{front: true, policy: Policy{AllowedHosts: []string{"mcp.example.com"}}}
	ctx := context.WithValue(context.Background(), http.LocalAddrContextKey, fakeAddr("10.0.0.1:443"))
	r := httptest.NewRequestWithContext(ctx, "POST", "http://mcp.example.com:8443/r", nil)
	assert.True(t, g.hostAllowed(r))
	r.Host = "other.example.com"
	assert.False(t, g.hostAllowed(r))
	g.policy.AllowedHosts = nil
	assert.True(t, g.hostAllowed(r), "no names configured, not loopback: any host")
}

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }
