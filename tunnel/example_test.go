package tunnel_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/perimeter-sdk/perimeter/tunnel"
)

// Example runs both ends of the tunnel in one process: a private MCP server
// on loopback, a connector that dials the edge, and the host's agent calling
// a tool through the edge's in-process client.
func Example() {
	// A private MCP server (in real life: inside the private network).
	server := mcp.NewServer(&mcp.Implementation{Name: "tickets", Version: "1"}, nil)
	type in struct {
		Text string `json:"text"`
	}
	mcp.AddTool(server, &mcp.Tool{Name: "echo"}, func(ctx context.Context, req *mcp.CallToolRequest, args in) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "echo: " + args.Text}}}, nil, nil
	})
	private := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil))
	defer private.Close()

	serverCert, roots := exampleCert()
	const token = "example-token-0123456789"
	quiet := slog.New(slog.DiscardHandler)

	// The edge, in the host application.
	edge, err := tunnel.NewEdge(&tunnel.EdgeOptions{
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{serverCert}},
		Tokens:    []string{token},
		// MCP clients that call edge.Handler() over the network present
		// this bearer token; the in-process client below needs none.
		ClientAuth: tunnel.ClientAuth{Tokens: []string{"client-token-0123456789"}},
		Logger:     quiet,
	})
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go edge.Serve(ln)
	defer edge.Close()

	// The connector, in the private network: outbound connections only.
	conn, err := tunnel.NewConnector(&tunnel.ConnectorOptions{
		ID:              "office",
		Edges:           []string{ln.Addr().String()},
		Token:           token,
		TLSConfig:       &tls.Config{RootCAs: roots},
		Routes:          []tunnel.Route{{Name: "tickets", URL: private.URL}},
		AllowedNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		Logger:          quiet,
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- conn.Run(ctx) }()
	defer func() { stop(); <-done }()
	for edge.Status().State != "healthy" {
		time.Sleep(10 * time.Millisecond)
	}

	// The host's agent calls the private server through the edge.
	client := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, nil)
	cs, err := client.Connect(context.Background(), edge.ClientTransport("tickets"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer cs.Close()
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hello"}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Content[0].(*mcp.TextContent).Text)
	// Output: echo: hello
}

// exampleCert makes a self-signed certificate for 127.0.0.1 and a pool that
// trusts it. Use your own PKI in production.
func exampleCert() (tls.Certificate, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "edge"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		log.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}
