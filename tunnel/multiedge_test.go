package tunnel

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSessionThroughTwoEdges: one connector serves two edges; a session's
// requests alternate between them (a load balancer without affinity). Each
// edge's requests keep their order, and neither edge's requests wait for
// the other's numbering (they used to: the connector kept one count per
// session, so edge A's next request waited for a number only edge B's
// count could reach, until the client gave up).
func TestSessionThroughTwoEdges(t *testing.T) {
	up, _ := startUpstream(t, nil)
	e1 := startEdge(t, edgeOptions(t), "")
	e2 := startEdge(t, edgeOptions(t), "")
	co := connectorOptions(t, e1.addr, Route{Name: "r", URL: up})
	co.Edges = []string{e1.addr, e2.addr}
	co.Connections = 2
	c, _ := startConnector(t, co)
	waitFor(t, "a connection at each edge", func() bool {
		return c.Connected() == 2 && len(e1.Status().Connectors) == 1 && len(e2.Status().Connectors) == 1
	})

	cs := connect(t, e1.url+"/r", nil, nil)
	// A hang is the failure here; the bound only ends a failed run.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := range 3 {
		got, err := callEcho(ctx, cs, fmt.Sprint("via edge 1, ", i))
		require.NoError(t, err)
		assert.Equal(t, fmt.Sprint("via edge 1, ", i), got)
	}
	// The same session through the other edge.
	for i := range 2 {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, e2.url+"/r",
			strings.NewReader(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"text":"via edge 2"}}}`, 1000+i)))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Session-Id", cs.ID())
		req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
		assert.Contains(t, string(body), "via edge 2")
	}
	// Back to the first edge: its count goes on from where it was.
	got, err := callEcho(ctx, cs, "edge 1 again")
	require.NoError(t, err)
	assert.Equal(t, "edge 1 again", got)
}
