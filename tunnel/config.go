package tunnel

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// ConnectorConfig is the YAML configuration of a connector (see
// examples/tunnel/connector.yaml). Secrets are never written in it: the token
// comes from a file or an environment variable.
type ConnectorConfig struct {
	ID                 string        `yaml:"id"`
	Edges              []string      `yaml:"edges"`
	TokenFile          string        `yaml:"token_file"`
	TokenEnv           string        `yaml:"token_env"`
	CAFile             string        `yaml:"ca_file"`
	ServerName         string        `yaml:"server_name"`
	CertFile           string        `yaml:"cert_file"`
	KeyFile            string        `yaml:"key_file"`
	Connections        int           `yaml:"connections"`
	AllowedNetworks    []string      `yaml:"allowed_networks"`
	UpstreamCAFile     string        `yaml:"upstream_ca_file"`
	SessionIdleTimeout time.Duration `yaml:"session_idle_timeout"`
	// MaxStdioSessions and MaxStdioSessionsPerClient cap stdio children
	// (defaults 64 and 16).
	MaxStdioSessions          int           `yaml:"max_stdio_sessions"`
	MaxStdioSessionsPerClient int           `yaml:"max_stdio_sessions_per_client"`
	DrainTimeout              time.Duration `yaml:"drain_timeout"`
	PingInterval              time.Duration `yaml:"ping_interval"`
	PingTimeout               time.Duration `yaml:"ping_timeout"`
	Routes                    []Route       `yaml:"routes"`
}

// EdgeConfig is the YAML configuration of a standalone edge (see
// examples/tunnel/edge.yaml).
type EdgeConfig struct {
	// Listen is where connectors dial; the --listen flag overrides it.
	Listen string `yaml:"listen"`
	// HTTPListen is where the MCP endpoints are served (plain HTTP: put it
	// on loopback or behind the host's TLS); the --http flag overrides it.
	HTTPListen   string   `yaml:"http_listen"`
	CertFile     string   `yaml:"cert_file"`
	KeyFile      string   `yaml:"key_file"`
	ClientCAFile string   `yaml:"client_ca_file"`
	TokenFiles   []string `yaml:"token_files"`
	TokenEnv     string   `yaml:"token_env"`
	// HTTPCertFile and HTTPKeyFile, if set, make the MCP endpoints HTTPS
	// (needed for client certificates).
	HTTPCertFile string `yaml:"http_cert_file"`
	HTTPKeyFile  string `yaml:"http_key_file"`
	// WebSocketPath, if set, also accepts connectors over the WebSocket
	// carrier at this path of the MCP listener (connectors then dial
	// wss://host/path; put TLS in front, or set http_cert_file).
	WebSocketPath string        `yaml:"websocket_path"`
	PingInterval  time.Duration `yaml:"ping_interval"`
	PingTimeout   time.Duration `yaml:"ping_timeout"`
	// Clients is how MCP clients authenticate to the edge. Required.
	Clients ClientsConfig `yaml:"clients"`
	// MaxSessions and MaxSessionsPerClient cap MCP sessions (defaults 1024
	// and 64).
	MaxSessions          int `yaml:"max_sessions"`
	MaxSessionsPerClient int `yaml:"max_sessions_per_client"`
	// ExpectConnectors lists connector IDs /healthz reports as missing
	// (degraded) while they have no connection; the IDs of Connectors
	// entries are expected too.
	ExpectConnectors []string `yaml:"expect_connectors"`
	// Policy applies to every route; Routes adds per-route rules to it
	// (see Policy.Merge).
	Policy Policy            `yaml:"policy"`
	Routes map[string]Policy `yaml:"routes"`
	// Connectors, if set, admits only connectors that match an entry; then
	// token_files and token_env must be empty.
	Connectors []ConnectorGrant `yaml:"connectors"`
}

// ClientsConfig is the YAML form of [ClientAuth].
type ClientsConfig struct {
	// TokenFiles hold one bearer token each (mode 0600 or stricter).
	TokenFiles []string `yaml:"token_files"`
	// TokenHeader is the header carrying the token; default Authorization
	// (Bearer scheme).
	TokenHeader string `yaml:"token_header"`
	// CAFile verifies client certificates (needs http_cert_file).
	CAFile string `yaml:"ca_file"`
	// Disabled serves clients without authentication (logged as a warning).
	Disabled bool `yaml:"disabled"`
}

// ConnectorGrant admits connectors that present its credential: the token
// in TokenFile, or a client certificate whose common name or a DNS name is
// CertName. If ID is set the connector must declare it; if Routes is set
// the connector may serve only those.
type ConnectorGrant struct {
	ID        string   `yaml:"id"`
	TokenFile string   `yaml:"token_file"`
	CertName  string   `yaml:"cert_name"`
	Routes    []string `yaml:"routes"`
}

// decodeYAML decodes data into v, refusing unknown keys (a typo in a policy
// must not silently disable it).
func decodeYAML(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		return err
	}
	return nil
}

// LoadConnectorConfig reads a connector's YAML configuration file.
func LoadConnectorConfig(path string) (*ConnectorConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tunnel: connector config: %w", err)
	}
	var c ConnectorConfig
	if err := decodeYAML(data, &c); err != nil {
		return nil, fmt.Errorf("tunnel: connector config %s: %w", path, err)
	}
	return &c, nil
}

// LoadEdgeConfig reads an edge's YAML configuration file.
func LoadEdgeConfig(path string) (*EdgeConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tunnel: edge config: %w", err)
	}
	var c EdgeConfig
	if err := decodeYAML(data, &c); err != nil {
		return nil, fmt.Errorf("tunnel: edge config %s: %w", path, err)
	}
	return &c, nil
}

func readSecret(file, env, what string) (string, error) {
	switch {
	case file != "" && env != "":
		return "", fmt.Errorf("%s: set %s_file or %s_env, not both", what, what, what)
	case file != "":
		st, err := os.Stat(file)
		if err != nil {
			return "", fmt.Errorf("%s: %w", what, err)
		}
		if st.Mode().Perm()&0o077 != 0 {
			return "", fmt.Errorf("%s: %s has mode %04o: a secret file must not be readable by group or others (chmod 600 %s)", what, file, st.Mode().Perm(), file)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%s: %w", what, err)
		}
		return strings.TrimSpace(string(b)), nil
	case env != "":
		v, ok := os.LookupEnv(env)
		if !ok || v == "" {
			return "", fmt.Errorf("%s: environment variable %s is not set", what, env)
		}
		return strings.TrimSpace(v), nil
	}
	return "", nil
}

func certPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate found", file)
	}
	return p, nil
}

// Options turns the configuration into ConnectorOptions, reading the token,
// CA and certificate files it names.
func (c *ConnectorConfig) Options(logger *slog.Logger) (*ConnectorOptions, error) {
	token, err := readSecret(c.TokenFile, c.TokenEnv, "token")
	if err != nil {
		return nil, fmt.Errorf("tunnel: connector config: %w", err)
	}
	tc := &tls.Config{ServerName: c.ServerName}
	if c.CAFile != "" {
		if tc.RootCAs, err = certPool(c.CAFile); err != nil {
			return nil, fmt.Errorf("tunnel: connector config: ca_file: %w", err)
		}
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, errors.New("tunnel: connector config: cert_file and key_file go together")
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tunnel: connector config: client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	var nets []netip.Prefix
	for _, s := range c.AllowedNetworks {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("tunnel: connector config: allowed_networks: %w", err)
		}
		nets = append(nets, p)
	}
	var upTLS *tls.Config
	if c.UpstreamCAFile != "" {
		pool, err := certPool(c.UpstreamCAFile)
		if err != nil {
			return nil, fmt.Errorf("tunnel: connector config: upstream_ca_file: %w", err)
		}
		upTLS = &tls.Config{RootCAs: pool}
	}
	return &ConnectorOptions{
		ID: c.ID, Edges: c.Edges, Token: token, TLSConfig: tc, Connections: c.Connections,
		Routes: c.Routes, AllowedNetworks: nets, UpstreamTLSConfig: upTLS,
		SessionIdleTimeout: c.SessionIdleTimeout, DrainTimeout: c.DrainTimeout,
		MaxStdioSessions: c.MaxStdioSessions, MaxStdioSessionsPerClient: c.MaxStdioSessionsPerClient,
		PingInterval: c.PingInterval, PingTimeout: c.PingTimeout,
		Logger: logger,
	}, nil
}

// Options turns the configuration into EdgeOptions, reading the certificate
// and token files it names.
func (c *EdgeConfig) Options(logger *slog.Logger) (*EdgeOptions, error) {
	if c.CertFile == "" || c.KeyFile == "" {
		return nil, errors.New("tunnel: edge config: cert_file and key_file are required")
	}
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tunnel: edge config: certificate: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}}
	if c.ClientCAFile != "" {
		if tc.ClientCAs, err = certPool(c.ClientCAFile); err != nil {
			return nil, fmt.Errorf("tunnel: edge config: client_ca_file: %w", err)
		}
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	var tokens []string
	for _, f := range c.TokenFiles {
		t, err := readSecret(f, "", "token")
		if err != nil {
			return nil, fmt.Errorf("tunnel: edge config: %w", err)
		}
		tokens = append(tokens, t)
	}
	if c.TokenEnv != "" {
		t, err := readSecret("", c.TokenEnv, "token")
		if err != nil {
			return nil, fmt.Errorf("tunnel: edge config: %w", err)
		}
		for _, s := range strings.Split(t, ",") {
			if s = strings.TrimSpace(s); s != "" {
				tokens = append(tokens, s)
			}
		}
	}
	ca := ClientAuth{Header: c.Clients.TokenHeader, Disabled: c.Clients.Disabled}
	for _, f := range c.Clients.TokenFiles {
		t, err := readSecret(f, "", "clients token")
		if err != nil {
			return nil, fmt.Errorf("tunnel: edge config: %w", err)
		}
		ca.Tokens = append(ca.Tokens, t)
	}
	if c.Clients.CAFile != "" {
		if c.HTTPCertFile == "" {
			return nil, errors.New("tunnel: edge config: clients.ca_file needs http_cert_file and http_key_file (client certificates need TLS)")
		}
		if ca.ClientCAs, err = certPool(c.Clients.CAFile); err != nil {
			return nil, fmt.Errorf("tunnel: edge config: clients.ca_file: %w", err)
		}
	}
	if (c.HTTPCertFile == "") != (c.HTTPKeyFile == "") {
		return nil, errors.New("tunnel: edge config: http_cert_file and http_key_file go together")
	}
	opts := &EdgeOptions{
		TLSConfig: tc, Tokens: tokens, Policy: c.Policy, Routes: c.Routes,
		PingInterval: c.PingInterval, PingTimeout: c.PingTimeout, Logger: logger,
		ClientAuth: ca, MaxSessions: c.MaxSessions, MaxSessionsPerClient: c.MaxSessionsPerClient,
		Connectors: slices.Clone(c.ExpectConnectors),
	}
	for _, g := range c.Connectors {
		if g.ID != "" && !slices.Contains(opts.Connectors, g.ID) {
			opts.Connectors = append(opts.Connectors, g.ID)
		}
	}
	if len(c.Connectors) > 0 {
		if len(tokens) > 0 {
			return nil, errors.New("tunnel: edge config: use connectors or token_files/token_env, not both")
		}
		tokenOf := make([]int, len(c.Connectors)) // grant → index in opts.Tokens, or -1
		for i, g := range c.Connectors {
			tokenOf[i] = -1
			switch {
			case (g.TokenFile == "") == (g.CertName == ""):
				return nil, fmt.Errorf("tunnel: edge config: connectors[%d]: set exactly one of token_file and cert_name", i)
			case g.TokenFile != "":
				t, err := readSecret(g.TokenFile, "", "token")
				if err != nil {
					return nil, fmt.Errorf("tunnel: edge config: connectors[%d]: %w", i, err)
				}
				tokenOf[i] = len(opts.Tokens)
				opts.Tokens = append(opts.Tokens, t)
			case tc.ClientAuth != tls.RequireAndVerifyClientCert:
				return nil, fmt.Errorf("tunnel: edge config: connectors[%d]: cert_name needs client_ca_file", i)
			}
		}
		grants := c.Connectors
		opts.Authorize = func(id ConnectorIdentity) error {
			for i, g := range grants {
				byToken := tokenOf[i] >= 0 && id.TokenIndex == tokenOf[i]
				byCert := g.CertName != "" && id.Certificate != nil &&
					(id.Certificate.Subject.CommonName == g.CertName || slices.Contains(id.Certificate.DNSNames, g.CertName))
				if !byToken && !byCert {
					continue
				}
				if g.ID != "" && g.ID != id.ID {
					continue
				}
				if len(g.Routes) > 0 && slices.ContainsFunc(id.Routes, func(r string) bool { return !slices.Contains(g.Routes, r) }) {
					continue
				}
				return nil
			}
			return fmt.Errorf("no connectors entry admits connector %q with routes %v", id.ID, id.Routes)
		}
	}
	return opts, nil
}

// GatewayConfig is the YAML configuration of perimeter tunnel serve (see
// examples/tunnel/gateway.yaml): a connector's routes served on a local
// listener, without a carrier.
type GatewayConfig struct {
	// ID prefixes stdio session IDs; default "gateway".
	ID string `yaml:"id"`
	// Listen is where MCP clients (or the proxy in front) call; the
	// --listen flag overrides it. Default 127.0.0.1:8080.
	Listen string `yaml:"listen"`
	// CertFile and KeyFile, if set, serve HTTPS.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// Clients is how MCP clients authenticate. Required.
	Clients                   ClientsConfig `yaml:"clients"`
	AllowedNetworks           []string      `yaml:"allowed_networks"`
	UpstreamCAFile            string        `yaml:"upstream_ca_file"`
	SessionIdleTimeout        time.Duration `yaml:"session_idle_timeout"`
	MaxSessions               int           `yaml:"max_sessions"`
	MaxSessionsPerClient      int           `yaml:"max_sessions_per_client"`
	MaxStdioSessions          int           `yaml:"max_stdio_sessions"`
	MaxStdioSessionsPerClient int           `yaml:"max_stdio_sessions_per_client"`
	// Policy applies to every route, under each route's own policy.
	Policy Policy  `yaml:"policy"`
	Routes []Route `yaml:"routes"`
}

// LoadGatewayConfig reads a gateway's YAML configuration file.
func LoadGatewayConfig(path string) (*GatewayConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tunnel: gateway config: %w", err)
	}
	var c GatewayConfig
	if err := decodeYAML(data, &c); err != nil {
		return nil, fmt.Errorf("tunnel: gateway config %s: %w", path, err)
	}
	return &c, nil
}

// Options turns the configuration into GatewayOptions, reading the files it
// names.
func (c *GatewayConfig) Options(logger *slog.Logger) (*GatewayOptions, error) {
	ca := ClientAuth{Header: c.Clients.TokenHeader, Disabled: c.Clients.Disabled}
	for _, f := range c.Clients.TokenFiles {
		t, err := readSecret(f, "", "clients token")
		if err != nil {
			return nil, fmt.Errorf("tunnel: gateway config: %w", err)
		}
		ca.Tokens = append(ca.Tokens, t)
	}
	var err error
	if c.Clients.CAFile != "" {
		if c.CertFile == "" {
			return nil, errors.New("tunnel: gateway config: clients.ca_file needs cert_file and key_file (client certificates need TLS)")
		}
		if ca.ClientCAs, err = certPool(c.Clients.CAFile); err != nil {
			return nil, fmt.Errorf("tunnel: gateway config: clients.ca_file: %w", err)
		}
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, errors.New("tunnel: gateway config: cert_file and key_file go together")
	}
	var nets []netip.Prefix
	for _, s := range c.AllowedNetworks {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("tunnel: gateway config: allowed_networks: %w", err)
		}
		nets = append(nets, p)
	}
	var upTLS *tls.Config
	if c.UpstreamCAFile != "" {
		pool, err := certPool(c.UpstreamCAFile)
		if err != nil {
			return nil, fmt.Errorf("tunnel: gateway config: upstream_ca_file: %w", err)
		}
		upTLS = &tls.Config{RootCAs: pool}
	}
	return &GatewayOptions{
		ID: c.ID, Routes: c.Routes, AllowedNetworks: nets, UpstreamTLSConfig: upTLS,
		ClientAuth: ca, Policy: c.Policy,
		MaxSessions: c.MaxSessions, MaxSessionsPerClient: c.MaxSessionsPerClient,
		MaxStdioSessions: c.MaxStdioSessions, MaxStdioSessionsPerClient: c.MaxStdioSessionsPerClient,
		SessionIdleTimeout: c.SessionIdleTimeout, Logger: logger,
	}, nil
}
