package tunnel

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// benchRoleEnv makes the test binary run as an edge or a connector process
// (see runBenchRole), so that BenchmarkSideBySide can measure the tunnel as
// it is deployed, each end its own process, just as sshd and ssh are.
const benchRoleEnv = "PERIMETER_TUNNEL_BENCH_ROLE"

// benchRole is what a child process is to be, as JSON in benchRoleEnv.
type benchRole struct {
	Role     string            `json:"role"`     // "edge", "connector", "relay-edge" or "relay-connector"
	Dir      string            `json:"dir"`      // edge.pem, edge-key.pem, ca.pem
	Edge     string            `json:"edge"`     // connector: the edge's carrier address
	Routes   map[string]string `json:"routes"`   // connector: route name → URL
	Upstream string            `json:"upstream"` // relay-connector: host:port
}

// runBenchRole runs the role described by spec until its standard input
// ends. An edge first prints one JSON line: {"carrier": ADDR, "front": URL}.
func runBenchRole(spec string) int {
	var r benchRole
	if err := json.Unmarshal([]byte(spec), &r); err != nil {
		fmt.Fprintln(os.Stderr, "bench role:", err)
		return 2
	}
	var err error
	switch r.Role {
	case "edge":
		err = benchEdge(r)
	case "connector":
		err = benchConnector(r)
	case "relay-edge":
		err = relayEdge(r)
	case "relay-connector":
		err = relayConnector(r)
	default:
		err = fmt.Errorf("unknown role %q", r.Role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench", r.Role+":", err)
		return 1
	}
	return 0
}

func benchEdge(r benchRole) error {
	cert, err := tls.LoadX509KeyPair(filepath.Join(r.Dir, "edge.pem"), filepath.Join(r.Dir, "edge-key.pem"))
	if err != nil {
		return err
	}
	e, err := NewEdge(&EdgeOptions{
		TLSConfig:            &tls.Config{Certificates: []tls.Certificate{cert}},
		Tokens:               []string{testToken},
		ClientAuth:           ClientAuth{Disabled: true},
		MaxSessionsPerClient: 2000,
		MaxSessions:          4000,
		Logger:               slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return err
	}
	defer e.Close()
	carrier, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go e.Serve(carrier)
	front, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: e.Handler()}
	go srv.Serve(front)
	defer srv.Close()
	announceAndWait(carrier.Addr(), front.Addr())
	return nil
}

func benchConnector(r benchRole) error {
	pool, err := readBenchCA(r.Dir)
	if err != nil {
		return err
	}
	var routes []Route
	for name, url := range r.Routes {
		routes = append(routes, Route{Name: name, URL: url})
	}
	c, err := NewConnector(&ConnectorOptions{
		ID:              "procs",
		Edges:           []string{r.Edge},
		Token:           testToken,
		TLSConfig:       &tls.Config{RootCAs: pool},
		Connections:     1,
		Routes:          routes,
		AllowedNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		Logger:          slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	return c.Run(ctx)
}

// readBenchCA reads the CA the connector roles trust.
func readBenchCA(dir string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("ca.pem holds no certificate")
	}
	return pool, nil
}

// announceAndWait prints an edge role's addresses, as readBenchAddrs
// expects them, and returns when standard input ends.
func announceAndWait(carrier, front net.Addr) {
	addrs, _ := json.Marshal(map[string]string{"carrier": carrier.String(), "front": "http://" + front.String()})
	fmt.Printf("%s\n", addrs)
	io.Copy(io.Discard, os.Stdin)
}

// The relay roles are the floor for any carrier written in Go: two processes
// that only move bytes, each client connection paired one to one with a TLS
// connection the connector dialled out, and each of those with one upstream
// connection; no multiplexing, no HTTP, no policy. One goroutine per
// direction reads and writes, as ssh's poll loop does. BenchmarkSideBySide
// runs it as "relay-procs" beside the tunnel and ssh -R.

// relayEdge accepts TLS connections from relayConnector and client
// connections, and joins each client to the next idle TLS connection.
func relayEdge(r benchRole) error {
	cert, err := tls.LoadX509KeyPair(filepath.Join(r.Dir, "edge.pem"), filepath.Join(r.Dir, "edge-key.pem"))
	if err != nil {
		return err
	}
	carrier, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		return err
	}
	defer carrier.Close()
	front, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer front.Close()
	idle := make(chan net.Conn, 64)
	go func() {
		for {
			c, err := carrier.Accept()
			if err != nil {
				return
			}
			idle <- c
		}
	}()
	go func() {
		for {
			c, err := front.Accept()
			if err != nil {
				return
			}
			go relayJoin(c, <-idle)
		}
	}()
	announceAndWait(carrier.Addr(), front.Addr())
	return nil
}

// relayConnector keeps four idle TLS connections to the edge; when a
// client's first byte arrives on one, it dials the upstream, joins the two
// and dials a fresh idle connection.
func relayConnector(r benchRole) error {
	pool, err := readBenchCA(r.Dir)
	if err != nil {
		return err
	}
	stop := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	slots := make(chan struct{}, 4)
	for {
		select {
		case <-stop:
			return nil
		case slots <- struct{}{}:
		}
		c, err := tls.Dial("tcp", r.Edge, &tls.Config{RootCAs: pool})
		if err != nil {
			return err
		}
		go func() {
			first := make([]byte, 1)
			_, err := io.ReadFull(c, first)
			<-slots
			if err != nil {
				c.Close()
				return
			}
			up, err := net.Dial("tcp", r.Upstream)
			if err != nil {
				c.Close()
				return
			}
			if _, err := up.Write(first); err != nil {
				c.Close()
				up.Close()
				return
			}
			relayJoin(c, up)
		}()
	}
}

// relayJoin copies between a and b both ways until either side ends.
func relayJoin(a, b net.Conn) {
	go func() {
		io.Copy(a, b)
		a.Close()
	}()
	io.Copy(b, a)
	b.Close()
}

// startRelayProcs starts a relay-edge and a relay-connector process in
// front of upstream (host:port) and returns the edge's front URL. Both
// processes end in b's cleanup.
func startRelayProcs(b *testing.B, upstream string) string {
	dir := writeBenchCerts(b)
	out := startBenchRole(b, benchRole{Role: "relay-edge", Dir: dir})
	addrs := readBenchAddrs(b, out)
	startBenchRole(b, benchRole{Role: "relay-connector", Dir: dir, Edge: addrs.Carrier, Upstream: upstream})
	return addrs.Front
}

// startTunnelProcs starts an edge process and a connector process serving
// routes, waits until the edge reports the connector, and returns the
// edge's front URL. Both processes end in b's cleanup.
func startTunnelProcs(b *testing.B, routes map[string]string) string {
	dir := writeBenchCerts(b)
	out := startBenchRole(b, benchRole{Role: "edge", Dir: dir})
	addrs := readBenchAddrs(b, out)
	startBenchRole(b, benchRole{Role: "connector", Dir: dir, Edge: addrs.Carrier, Routes: routes})
	deadline := time.Now().Add(20 * time.Second)
	for {
		var st EdgeStatus
		if resp, err := http.Get(addrs.Front + "/healthz"); err == nil {
			json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
		}
		if st.State == "healthy" && len(st.Connectors) > 0 {
			return addrs.Front
		}
		if time.Now().After(deadline) {
			b.Fatalf("the connector process did not reach the edge process (state %q)", st.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writeBenchCerts writes the test CA and the edge's certificate and key
// where the role processes read them, and returns the directory.
func writeBenchCerts(b *testing.B) string {
	dir := b.TempDir()
	c := getCerts()
	writePEM := func(name, typ string, der []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	writePEM("ca.pem", "CERTIFICATE", c.ca.Raw)
	writePEM("edge.pem", "CERTIFICATE", c.server.Certificate[0])
	key, err := x509.MarshalPKCS8PrivateKey(c.server.PrivateKey)
	if err != nil {
		b.Fatal(err)
	}
	writePEM("edge-key.pem", "PRIVATE KEY", key)
	return dir
}

// startBenchRole runs the test binary as r and returns its standard output.
// Closing its standard input, in b's cleanup, stops it.
func startBenchRole(b *testing.B, r benchRole) io.Reader {
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	spec, _ := json.Marshal(r)
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), benchRoleEnv+"="+string(spec))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close() // the child's signal to stop
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	return stdout
}

// readBenchAddrs reads the addresses an edge role prints first.
func readBenchAddrs(b *testing.B, out io.Reader) struct{ Carrier, Front string } {
	line, err := bufio.NewReader(out).ReadBytes('\n')
	if err != nil {
		b.Fatalf("edge process: %v", err)
	}
	var addrs struct{ Carrier, Front string }
	if err := json.Unmarshal(line, &addrs); err != nil {
		b.Fatalf("edge process said %q: %v", line, err)
	}
	return addrs
}
