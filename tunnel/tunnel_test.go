package tunnel

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHTTPRouteCallsToolsThroughEdgeAndConnector(t *testing.T) {
	eachPath(t, testHTTPRouteCallsTools)
}

func testHTTPRouteCallsTools(t *testing.T, p servePath) {
	up, rec := startUpstream(t, nil)
	url, _ := p.serve(t, Policy{}, nil, Route{Name: "tickets", URL: up})

	// The agent's own OAuth token passes through to the MCP server untouched.
	hc := &http.Client{Transport: headerTransport{"Authorization": "Bearer agent-oauth-token"}}
	cs := connect(t, url+"/tickets", hc, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tools, err := cs.ListTools(ctx, nil)
	require.NoError(t, err)
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
	}
	assert.ElementsMatch(t, []string{"echo", "stream", "block", "blob"}, names)
	got, err := callEcho(ctx, cs, "hello through the tunnel")
	require.NoError(t, err)
	assert.Equal(t, "hello through the tunnel", got)

	hdrs := rec.all()
	require.NotEmpty(t, hdrs)
	for _, h := range hdrs {
		assert.Equal(t, "Bearer agent-oauth-token", h.Get("Authorization"))
		for k, vs := range h {
			for _, v := range vs {
				assert.NotContains(t, v, testToken, "tunnel token leaked upstream in header %s", k)
			}
		}
	}
}

// headerTransport adds fixed headers to every request.
type headerTransport map[string]string

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range h {
		r.Header.Set(k, v)
	}
	return http.DefaultTransport.RoundTrip(r)
}

func TestStdioRouteOneChildPerSession(t *testing.T) { eachPath(t, testStdioRouteOneChildPerSession) }

func testStdioRouteOneChildPerSession(t *testing.T, p servePath) {
	url, c := p.serve(t, Policy{}, nil, stdioRoute("local"))
	e := struct{ url string }{url}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cs1 := connect(t, e.url+"/local", nil, nil)
	cs2 := connect(t, e.url+"/local", nil, nil)
	assert.True(t, strings.HasPrefix(cs1.ID(), "c1.") || strings.HasPrefix(cs1.ID(), "gateway."), "session id %q is not owned by connector c1", cs1.ID())
	assert.NotEqual(t, cs1.ID(), cs2.ID())
	assert.Equal(t, 2, c.stdio["local"].sessionCount())
	for i, cs := range []*mcp.ClientSession{cs1, cs2} {
		got, err := callEcho(ctx, cs, "stdio "+string(rune('a'+i)))
		require.NoError(t, err)
		assert.Equal(t, "stdio "+string(rune('a'+i)), got)
	}
	pids := c.stdio["local"].pids()
	require.Len(t, pids, 2)
	pid1, pid2 := pids[cs1.ID()], pids[cs2.ID()]
	require.NotZero(t, pid1)
	require.NotZero(t, pid2)
	assert.NotEqual(t, pid1, pid2, "one child per session")
	// Closing the client session deletes the MCP session, which ends its child.
	require.NoError(t, cs1.Close())
	waitFor(t, "session 1 ended", func() bool { return c.stdio["local"].sessionCount() == 1 })
	// The DELETE is answered at once; the child ends in the background
	// (stdin closed, then signals). ESRCH only once it is reaped.
	waitFor(t, "child 1 gone and reaped", func() bool { return errors.Is(syscall.Kill(pid1, 0), syscall.ESRCH) })
	assert.NoError(t, syscall.Kill(pid2, 0), "the other session's child lives on")
	got, err := callEcho(ctx, cs2, "still here")
	require.NoError(t, err)
	assert.Equal(t, "still here", got)
}

// TestStdioChildCrashFailsCallsAtOnce: a stdio server that dies mid-call
// ends the call with a JSON-RPC error at once, not at the client's timeout.
func TestStdioChildCrashFailsCallsAtOnce(t *testing.T) { eachPath(t, testStdioChildCrash) }

func testStdioChildCrash(t *testing.T, p servePath) {
	rt := stdioRoute("local")
	rt.Env = append(rt.Env, "PERIMETER_TUNNEL_TEST_CRASH=1")
	url, c := p.serve(t, Policy{}, nil, rt)
	e := struct{ url string }{url}
	sid := initializeRaw(t, e.url+"/local")
	// No deadline: before the fix the call's stream stayed open until the
	// client gave up (or ended without a response).
	code, body := postRaw(t, e.url+"/local", sid, `{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"crash","arguments":{"text":"bye"}}}`)
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, `"id":9`)
	assert.Contains(t, body, `"code":-32000`)
	assert.Contains(t, body, "Connection closed")
	waitFor(t, "session gone", func() bool { return c.stdio["local"].sessionCount() == 0 })
}

// TestStdioDeleteAnsweredAtOnce: ending a stdio session does not wait for
// the child's grace period.
func TestStdioDeleteAnsweredAtOnce(t *testing.T) { eachPath(t, testStdioDeleteAnsweredAtOnce) }

func testStdioDeleteAnsweredAtOnce(t *testing.T, p servePath) {
	url, c := p.serve(t, Policy{}, nil, stdioRoute("local"))
	e := struct{ url string }{url}
	sid := initializeRaw(t, e.url+"/local")
	// Hold the child's exit: the bridge must answer the DELETE before the
	// child is gone. A child that ignores stdin EOF is simulated by
	// stopping it (SIGSTOP) so that it cannot exit before SIGTERM/SIGKILL.
	pid := c.stdio["local"].pids()[sid]
	require.NotZero(t, pid)
	require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP))
	req, _ := http.NewRequest("DELETE", e.url+"/local", nil)
	req.Header.Set("Mcp-Session-Id", sid)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusNoContent, resp.StatusCode)
	assert.NoError(t, syscall.Kill(pid, 0), "answered while the child still exists")
	syscall.Kill(pid, syscall.SIGCONT)
	waitFor(t, "child gone", func() bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) })
}

func TestStdioSessionsEndWhenIdle(t *testing.T) {
	e := startEdge(t, edgeOptions(t), "")
	opts := connectorOptions(t, e.addr, stdioRoute("local"))
	opts.SessionIdleTimeout = time.Second
	c, _ := startConnector(t, opts)
	waitConnected(t, e, c, 1)
	hc := &http.Client{}
	cl := mcp.NewClient(&mcp.Implementation{Name: "idle", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// No standalone GET stream: an open stream is activity, and keeps the
	// session alive.
	cs, err := cl.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: e.url + "/local", HTTPClient: hc, DisableStandaloneSSE: true, MaxRetries: -1}, nil)
	require.NoError(t, err)
	defer cs.Close()
	_, err = callEcho(ctx, cs, "x")
	require.NoError(t, err)
	require.Equal(t, 1, c.stdio["local"].sessionCount())
	var pid int
	for _, p := range c.stdio["local"].pids() {
		pid = p
	}
	waitFor(t, "idle session reaped", func() bool { return c.stdio["local"].sessionCount() == 0 })
	waitFor(t, "the idle session's child gone and reaped", func() bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) })
	// The session is gone: the next call gets an error (404 → session missing).
	_, err = callEcho(ctx, cs, "y")
	require.Error(t, err)
}

func TestStdioSessionSurvivesCarrierReconnect(t *testing.T) {
	e := startEdge(t, edgeOptions(t), "")
	d := &cutDialer{}
	opts := connectorOptions(t, e.addr, stdioRoute("local"))
	opts.Dial = d.dial
	c, _ := startConnector(t, opts)
	waitConnected(t, e, c, 1)
	cl := mcp.NewClient(&mcp.Implementation{Name: "survivor", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cs, err := cl.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: e.url + "/local", DisableStandaloneSSE: true, MaxRetries: -1}, nil)
	require.NoError(t, err)
	defer cs.Close()
	_, err = callEcho(ctx, cs, "before")
	require.NoError(t, err)

	t0 := time.Now()
	d.cut()
	waitReconnected(t, e, c, t0)
	// The child lives in the connector, not in the carrier connection: the
	// same MCP session goes on over the new connection.
	got, err := callEcho(ctx, cs, "after")
	require.NoError(t, err)
	assert.Equal(t, "after", got)
	assert.Equal(t, 1, c.stdio["local"].sessionCount())
}
