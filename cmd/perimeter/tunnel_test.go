package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// writeTestPKI writes a CA and a server certificate for 127.0.0.1 as PEM
// files in dir.
func writeTestPKI(t *testing.T, dir string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "edge"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	write := func(name, typ string, b []byte) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600))
	}
	write("ca.pem", "CERTIFICATE", caDER)
	write("edge.pem", "CERTIFICATE", der)
	write("edge-key.pem", "EC PRIVATE KEY", keyDER)
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// syncBuf is a goroutine-safe buffer for a command's stderr.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestTunnelEdgeAndConnectFromYAML(t *testing.T) {
	for _, carrier := range []string{"tls", "websocket"} {
		t.Run(carrier, func(t *testing.T) { testTunnelFromYAML(t, carrier) })
	}
}

func testTunnelFromYAML(t *testing.T, carrier string) {
	dir := t.TempDir()
	writeTestPKI(t, dir)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "token"), []byte("cli-test-token-0123456789\n"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "client-token"), []byte("cli-client-token-0123456789\n"), 0o600))

	srv := mcp.NewServer(&mcp.Implementation{Name: "cli-upstream", Version: "1"}, nil)
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
token_files: [%[1]s/token]
clients:
  token_files: [%[1]s/client-token]
policy:
  deny_tools: ["drop_*"]
`, dir)
	edgeArgs := []string{"tunnel", "edge", "--listen", listen, "--http", httpAddr, "--config", filepath.Join(dir, "edge.yaml")}
	edgeAddr := listen
	scheme := "http"
	auth := &authTransport{token: "cli-client-token-0123456789", base: http.DefaultTransport}
	hc := &http.Client{Transport: auth}
	if carrier == "websocket" {
		// No TLS carrier listener: connectors come over WebSocket on the
		// HTTPS MCP listener.
		edgeYAML += fmt.Sprintf("http_cert_file: %[1]s/edge.pem\nhttp_key_file: %[1]s/edge-key.pem\nwebsocket_path: /tunnel\n", dir)
		edgeArgs = []string{"tunnel", "edge", "--http", httpAddr, "--config", filepath.Join(dir, "edge.yaml")}
		edgeAddr = "wss://" + httpAddr + "/tunnel"
		scheme = "https"
		pool := x509.NewCertPool()
		caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
		require.NoError(t, err)
		pool.AppendCertsFromPEM(caPEM)
		auth.base = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	}
	connYAML := fmt.Sprintf(`
id: cli-test
edges: [%[2]q]
token_file: %[1]s/token
ca_file: %[1]s/ca.pem
connections: 2
allowed_networks: [127.0.0.0/8]
drain_timeout: 5s
routes:
  - name: demo
    url: %[3]s/
`, dir, edgeAddr, up.URL)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "edge.yaml"), []byte(edgeYAML), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "connector.yaml"), []byte(connYAML), 0o600))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var edgeErr, connErr syncBuf
	edgeDone, connDone := make(chan int, 1), make(chan int, 1)
	go func() {
		edgeDone <- dispatch(ctx, edgeArgs, nil, &bytes.Buffer{}, &edgeErr)
	}()
	go func() {
		connDone <- dispatch(ctx, []string{"tunnel", "connect", "--config", filepath.Join(dir, "connector.yaml")}, nil, &bytes.Buffer{}, &connErr)
	}()

	// Wait for both connections at the edge.
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := hc.Get(scheme + "://" + httpAddr + "/healthz")
		if err == nil {
			var b bytes.Buffer
			b.ReadFrom(resp.Body)
			resp.Body.Close()
			if strings.Contains(b.String(), `"state":"healthy"`) && strings.Contains(b.String(), `"connections":2`) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("edge never became healthy\nedge: %s\nconnector: %s", edgeErr.String(), connErr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	client := mcp.NewClient(&mcp.Implementation{Name: "cli-test", Version: "1"}, nil)
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()
	// Without the client token the edge refuses.
	resp, err := http.Post(scheme+"://"+httpAddr+"/demo", "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	if err == nil {
		resp.Body.Close()
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	} else {
		require.Equal(t, "websocket", carrier, "only the HTTPS listener may refuse an untrusting client at TLS: %v", err)
	}
	cs, err := client.Connect(cctx, &mcp.StreamableClientTransport{Endpoint: scheme + "://" + httpAddr + "/demo", HTTPClient: hc, MaxRetries: -1}, nil)
	require.NoError(t, err)
	res, err := cs.CallTool(cctx, &mcp.CallToolParams{Name: "hello"})
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"msg": "hi"}, res.StructuredContent)
	_, err = cs.CallTool(cctx, &mcp.CallToolParams{Name: "drop_tables"})
	require.ErrorContains(t, err, `tool "drop_tables" is denied`)
	cs.Close()

	cancel()
	assert.Equal(t, 0, <-connDone, connErr.String())
	assert.Equal(t, 0, <-edgeDone, edgeErr.String())
	assert.NotContains(t, edgeErr.String()+connErr.String(), "cli-test-token", "the token must never be logged")
	assert.NotContains(t, edgeErr.String()+connErr.String(), "cli-client-token", "the client token must never be logged")
	assert.Contains(t, edgeErr.String(), `"msg":"mcp call"`)
}

// TestTunnelServeFromYAML runs the gateway from YAML: an HTTP route with a
// tool policy, behind a client token.
func TestTunnelServeFromYAML(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "client-token"), []byte("cli-client-token-0123456789\n"), 0o600))
	srv := mcp.NewServer(&mcp.Implementation{Name: "cli-upstream", Version: "1"}, nil)
	mcp.AddTool(srv, &mcp.Tool{Name: "hello"}, func(ctx context.Context, req *mcp.CallToolRequest, in struct{}) (*mcp.CallToolResult, struct {
		Msg string `json:"msg"`
	}, error) {
		return nil, struct {
			Msg string `json:"msg"`
		}{"hi"}, nil
	})
	up := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil))
	t.Cleanup(func() { up.CloseClientConnections(); up.Close() })
	addr := freeAddr(t)
	cfg := fmt.Sprintf(`
clients:
  token_files: [%[1]s/client-token]
allowed_networks: [127.0.0.0/8]
policy:
  deny_tools: ["drop_*"]
routes:
  - name: demo
    url: %[2]s/
`, dir, up.URL)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "gateway.yaml"), []byte(cfg), 0o600))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var errOut syncBuf
	done := make(chan int, 1)
	go func() {
		done <- dispatch(ctx, []string{"tunnel", "serve", "--listen", addr, "--config", filepath.Join(dir, "gateway.yaml")}, nil, &bytes.Buffer{}, &errOut)
	}()
	hc := &http.Client{Transport: &authTransport{token: "cli-client-token-0123456789", base: http.DefaultTransport}}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := hc.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway never answered: %s", errOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, err := http.Post("http://"+addr+"/demo", "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)

	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "cli-test", Version: "1"}, nil).Connect(cctx,
		&mcp.StreamableClientTransport{Endpoint: "http://" + addr + "/demo", HTTPClient: hc, MaxRetries: -1}, nil)
	require.NoError(t, err)
	res, err := cs.CallTool(cctx, &mcp.CallToolParams{Name: "hello"})
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"msg": "hi"}, res.StructuredContent)
	_, err = cs.CallTool(cctx, &mcp.CallToolParams{Name: "drop_tables"})
	require.ErrorContains(t, err, `tool "drop_tables" is denied`)
	cs.Close()
	cancel()
	assert.Equal(t, 0, <-done, errOut.String())
	assert.Contains(t, errOut.String(), `"side":"gateway"`)
	assert.NotContains(t, errOut.String(), "cli-client-token")
}

// authTransport adds the edge's client token to every request.
type authTransport struct {
	token string
	base  http.RoundTripper
}

func (a *authTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+a.token)
	return a.base.RoundTrip(r)
}

func TestTunnelConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("id: x\nedgez: [a]\n"), 0o600))

	code, _, errOut := cli(t, "", "tunnel", "connect", "--config", bad)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "edgez")

	code, _, errOut = cli(t, "", "tunnel", "connect")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "usage: perimeter tunnel connect")

	code, _, errOut = cli(t, "", "tunnel", "edge", "--config", filepath.Join(dir, "missing.yaml"))
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "missing.yaml")

	code, _, errOut = cli(t, "", "tunnel", "bogus")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, `unknown subcommand "bogus"`)

	good := filepath.Join(dir, "c.yaml")
	require.NoError(t, os.WriteFile(good, []byte("id: c\nedges: [\"127.0.0.1:1\"]\ntoken_env: PERIMETER_TEST_UNSET_TOKEN\nroutes: [{name: r, url: \"http://10.0.0.1/mcp\"}]\n"), 0o600))
	code, _, errOut = cli(t, "", "tunnel", "connect", "--config", good)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "PERIMETER_TEST_UNSET_TOKEN is not set")
}
