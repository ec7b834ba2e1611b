package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTunnelCertsMakeAWorkingTunnel: the files `perimeter tunnel certs`
// writes, used as docs/tunnel.md says, give an edge that admits the
// connector by its client certificate and the MCP client by its token.
func TestTunnelCertsMakeAWorkingTunnel(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	code, out, errOut := cli(t, "", "tunnel", "certs", "--dir", dir, "--edge-name", "127.0.0.1,localhost", "--connector", "c1", "--client", "agent")
	require.Equal(t, 0, code, errOut)
	for _, f := range []string{"ca-key.pem", "edge-key.pem", "connector-c1-key.pem", "connector-c1.token", "client-agent-key.pem", "client-agent.token"} {
		st, err := os.Stat(filepath.Join(dir, f))
		require.NoError(t, err, f)
		assert.Equal(t, os.FileMode(0o600), st.Mode().Perm(), f)
		assert.Contains(t, out, filepath.Join(dir, f))
	}
	st, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), st.Mode().Perm())
	assert.Equal(t, []string{"c1"}, readCert(t, filepath.Join(dir, "connector-c1.pem")).DNSNames)

	// A second run reuses the CA and refuses to replace existing files.
	code, out, errOut = cli(t, "", "tunnel", "certs", "--dir", dir, "--connector", "c2")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "using the CA in")
	code, _, errOut = cli(t, "", "tunnel", "certs", "--dir", dir, "--connector", "c2")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "already exists")
	code, _, errOut = cli(t, "", "tunnel", "certs", "--dir", dir, "--connector", "../x")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "letters, digits")
	code, _, errOut = cli(t, "", "tunnel", "certs", "--dir", dir)
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "usage: perimeter tunnel certs")

	srv := mcp.NewServer(&mcp.Implementation{Name: "certs-upstream", Version: "1"}, nil)
	mcp.AddTool(srv, &mcp.Tool{Name: "hello"}, func(ctx context.Context, req *mcp.CallToolRequest, in struct{}) (*mcp.CallToolResult, struct {
		Msg string `json:"msg"`
	}, error) {
		return nil, struct {
			Msg string `json:"msg"`
		}{"hi"}, nil
	})
	up := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil))
	t.Cleanup(func() { up.CloseClientConnections(); up.Close() })

	listen, httpAddr := freeAddr(t), freeAddr(t)
	edgeYAML := fmt.Sprintf(`
cert_file: %[1]s/edge.pem
key_file: %[1]s/edge-key.pem
client_ca_file: %[1]s/ca.pem
connectors:
  - id: c1
    cert_name: c1
clients:
  token_files: [%[1]s/client-agent.token]
`, dir)
	connYAML := fmt.Sprintf(`
id: c1
edges: [%[2]q]
ca_file: %[1]s/ca.pem
cert_file: %[1]s/connector-c1.pem
key_file: %[1]s/connector-c1-key.pem
allowed_networks: [127.0.0.0/8]
drain_timeout: 5s
routes:
  - name: demo
    url: %[3]s/
`, dir, listen, up.URL)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "edge.yaml"), []byte(edgeYAML), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "connector.yaml"), []byte(connYAML), 0o600))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var edgeErr, connErr syncBuf
	edgeDone, connDone := make(chan int, 1), make(chan int, 1)
	go func() {
		edgeDone <- dispatch(ctx, []string{"tunnel", "edge", "--listen", listen, "--http", httpAddr, "--config", filepath.Join(dir, "edge.yaml")}, nil, &bytes.Buffer{}, &edgeErr)
	}()
	go func() {
		connDone <- dispatch(ctx, []string{"tunnel", "connect", "--config", filepath.Join(dir, "connector.yaml")}, nil, &bytes.Buffer{}, &connErr)
	}()
	token, err := os.ReadFile(filepath.Join(dir, "client-agent.token"))
	require.NoError(t, err)
	hc := &http.Client{Transport: &authTransport{token: strings.TrimSpace(string(token)), base: http.DefaultTransport}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := hc.Get("http://" + httpAddr + "/healthz")
		if err == nil {
			var b bytes.Buffer
			b.ReadFrom(resp.Body)
			resp.Body.Close()
			if strings.Contains(b.String(), `"state":"healthy"`) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("edge never became healthy\nedge: %s\nconnector: %s", edgeErr.String(), connErr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
	defer ccancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "certs-test", Version: "1"}, nil).Connect(cctx,
		&mcp.StreamableClientTransport{Endpoint: "http://" + httpAddr + "/demo", HTTPClient: hc, MaxRetries: -1}, nil)
	require.NoError(t, err)
	res, err := cs.CallTool(cctx, &mcp.CallToolParams{Name: "hello"})
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"msg": "hi"}, res.StructuredContent)
	cs.Close()
	cancel()
	assert.Equal(t, 0, <-connDone, connErr.String())
	assert.Equal(t, 0, <-edgeDone, edgeErr.String())
	assert.NotContains(t, edgeErr.String()+connErr.String(), strings.TrimSpace(string(token)))
}
