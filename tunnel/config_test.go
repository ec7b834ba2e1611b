package tunnel

import (
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestExampleConfigsParse(t *testing.T) {
	c, err := LoadConnectorConfig("../examples/tunnel/connector.yaml")
	require.NoError(t, err)
	assert.Equal(t, "office-1", c.ID)
	assert.Len(t, c.Edges, 2)
	assert.Equal(t, 10*time.Minute, c.SessionIdleTimeout)
	assert.Equal(t, 64, c.MaxStdioSessions)
	assert.Equal(t, 16, c.MaxStdioSessionsPerClient)
	require.Len(t, c.Routes, 2)
	assert.Equal(t, []string{"delete_*", "admin_*"}, c.Routes[0].Policy.DenyTools)
	assert.Equal(t, []string{"/usr/local/bin/docs-mcp", "--read-only"}, c.Routes[1].Command)
	assert.Equal(t, []string{"search", "read_page"}, c.Routes[1].Policy.AllowTools)

	e, err := LoadEdgeConfig("../examples/tunnel/edge.yaml")
	require.NoError(t, err)
	assert.Equal(t, ":7443", e.Listen)
	assert.EqualValues(t, 4194304, e.Policy.MaxBodyBytes)
	assert.Equal(t, []string{"delete_*"}, e.Routes["tickets"].DenyTools)

	g, err := LoadGatewayConfig("../examples/tunnel/gateway.yaml")
	require.NoError(t, err)
	require.Len(t, g.Routes, 2)
	assert.Equal(t, []string{"admin_*"}, g.Policy.DenyTools)
	assert.Equal(t, []string{"/usr/local/bin/docs-mcp", "--read-only"}, g.Routes[1].Command)

	// The gateway of the Anthropic MCP tunnel deployment note.
	ag, err := LoadGatewayConfig("../examples/tunnel/anthropic/gateway.yaml")
	require.NoError(t, err)
	require.Len(t, ag.Routes, 2)
	assert.Equal(t, []string{"/etc/perimeter/client-token"}, ag.Clients.TokenFiles)
	assert.Contains(t, ag.Policy.AllowedHosts, "perimeter")
}

func TestConfigRefusesUnknownKeysAndBadValues(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "c.yaml")
		require.NoError(t, os.WriteFile(p, []byte(s), 0o600))
		return p
	}
	_, err := LoadConnectorConfig(write("id: a\nroutes:\n  - name: r\n    url: http://10.0.0.1/\n    policy: {deny_tool: [x]}\n"))
	require.ErrorContains(t, err, "deny_tool", "a typo in a policy must not silently disable it")

	_, err = LoadConnectorConfig(write("id: a\nsession_idle_timeout: soon\n"))
	require.Error(t, err)

	c, err := LoadConnectorConfig(write("id: a\nedges: [x:1]\ntoken_file: " + filepath.Join(dir, "none") + "\n"))
	require.NoError(t, err)
	_, err = c.Options(nil)
	require.ErrorContains(t, err, "none")

	c, err = LoadConnectorConfig(write("id: a\nallowed_networks: [10.0.0.0/33]\n"))
	require.NoError(t, err)
	_, err = c.Options(nil)
	require.ErrorContains(t, err, "allowed_networks")

	_, err = (&EdgeConfig{}).Options(nil)
	require.ErrorContains(t, err, "cert_file and key_file are required")
}

// TestUpstreamIdleConnectionsCloseBeforeServerKeepAlive: pooled upstream
// connections are dropped before the 5 s keep-alive timeout of Node and
// uvicorn servers, so a request is never written on a connection the
// server is closing at that moment (that failed as a 502 at 1,000
// sessions; written requests are not retried).
func TestUpstreamIdleConnectionsCloseBeforeServerKeepAlive(t *testing.T) {
	u, err := url.Parse("http://10.0.0.1/mcp")
	require.NoError(t, err)
	up := newHTTPUpstream("r", u, allowlist(DefaultAllowedNetworks), nil, slog.New(slog.DiscardHandler))
	assert.Greater(t, up.tr.IdleConnTimeout, time.Duration(0))
	assert.Less(t, up.tr.IdleConnTimeout, 5*time.Second)
}

// TestTokenFileMustBePrivate: a token file readable by group or others is
// refused with a message that says how to fix it.
func TestTokenFileMustBePrivate(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(tok, []byte("token-0123456789abcdef\n"), 0o600))
	require.NoError(t, os.Chmod(tok, 0o644))
	c := &ConnectorConfig{ID: "a", Edges: []string{"x:1"}, TokenFile: tok}
	_, err := c.Options(nil)
	require.ErrorContains(t, err, "mode 0644")
	require.ErrorContains(t, err, "chmod 600 "+tok)

	certFile, keyFile := writeTestServerPEM(t, dir)
	e := &EdgeConfig{CertFile: certFile, KeyFile: keyFile, TokenFiles: []string{tok}, Clients: ClientsConfig{Disabled: true}}
	_, err = e.Options(nil)
	require.ErrorContains(t, err, "mode 0644")
	e = &EdgeConfig{CertFile: certFile, KeyFile: keyFile, Clients: ClientsConfig{TokenFiles: []string{tok}}}
	_, err = e.Options(nil)
	require.ErrorContains(t, err, "mode 0644")

	require.NoError(t, os.Chmod(tok, 0o600))
	_, err = c.Options(nil)
	require.NoError(t, err)
	o, err := e.Options(nil)
	require.NoError(t, err)
	assert.Len(t, o.ClientAuth.Tokens, 1)
}

func TestNewConnectorAndEdgeRefuseBadOptions(t *testing.T) {
	base := func() *ConnectorOptions {
		return connectorOptions(t, "127.0.0.1:1", Route{Name: "r", URL: "http://127.0.0.1:9/mcp"})
	}
	for name, mod := range map[string]func(*ConnectorOptions){
		"bad id":              func(o *ConnectorOptions) { o.ID = "a.b" },
		"no edges":            func(o *ConnectorOptions) { o.Edges = nil },
		"no routes":           func(o *ConnectorOptions) { o.Routes = nil },
		"no credential":       func(o *ConnectorOptions) { o.Token = "" },
		"duplicate route":     func(o *ConnectorOptions) { o.Routes = append(o.Routes, o.Routes[0]) },
		"route named healthz": func(o *ConnectorOptions) { o.Routes[0].Name = "healthz" },
		"url and command":     func(o *ConnectorOptions) { o.Routes[0].Command = []string{"x"} },
		"neither":             func(o *ConnectorOptions) { o.Routes[0].URL = "" },
		"relative url":        func(o *ConnectorOptions) { o.Routes[0].URL = "/mcp" },
		"url with userinfo":   func(o *ConnectorOptions) { o.Routes[0].URL = "http://u:p@127.0.0.1/" },
		"bad pattern":         func(o *ConnectorOptions) { o.Routes[0].Policy.DenyTools = []string{"["} },
		"empty program":       func(o *ConnectorOptions) { o.Routes[0] = Route{Name: "s", Command: []string{""}} },
	} {
		t.Run(name, func(t *testing.T) {
			o := base()
			mod(o)
			_, err := NewConnector(o)
			require.Error(t, err)
		})
	}
	_, err := NewEdge(&EdgeOptions{Tokens: []string{testToken}})
	require.ErrorContains(t, err, "server certificate")
	eo := edgeOptions(t)
	eo.Tokens = nil
	_, err = NewEdge(eo)
	require.ErrorContains(t, err, "no connector authentication")
}

func TestEdgeConfigConnectorGrants(t *testing.T) {
	dir := t.TempDir()
	writeFile := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	certPEM, keyPEM := writeTestServerPEM(t, dir)
	tokA := writeFile("a.token", "token-a-0123456789abcdef\n")
	tokB := writeFile("b.token", "token-b-0123456789abcdef\n")
	cfgPath := writeFile("edge.yaml", `
cert_file: `+certPEM+`
key_file: `+keyPEM+`
connectors:
  - id: office-a
    token_file: `+tokA+`
    routes: [tickets]
  - token_file: `+tokB+`
`)
	cfg, err := LoadEdgeConfig(cfgPath)
	require.NoError(t, err)
	opts, err := cfg.Options(nil)
	require.NoError(t, err)
	require.Equal(t, []string{"token-a-0123456789abcdef", "token-b-0123456789abcdef"}, opts.Tokens)
	require.NotNil(t, opts.Authorize)
	ok := func(id string, tok int, routes ...string) error {
		return opts.Authorize(ConnectorIdentity{ID: id, TokenIndex: tok, Routes: routes})
	}
	assert.NoError(t, ok("office-a", 0, "tickets"))
	assert.Error(t, ok("office-a", 0, "tickets", "docs"), "route outside the grant")
	assert.Error(t, ok("office-x", 0, "tickets"), "id other than the grant's")
	assert.NoError(t, ok("anything", 1, "docs", "tickets"), "grant b has no id or route limits")

	bad := writeFile("bad.yaml", "cert_file: "+certPEM+"\nkey_file: "+keyPEM+"\ntoken_files: ["+tokA+"]\nconnectors: [{token_file: "+tokB+"}]\n")
	cfg, err = LoadEdgeConfig(bad)
	require.NoError(t, err)
	_, err = cfg.Options(nil)
	require.ErrorContains(t, err, "not both")

	bad = writeFile("bad2.yaml", "cert_file: "+certPEM+"\nkey_file: "+keyPEM+"\nconnectors: [{cert_name: office}]\n")
	cfg, err = LoadEdgeConfig(bad)
	require.NoError(t, err)
	_, err = cfg.Options(nil)
	require.ErrorContains(t, err, "cert_name needs client_ca_file")
}

// writeTestServerPEM writes the test server certificate and key as PEM.
func writeTestServerPEM(t *testing.T, dir string) (certFile, keyFile string) {
	c := getCerts().server
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	require.NoError(t, err)
	certFile, keyFile = filepath.Join(dir, "edge.pem"), filepath.Join(dir, "edge-key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600))
	return certFile, keyFile
}
