package tunnel

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/require"
)

const testToken = "test-token-0123456789abcdef"

// stdioServerEnv makes the test binary act as a stdio MCP server (the stdio
// routes re-execute it).
const stdioServerEnv = "PERIMETER_TUNNEL_TEST_STDIO_SERVER"

func TestMain(m *testing.M) {
	if role := os.Getenv(benchRoleEnv); role != "" {
		os.Exit(runBenchRole(role))
	}
	if os.Getenv(stdioServerEnv) == "1" {
		s := newTestServer(nil)
		if err := s.Run(context.Background(), &mcp.StdioTransport{}); err != nil && !errors.Is(err, io.EOF) {
			fmt.Fprintln(os.Stderr, "stdio test server:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := m.Run()
	if code == 0 {
		if leaked := leakedGoroutines(10 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines left behind by the tests:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// leakedGoroutines waits up to d for every goroutine running tunnel, HTTP/2,
// MCP SDK or child-process code to end, and returns the stacks of those
// that did not.
func leakedGoroutines(d time.Duration) string {
	deadline := time.Now().Add(d)
	for {
		buf := make([]byte, 1<<22)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "leakedGoroutines") || strings.Contains(g, "testing.tRunner") {
				continue
			}
			for _, mark := range []string{"perimeter/tunnel.", "x/net/http2", "net/http.(*http2", "net/http.(*conn)", "go-sdk/mcp", "os/exec", "coder/websocket"} {
				if strings.Contains(g, mark) {
					leaked = append(leaked, g)
					break
				}
			}
		}
		if len(leaked) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// testHooks lets a test talk to tools running in the HTTP test server.
type testHooks struct {
	// progressed is signalled by the test when it saw a progress
	// notification; the "stream" tool waits for it before the next one.
	progressed chan struct{}
	// release unblocks the "block" tool.
	release chan struct{}
	// started receives a value when "block" starts.
	started chan struct{}
}

type echoIn struct {
	Text string `json:"text"`
}
type echoOut struct {
	Text string `json:"text"`
}
type streamIn struct {
	N int `json:"n"`
}
type blobIn struct {
	Bytes int `json:"bytes"`
}

// newTestServer returns an MCP server with tools echo, stream, block, blob.
// hooks may be nil (the stdio child), in which case stream and block do not
// wait for the test.
func newTestServer(h *testHooks) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "tunnel-test", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "echo", Description: "echo text"},
		func(ctx context.Context, req *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, echoOut, error) {
			return nil, echoOut(in), nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "stream", Description: "send n progress notifications, then return"},
		func(ctx context.Context, req *mcp.CallToolRequest, in streamIn) (*mcp.CallToolResult, echoOut, error) {
			for i := range in.N {
				err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{
					ProgressToken: req.Params.GetProgressToken(), Progress: float64(i + 1), Total: float64(in.N), Message: fmt.Sprint("step ", i+1),
				})
				if err != nil {
					return nil, echoOut{}, err
				}
				if h != nil {
					// Wait until the client has seen this notification: if
					// anything buffered the stream, the call would hang here.
					select {
					case <-h.progressed:
					case <-ctx.Done():
						return nil, echoOut{}, ctx.Err()
					}
				}
			}
			return nil, echoOut{Text: "done"}, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "block", Description: "block until released"},
		func(ctx context.Context, req *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, echoOut, error) {
			if h == nil {
				return nil, echoOut(in), nil
			}
			select {
			case h.started <- struct{}{}:
			default:
			}
			select {
			case <-h.release:
				return nil, echoOut{Text: "released"}, nil
			case <-ctx.Done():
				return nil, echoOut{}, ctx.Err()
			}
		})
	if h == nil && os.Getenv("PERIMETER_TUNNEL_TEST_CRASH") == "1" {
		// Only in a stdio child that asks for it: a server that dies
		// mid-call.
		mcp.AddTool(s, &mcp.Tool{Name: "crash", Description: "exit the process without answering"},
			func(ctx context.Context, req *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, echoOut, error) {
				os.Exit(3)
				return nil, echoOut{}, nil
			})
	}
	mcp.AddTool(s, &mcp.Tool{Name: "blob", Description: "return a text of n bytes"},
		func(ctx context.Context, req *mcp.CallToolRequest, in blobIn) (*mcp.CallToolResult, echoOut, error) {
			return nil, echoOut{Text: string(bytes.Repeat([]byte("x"), in.Bytes))}, nil
		})
	return s
}

// testCerts is a CA with a server certificate for 127.0.0.1 and a client
// certificate, and an unrelated CA's client certificate.
type testCerts struct {
	ca          *x509.Certificate
	pool        *x509.CertPool
	server      tls.Certificate
	client      tls.Certificate
	rogueClient tls.Certificate
}

var (
	certsOnce sync.Once
	certs     *testCerts
)

func newCA(name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

func leaf(ca *x509.Certificate, caKey *ecdsa.PrivateKey, name string, usage x509.ExtKeyUsage, serial int64) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		panic(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func getCerts() *testCerts {
	certsOnce.Do(func() {
		ca, caKey := newCA("test CA")
		rogue, rogueKey := newCA("rogue CA")
		pool := x509.NewCertPool()
		pool.AddCert(ca)
		certs = &testCerts{
			ca:          ca,
			pool:        pool,
			server:      leaf(ca, caKey, "edge", x509.ExtKeyUsageServerAuth, 2),
			client:      leaf(ca, caKey, "connector", x509.ExtKeyUsageClientAuth, 3),
			rogueClient: leaf(rogue, rogueKey, "connector", x509.ExtKeyUsageClientAuth, 4),
		}
	})
	return certs
}

// quietLogger discards records below Error unless -v is given.
func quietLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

type testEdge struct {
	*Edge
	addr string // where connectors dial
	url  string // where MCP clients call (the edge's Handler over HTTP)
	srv  *httptest.Server
}

func edgeOptions(t testing.TB) *EdgeOptions {
	return &EdgeOptions{
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{getCerts().server}},
		Tokens:    []string{testToken},
		// Tests of client authentication set their own.
		ClientAuth: ClientAuth{Disabled: true},
		// Every test client comes from 127.0.0.1, one "client" to the caps.
		MaxSessionsPerClient: 2000,
		MaxSessions:          4000,
		Logger:               quietLogger(t),
	}
}

// startEdge starts an edge on a loopback listener (addr "" picks a port) and
// an HTTP server for its Handler; both stop in t.Cleanup.
func startEdge(t testing.TB, opts *EdgeOptions, addr string) *testEdge {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	e, err := NewEdge(opts)
	require.NoError(t, err)
	var ln net.Listener
	for i := 0; ; i++ { // a restarted edge may briefly find its port busy
		ln, err = net.Listen("tcp", addr)
		if err == nil || i > 50 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- e.Serve(ln) }()
	srv := httptest.NewServer(e.Handler())
	te := &testEdge{Edge: e, addr: ln.Addr().String(), url: srv.URL, srv: srv}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			srv.CloseClientConnections()
			srv.Close()
			require.NoError(t, e.Close())
			require.ErrorIs(t, <-served, ErrEdgeClosed)
		})
	}
	t.Cleanup(stop)
	return te
}

func (te *testEdge) stop(t testing.TB) {
	te.srv.CloseClientConnections()
	te.srv.Close()
	require.NoError(t, te.Close())
}

func connectorOptions(t testing.TB, edgeAddr string, routes ...Route) *ConnectorOptions {
	return &ConnectorOptions{
		ID:              "c1",
		Edges:           []string{edgeAddr},
		Token:           testToken,
		TLSConfig:       &tls.Config{RootCAs: getCerts().pool},
		Connections:     1,
		Routes:          routes,
		AllowedNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		BackoffMin:      20 * time.Millisecond,
		BackoffMax:      200 * time.Millisecond,
		DrainTimeout:    5 * time.Second,
		Logger:          quietLogger(t),
	}
}

// startConnector runs a connector until t's cleanup, which drains it and
// waits for Run to return.
func startConnector(t testing.TB, opts *ConnectorOptions) (*Connector, context.CancelFunc) {
	t.Helper()
	c, err := NewConnector(opts)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			require.NoError(t, <-done)
		})
	}
	t.Cleanup(stop)
	return c, stop
}

// waitFor polls cond until it holds or 20 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// headerRecorder wraps an upstream handler and keeps every request's headers.
type headerRecorder struct {
	mu      sync.Mutex
	headers []http.Header
	paths   []string
	next    http.Handler
}

func (h *headerRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.headers = append(h.headers, r.Header.Clone())
	h.paths = append(h.paths, r.URL.Path)
	h.mu.Unlock()
	h.next.ServeHTTP(w, r)
}

func (h *headerRecorder) all() []http.Header {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]http.Header(nil), h.headers...)
}

// startUpstream serves newTestServer(hooks) as Streamable HTTP on loopback
// and returns its MCP endpoint URL and a header recorder.
func startUpstream(t testing.TB, hooks *testHooks) (string, *headerRecorder) {
	t.Helper()
	s := newTestServer(hooks)
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)
	rec := &headerRecorder{next: h}
	mux := http.NewServeMux()
	mux.Handle("/mcp", rec)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		// The SDK keeps a session until DELETE or timeout; a test that cut
		// a connection leaves some behind.
		for ss := range s.Sessions() {
			ss.Close()
		}
	})
	return srv.URL + "/mcp", rec
}

// stdioRoute is a route whose server is this test binary in stdio mode.
func stdioRoute(name string) Route {
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	return Route{Name: name, Command: []string{exe}, Env: []string{stdioServerEnv + "=1"}}
}

// connect opens an MCP client session on endpoint and closes it in cleanup.
func connect(t testing.TB, endpoint string, hc *http.Client, opts *mcp.ClientOptions) *mcp.ClientSession {
	t.Helper()
	if hc == nil {
		hc = http.DefaultClient
	}
	c := mcp.NewClient(&mcp.Implementation{Name: "tunnel-test-client", Version: "1"}, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: hc, MaxRetries: -1}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { cs.Close() })
	return cs
}

func callEcho(ctx context.Context, cs *mcp.ClientSession, text string) (string, error) {
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": text}})
	if err != nil {
		return "", err
	}
	if res.IsError {
		return "", fmt.Errorf("tool error: %v", res.Content)
	}
	out, ok := res.StructuredContent.(map[string]any)
	if !ok {
		return "", fmt.Errorf("unexpected structured content %T", res.StructuredContent)
	}
	s, _ := out["text"].(string)
	return s, nil
}

// newLoopbackServer serves h on loopback until cleanup and returns its URL.
func newLoopbackServer(t testing.TB, h http.Handler) string {
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv.URL
}

// waitConnected waits until c has n connections up and the edge has taken
// them all.
func waitConnected(t testing.TB, e *testEdge, c *Connector, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d connections", n), func() bool {
		if c.Connected() != n {
			return false
		}
		got := 0
		for _, cs := range e.Status().Connectors {
			got += cs.Connections
		}
		return got == n
	})
}

// waitReconnected waits until c has one connection up and the edge holds
// exactly one, made after t0 (the dead one is gone).
func waitReconnected(t testing.TB, e *testEdge, c *Connector, t0 time.Time) {
	t.Helper()
	waitFor(t, "reconnected", func() bool {
		st := e.Status()
		return c.Connected() == 1 && len(st.Connectors) == 1 && st.Connectors[0].Connections == 1 && st.Connectors[0].Since.After(t0)
	})
}
