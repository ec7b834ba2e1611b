package tunnel

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// setup runs an upstream, an edge and one connector with route "r".
func setup(t testing.TB, hooks *testHooks, edgeMod func(*EdgeOptions), connMod func(*ConnectorOptions)) (*testEdge, *Connector) {
	t.Helper()
	up, _ := startUpstream(t, hooks)
	eo := edgeOptions(t)
	if edgeMod != nil {
		edgeMod(eo)
	}
	e := startEdge(t, eo, "")
	co := connectorOptions(t, e.addr, Route{Name: "r", URL: up})
	if connMod != nil {
		connMod(co)
	}
	c, _ := startConnector(t, co)
	waitConnected(t, e, c, co.Connections)
	return e, c
}

func TestServerNotificationsStreamWhileCallRuns(t *testing.T) {
	eachPath(t, testServerNotificationsStream)
}

func testServerNotificationsStream(t *testing.T, p servePath) {
	hooks := &testHooks{progressed: make(chan struct{})}
	up, _ := startUpstream(t, hooks)
	url, _ := p.serve(t, Policy{}, nil, Route{Name: "r", URL: up})
	var seen atomic.Int32
	cs := connect(t, url+"/r", nil, &mcp.ClientOptions{
		ProgressNotificationHandler: func(ctx context.Context, req *mcp.ProgressNotificationClientRequest) {
			seen.Add(1)
			hooks.progressed <- struct{}{} // lets the tool send the next one
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	params := &mcp.CallToolParams{Name: "stream", Arguments: map[string]any{"n": 5}}
	params.SetProgressToken("p1")
	res, err := cs.CallTool(ctx, params)
	require.NoError(t, err, "a buffered stream would deadlock: the tool waits for each notification to arrive")
	assert.False(t, res.IsError)
	assert.EqualValues(t, 5, seen.Load())
}

func TestSSEResponseIsNotBuffered(t *testing.T) { eachPath(t, testSSEResponseIsNotBuffered) }

func testSSEResponseIsNotBuffered(t *testing.T, p servePath) {
	// A raw upstream that sends one SSE event, then waits for the test to
	// have read it before sending the second.
	gotFirst := make(chan struct{})
	up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(200)
		fmt.Fprint(w, "id: 1\nretry: 1000\ndata: \n\n")
		w.(http.Flusher).Flush()
		select {
		case <-gotFirst:
		case <-r.Context().Done():
			t.Errorf("upstream request ended before the test read the first event: %v", context.Cause(r.Context()))
			return
		}
		fmt.Fprint(w, "id: 2\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n")
	})
	srv := newLoopbackServer(t, up)
	url, _ := p.serve(t, Policy{}, nil, Route{Name: "raw", URL: srv + "/mcp"})

	req, _ := http.NewRequest("POST", url+"/raw", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	assert.Equal(t, "no-cache", resp.Header.Get("Cache-Control"))
	assert.Equal(t, "no", resp.Header.Get("X-Accel-Buffering"))
	buf := make([]byte, 64)
	n, err := io.ReadAtLeast(resp.Body, buf, len("id: 1\nretry: 1000\ndata: \n\n"))
	require.NoError(t, err)
	assert.Equal(t, "id: 1\nretry: 1000\ndata: \n\n", string(buf[:n]), "the priming event (id and retry intact) arrives before the upstream sends more")
	close(gotFirst)
	rest, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Contains(t, string(rest), "id: 2\n")
}

func TestTwoHundredConcurrentSessionsOverOneConnection(t *testing.T) {
	e, c := setup(t, nil, func(o *EdgeOptions) { o.MaxSessionsPerClient = 200 }, nil)
	require.Equal(t, 1, c.Connected())
	// A bound on a hang, not on speed: 200 sessions take 40 s under -race
	// on a busy 2-core machine, and ran past 60 s with other suites.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	cl := mcp.NewClient(&mcp.Implementation{Name: "many", Version: "1"}, nil)
	for i := range n {
		wg.Go(func() {
			cs, err := cl.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: e.url + "/r", MaxRetries: -1}, nil)
			if err != nil {
				errs <- err
				return
			}
			defer cs.Close()
			want := fmt.Sprint("session ", i)
			got, err := callEcho(ctx, cs, want)
			if err == nil && got != want {
				err = fmt.Errorf("got %q, want %q", got, want)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	assert.Equal(t, 1, c.Connected())
}

// cutDialer records the connector's TCP connections so a test can cut them.
type cutDialer struct {
	mu    sync.Mutex
	conns []net.Conn
}

func (d *cutDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err == nil {
		d.mu.Lock()
		d.conns = append(d.conns, c)
		d.mu.Unlock()
	}
	return c, err
}

func (d *cutDialer) cut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		c.Close()
	}
	d.conns = nil
}

func TestConnectionCutMidCallFailsCleanlyAndReconnects(t *testing.T) {
	hooks := &testHooks{release: make(chan struct{}), started: make(chan struct{}, 1)}
	d := &cutDialer{}
	e, c := setup(t, hooks, nil, func(o *ConnectorOptions) { o.Dial = d.dial })
	cs := connect(t, e.url+"/r", nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	callErr := make(chan error, 1)
	go func() {
		_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "block", Arguments: map[string]any{"text": "x"}})
		callErr <- err
	}()
	select {
	case <-hooks.started:
	case <-ctx.Done():
		t.Fatal("block tool never started")
	}
	t0 := time.Now()
	d.cut()
	select {
	case err := <-callErr:
		require.Error(t, err, "a call whose connection was cut must fail, not hang or succeed")
	case <-ctx.Done():
		t.Fatal("the call hung after its connection was cut")
	}
	close(hooks.release)
	waitReconnected(t, e, c, t0)
	cs2 := connect(t, e.url+"/r", nil, nil)
	got, err := callEcho(ctx, cs2, "after reconnect")
	require.NoError(t, err)
	assert.Equal(t, "after reconnect", got)
}

func TestEdgeRestartConnectorComesBack(t *testing.T) {
	up, _ := startUpstream(t, nil)
	e := startEdge(t, edgeOptions(t), "")
	c, _ := startConnector(t, connectorOptions(t, e.addr, Route{Name: "r", URL: up}))
	waitConnected(t, e, c, 1)
	cs := connect(t, e.url+"/r", nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := callEcho(ctx, cs, "before")
	require.NoError(t, err)

	addr := e.addr
	e.stop(t)
	waitFor(t, "connector noticed", func() bool { return c.Connected() == 0 })
	e2 := startEdge(t, edgeOptions(t), addr)
	waitConnected(t, e2, c, 1)
	cs2 := connect(t, e2.url+"/r", nil, nil)
	got, err := callEcho(ctx, cs2, "after restart")
	require.NoError(t, err)
	assert.Equal(t, "after restart", got)
}

func TestConnectorsWithoutValidCredentialsAreRefusedBeforeAnyRoute(t *testing.T) {
	up, rec := startUpstream(t, nil)
	mtlsEdge := func(o *EdgeOptions) {
		o.Tokens = nil
		o.TLSConfig.ClientCAs = getCerts().pool
		o.TLSConfig.ClientAuth = tls.RequireAndVerifyClientCert
	}
	cases := []struct {
		name    string
		edge    func(*EdgeOptions)
		conn    func(*ConnectorOptions)
		allowed bool
	}{
		{name: "no token", conn: func(o *ConnectorOptions) {
			o.Token = ""
			o.TLSConfig.Certificates = []tls.Certificate{getCerts().client} // a cert, but the edge wants a token
		}},
		{name: "wrong token", conn: func(o *ConnectorOptions) { o.Token = "wrong-token-0123456789abcdef" }},
		{name: "mtls without certificate", edge: mtlsEdge},
		{name: "mtls with certificate from another CA", edge: mtlsEdge, conn: func(o *ConnectorOptions) {
			o.Token = ""
			o.TLSConfig.Certificates = []tls.Certificate{getCerts().rogueClient}
		}},
		{name: "mtls with the right certificate", edge: mtlsEdge, allowed: true, conn: func(o *ConnectorOptions) {
			o.Token = ""
			o.TLSConfig.Certificates = []tls.Certificate{getCerts().client}
		}},
		{name: "edge certificate not trusted", conn: func(o *ConnectorOptions) { o.TLSConfig.RootCAs = nil }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			eo := edgeOptions(t)
			failures := &countMetrics{}
			eo.Metrics = failures
			if tc.edge != nil {
				tc.edge(eo)
			}
			e := startEdge(t, eo, "")
			co := connectorOptions(t, e.addr, Route{Name: "r", URL: up})
			if tc.conn != nil {
				tc.conn(co)
			}
			if co.Token == "" && len(co.TLSConfig.Certificates) == 0 {
				co.Token = "placeholder-token-not-accepted" // NewConnector wants some credential
			}
			c, _ := startConnector(t, co)
			before := len(rec.all())
			if tc.allowed {
				waitConnected(t, e, c, 1)
				cs := connect(t, e.url+"/r", nil, nil)
				_, err := callEcho(context.Background(), cs, "ok")
				require.NoError(t, err)
				return
			}
			waitFor(t, "refused attempts", func() bool { return failures.get("tunnel_handshake_failures_total") >= 2 || c.Connected() > 0 })
			assert.Equal(t, 0, c.Connected())
			assert.Equal(t, "down", e.Status().State)
			resp, err := http.Post(e.url+"/r", "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
			assert.Equal(t, before, len(rec.all()), "the upstream must not have been reached")
		})
	}
}

// countMetrics counts Count calls by name.
type countMetrics struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *countMetrics) Count(name string, labels ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[name]++
}
func (c *countMetrics) Observe(string, float64, ...string) {}
func (c *countMetrics) get(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[name]
}

func TestRouteToDisallowedAddressIsRefused(t *testing.T) {
	t.Run("literal address refused at construction", func(t *testing.T) {
		co := connectorOptions(t, "127.0.0.1:1", Route{Name: "r", URL: "http://127.0.0.1:9/mcp"})
		co.AllowedNetworks = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
		_, err := NewConnector(co)
		require.ErrorIs(t, err, errAddressNotAllowed)
		assert.Contains(t, err.Error(), `route "r"`)
	})
	t.Run("default allowlist excludes loopback", func(t *testing.T) {
		co := connectorOptions(t, "127.0.0.1:1", Route{Name: "r", URL: "http://127.0.0.1:9/mcp"})
		co.AllowedNetworks = nil
		_, err := NewConnector(co)
		require.ErrorIs(t, err, errAddressNotAllowed)
	})
	t.Run("host name resolving outside the allowlist refused at dial", func(t *testing.T) {
		up, rec := startUpstream(t, nil)
		port := up[strings.LastIndex(up, ":")+1 : strings.Index(up, "/mcp")]
		e := startEdge(t, edgeOptions(t), "")
		co := connectorOptions(t, e.addr, Route{Name: "r", URL: "http://localhost:" + port + "/mcp"})
		co.AllowedNetworks = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
		c, _ := startConnector(t, co)
		waitConnected(t, e, c, 1)
		resp, err := http.Post(e.url+"/r", "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`))
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, http.StatusForbidden, resp.StatusCode)
		assert.Contains(t, string(body), "outside the connector's allowed networks")
		assert.Empty(t, rec.all(), "the upstream must not have been reached")
	})
	t.Run("route with command never comes from a request", func(t *testing.T) {
		// The connector serves only its configured routes: an unknown route
		// name is 404, whatever the request says.
		e := startEdge(t, edgeOptions(t), "")
		c, _ := startConnector(t, connectorOptions(t, e.addr, stdioRoute("local")))
		waitConnected(t, e, c, 1)
		resp, err := http.Post(e.url+"/sh", "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`))
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	})
}

func TestDeniedToolGetsJSONRPCError(t *testing.T) {
	for _, side := range []string{"connector", "edge"} {
		t.Run(side, func(t *testing.T) {
			pol := Policy{DenyTools: []string{"bl*"}}
			var up string
			var rec *headerRecorder
			up, rec = startUpstream(t, nil)
			eo := edgeOptions(t)
			if side == "edge" {
				eo.Routes = map[string]Policy{"r": pol}
			}
			e := startEdge(t, eo, "")
			rt := Route{Name: "r", URL: up}
			if side == "connector" {
				rt.Policy = pol
			}
			c, _ := startConnector(t, connectorOptions(t, e.addr, rt))
			waitConnected(t, e, c, 1)
			cs := connect(t, e.url+"/r", nil, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// Denied tools are not listed either.
			tools, err := cs.ListTools(ctx, nil)
			require.NoError(t, err)
			var names []string
			for _, tool := range tools.Tools {
				names = append(names, tool.Name)
			}
			assert.ElementsMatch(t, []string{"echo", "stream"}, names)

			before := len(rec.all())
			_, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "block", Arguments: map[string]any{"text": "x"}})
			require.Error(t, err)
			var rpcErr *jsonrpc.Error
			require.True(t, errors.As(err, &rpcErr), "want a JSON-RPC error, got %v", err)
			assert.EqualValues(t, CodePolicyDenied, rpcErr.Code)
			assert.Contains(t, rpcErr.Message, `tool "block" is denied`)
			assert.Equal(t, before, len(rec.all()), "a denied call must not reach the upstream")
			// Allowed tools still work in the same session.
			got, err := callEcho(ctx, cs, "fine")
			require.NoError(t, err)
			assert.Equal(t, "fine", got)
		})
	}
}

func TestPolicyChecksOnRawRequests(t *testing.T) {
	e, _ := setup(t, nil, func(o *EdgeOptions) {
		o.Policy = Policy{MaxBodyBytes: 1024, AllowedOrigins: []string{"https://app.example"}, AllowMethods: []string{"tools/*"}}
	}, func(o *ConnectorOptions) {
		// An Origin must be accepted at both ends.
		o.Routes[0].Policy.AllowedOrigins = []string{"https://app.example"}
	})
	post := func(body string, hdr map[string]string) (int, string) {
		req, _ := http.NewRequest("POST", e.url+"/r", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	call := `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}`

	code, body := post(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"`+strings.Repeat("a", 2000)+`"}}}`, nil)
	assert.Equal(t, http.StatusRequestEntityTooLarge, code)
	assert.Contains(t, body, "exceeds the route's limit of 1024 bytes")

	code, _ = post(call, map[string]string{"Origin": "https://evil.example"})
	assert.Equal(t, http.StatusForbidden, code)

	code, body = post(call, map[string]string{"Mcp-Protocol-Version": "1999-01-01"})
	assert.Equal(t, http.StatusBadRequest, code)
	assert.Contains(t, body, "Unsupported protocol version") // the MCP Go SDK's wording

	code, body = post(call, map[string]string{"Mcp-Method": "tools/list"})
	assert.Equal(t, http.StatusBadRequest, code)
	assert.Contains(t, body, "Mcp-Method header does not match")

	code, body = post(call, map[string]string{"Mcp-Method": "tools/call", "Mcp-Name": "other"})
	assert.Equal(t, http.StatusBadRequest, code)
	assert.Contains(t, body, "Mcp-Name header does not match")

	code, body = post(`{"jsonrpc":"2.0","id":3,"method":"prompts/list"}`, nil)
	assert.Equal(t, http.StatusOK, code)
	var msg struct {
		ID    int `json:"id"`
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &msg), body)
	assert.Equal(t, 3, msg.ID)
	assert.Equal(t, CodePolicyDenied, msg.Error.Code)
	assert.Contains(t, msg.Error.Message, `method "prompts/list" is not allowed`)

	code, _ = post(`{not json`, nil)
	assert.Equal(t, http.StatusBadRequest, code)

	req, _ := http.NewRequest("PUT", e.url+"/r", nil)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)

	// The allowed origin, a matching Mcp-Name and a known version pass.
	cl := &http.Client{Transport: headerTransport{"Origin": "https://app.example"}}
	cs := connect(t, e.url+"/r", cl, nil)
	got, err := callEcho(context.Background(), cs, "with origin")
	require.NoError(t, err)
	assert.Equal(t, "with origin", got)
}

func TestOAuthDiscoveryPassesThroughUntouched(t *testing.T) {
	eachPath(t, testOAuthDiscoveryPassesThroughUntouched)
}

func testOAuthDiscoveryPassesThroughUntouched(t *testing.T, p servePath) {
	var seen []string
	var mu sync.Mutex
	up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.URL.Path)
		mu.Unlock()
		switch r.URL.Path {
		case "/.well-known/oauth-protected-resource/mcp":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"resource":"https://mcp.internal/mcp","authorization_servers":["https://idp.example"]}`)
		case "/mcp":
			if r.Header.Get("Authorization") != "Bearer good" {
				w.Header().Set("WWW-Authenticate", `Bearer resource_metadata="https://mcp.internal/.well-known/oauth-protected-resource/mcp", scope="tickets"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"jsonrpc":"2.0","id":1,"result":{}}`)
		default:
			http.NotFound(w, r)
		}
	})
	srv := newLoopbackServer(t, up)
	url, _ := p.serve(t, Policy{}, nil, Route{Name: "auth", URL: srv + "/mcp"})
	e := struct{ url string }{url}

	resp, err := http.Post(e.url+"/auth", "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	assert.Equal(t, `Bearer resource_metadata="https://mcp.internal/.well-known/oauth-protected-resource/mcp", scope="tickets"`, resp.Header.Get("WWW-Authenticate"))

	req, _ := http.NewRequest("POST", e.url+"/auth", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	req.Header.Set("Authorization", "Bearer good")
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)

	resp, err = http.Get(e.url + "/.well-known/oauth-protected-resource/auth")
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.JSONEq(t, `{"resource":"https://mcp.internal/mcp","authorization_servers":["https://idp.example"]}`, string(b))
	mu.Lock()
	assert.Contains(t, seen, "/.well-known/oauth-protected-resource/mcp")
	n := len(seen)
	mu.Unlock()

	// A request cannot climb out of the route's base path.
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	fmt.Fprintf(conn, "GET /auth/../../secret HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
	status, _ := io.ReadAll(conn)
	assert.True(t, strings.HasPrefix(string(status), "HTTP/1.1 400"), "got %q", status)
	mu.Lock()
	assert.Len(t, seen, n, "the upstream must not be reached")
	mu.Unlock()
}

func TestGracefulDrainLetsCallsInFlightFinish(t *testing.T) {
	hooks := &testHooks{release: make(chan struct{}), started: make(chan struct{}, 1)}
	up, _ := startUpstream(t, hooks)
	e := startEdge(t, edgeOptions(t), "")
	c, stop := startConnector(t, connectorOptions(t, e.addr, Route{Name: "r", URL: up}))
	waitConnected(t, e, c, 1)
	hc := &http.Client{}
	cl := mcp.NewClient(&mcp.Implementation{Name: "drain", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cs, err := cl.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: e.url + "/r", HTTPClient: hc, DisableStandaloneSSE: true, MaxRetries: -1}, nil)
	require.NoError(t, err)
	callErr := make(chan error, 1)
	var res *mcp.CallToolResult
	go func() {
		var err error
		res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "block", Arguments: map[string]any{"text": "x"}})
		callErr <- err
	}()
	<-hooks.started
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	// While draining, the connection takes no new calls...
	waitGoAwaySeen(t, e)
	select {
	case <-stopped:
		t.Fatal("the connector stopped before its call in flight finished")
	default:
	}
	// ...and the call in flight completes.
	close(hooks.release)
	require.NoError(t, <-callErr)
	assert.Equal(t, map[string]any{"text": "released"}, res.StructuredContent)
	<-stopped
	cs.Close()
}

func TestHealthzReportsConnectors(t *testing.T) {
	up, _ := startUpstream(t, nil)
	e := startEdge(t, edgeOptions(t), "")
	get := func() (int, EdgeStatus) {
		resp, err := http.Get(e.url + "/healthz")
		require.NoError(t, err)
		defer resp.Body.Close()
		var st EdgeStatus
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
		return resp.StatusCode, st
	}
	code, st := get()
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "down", st.State)

	co := connectorOptions(t, e.addr, Route{Name: "r", URL: up})
	co.Connections = 3
	c, _ := startConnector(t, co)
	waitFor(t, "3 connections", func() bool { return c.Connected() == 3 && e.Status().State == "healthy" })
	code, st = get()
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "healthy", st.State)
	require.Len(t, st.Connectors, 1)
	assert.Equal(t, "c1", st.Connectors[0].ID)
	assert.Equal(t, 3, st.Connectors[0].Connections)
	assert.Equal(t, []string{"r"}, st.Connectors[0].Routes)

	// A second connector comes and goes: the edge is degraded, not healthy,
	// while the first one still serves.
	co2 := connectorOptions(t, e.addr, Route{Name: "r", URL: up})
	co2.ID = "c2"
	_, stop2 := startConnector(t, co2)
	waitFor(t, "c2 connected", func() bool { return len(e.Status().Connectors) == 2 && e.Status().State == "healthy" })
	stop2()
	waitFor(t, "c2 gone", func() bool { return e.Status().Connectors[1].Connections == 0 })
	code, st = get()
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "degraded", st.State)
	assert.Equal(t, "c2", st.Connectors[1].ID)
}

// TestHealthzDegradedWhileExpectedConnectorMissing: a configured connector
// that never came makes the edge degraded.
func TestHealthzDegradedWhileExpectedConnectorMissing(t *testing.T) {
	e, _ := setup(t, nil, func(o *EdgeOptions) { o.Connectors = []string{"c1", "backup"} }, nil)
	st := e.Status()
	assert.Equal(t, "degraded", st.State)
	require.Len(t, st.Connectors, 2)
	assert.Equal(t, "backup", st.Connectors[0].ID)
	assert.Equal(t, 0, st.Connectors[0].Connections)
}

func TestInProcessClientTransport(t *testing.T) {
	e, _ := setup(t, nil, nil, nil)
	cl := mcp.NewClient(&mcp.Implementation{Name: "in-process", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs, err := cl.Connect(ctx, e.ClientTransport("r"), nil)
	require.NoError(t, err)
	defer cs.Close()
	got, err := callEcho(ctx, cs, "in process")
	require.NoError(t, err)
	assert.Equal(t, "in process", got)
}

func TestAuditRecordPerCallWithoutCredentials(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	e, _ := setup(t, nil, func(o *EdgeOptions) { o.Logger = logger }, func(o *ConnectorOptions) { o.Logger = logger })
	hc := &http.Client{Transport: headerTransport{"Authorization": "Bearer secret-agent-token"}}
	cs := connect(t, e.url+"/r", hc, nil)
	_, err := callEcho(context.Background(), cs, "audited")
	require.NoError(t, err)
	cs.Close()

	var calls []map[string]any
	parse := func() {
		calls = nil
		for _, line := range bytes.Split(buf.Bytes(), []byte("\n")) {
			if len(line) == 0 {
				continue
			}
			assert.NotContains(t, string(line), testToken)
			assert.NotContains(t, string(line), "secret-agent-token")
			var rec map[string]any
			require.NoError(t, json.Unmarshal(line, &rec))
			assert.Empty(t, repeatedKeys(t, line), "a JSON log record repeats a key: %s", line)
			if rec["msg"] == "mcp call" && rec["tool"] == "echo" {
				calls = append(calls, rec)
			}
		}
	}
	// The connector writes its record before it ends the response stream,
	// so the edge has it; the edge writes its own when its handler returns.
	// Closing the edge's HTTP server waits for every handler to return:
	// after that no record of this call can follow.
	e.srv.Close()
	parse()
	require.Len(t, calls, 2, "one record at the edge and one at the connector")
	for _, rec := range calls {
		assert.Equal(t, "r", rec["route"])
		assert.Equal(t, "c1", rec["connector"])
		assert.Equal(t, "tools/call", rec["method"])
		assert.EqualValues(t, 200, rec["status"])
		assert.NotEmpty(t, rec["session"])
		assert.Greater(t, rec["bytes_in"], float64(0))
		assert.Greater(t, rec["bytes_out"], float64(0))
		assert.Contains(t, rec, "latency")
	}
}

// repeatedKeys returns the top-level keys that appear more than once in the
// JSON object line.
func repeatedKeys(t *testing.T, line []byte) []string {
	dec := json.NewDecoder(bytes.NewReader(line))
	_, err := dec.Token()
	require.NoError(t, err)
	seen := map[string]bool{}
	var rep []string
	for dec.More() {
		k, err := dec.Token()
		require.NoError(t, err)
		if seen[k.(string)] {
			rep = append(rep, k.(string))
		}
		seen[k.(string)] = true
		var v json.RawMessage
		require.NoError(t, dec.Decode(&v))
	}
	return rep
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// closeRelay forwards TCP connections to target and records, for each, which
// side ended it first: "dialer" (the side that dialed the relay) or "target".
type closeRelay struct {
	addr  string
	first chan string
}

func newCloseRelay(t *testing.T, target string) *closeRelay {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	r := &closeRelay{addr: ln.Addr().String(), first: make(chan string, 16)}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			a, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", target)
			if err != nil {
				a.Close()
				continue
			}
			var once sync.Once
			pipe := func(dst, src net.Conn, side string) {
				io.Copy(dst, src)
				once.Do(func() { r.first <- side })
				a.Close()
				b.Close()
			}
			wg.Go(func() { pipe(b, a, "dialer") })
			wg.Go(func() { pipe(a, b, "target") })
		}
	})
	return r
}

// A draining connector's HTTP/2 server says GOAWAY and then waits, for up to
// its fixed one-second timeout, for the edge to close the connection; the
// edge closes it as soon as no call is left on it: at once when GOAWAY finds
// it idle (the edge's own check), or when a call in flight ends (the HTTP/2
// client does this itself; checked so that it stays so).
func TestEdgeClosesADrainedCarrier(t *testing.T) {
	for _, inFlight := range []bool{false, true} {
		t.Run(fmt.Sprintf("call-in-flight=%v", inFlight), func(t *testing.T) {
			hooks := &testHooks{release: make(chan struct{}), started: make(chan struct{}, 1)}
			up, _ := startUpstream(t, hooks)
			e := startEdge(t, edgeOptions(t), "")
			relay := newCloseRelay(t, e.addr)
			c, stop := startConnector(t, connectorOptions(t, relay.addr, Route{Name: "r", URL: up}))
			waitConnected(t, e, c, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			// No standalone SSE stream: it would be a call in flight until the
			// drain timeout.
			cl := mcp.NewClient(&mcp.Implementation{Name: "drain", Version: "1"}, nil)
			cs, err := cl.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: e.url + "/r", DisableStandaloneSSE: true, MaxRetries: -1}, nil)
			require.NoError(t, err)
			defer cs.Close()
			callErr := make(chan error, 1)
			if inFlight {
				go func() {
					_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "block", Arguments: map[string]any{"text": "x"}})
					callErr <- err
				}()
				<-hooks.started
			} else {
				got, err := callEcho(ctx, cs, "hi")
				require.NoError(t, err)
				require.Equal(t, "hi", got)
			}
			stopped := make(chan struct{})
			go func() { stop(); close(stopped) }()
			if inFlight {
				waitGoAwaySeen(t, e)
				close(hooks.release)
				require.NoError(t, <-callErr)
			}
			<-stopped
			assert.Equal(t, "target", <-relay.first, "the connector's server closed the drained connection: the edge left it open until the server's GOAWAY timeout")
		})
	}
}

// waitGoAwaySeen waits until the edge refuses new sessions on route r with
// 503: its only connector's carrier has said GOAWAY.
func waitGoAwaySeen(t *testing.T, e *testEdge) {
	t.Helper()
	waitFor(t, "GOAWAY seen by the edge", func() bool {
		resp, err := http.Post(e.url+"/r", "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
}
