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
	Role   string            `json:"role"`   // "edge" or "connector"
	Dir    string            `json:"dir"`    // edge.pem, edge-key.pem, ca.pem
	Edge   string            `json:"edge"`   // connector: the edge's carrier address
	Routes map[string]string `json:"routes"` // connector: route name → URL
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
	addrs, _ := json.Marshal(map[string]string{"carrier": carrier.Addr().String(), "front": "http://" + front.Addr().String()})
	fmt.Printf("%s\n", addrs)
	io.Copy(io.Discard, os.Stdin)
	return nil
}

func benchConnector(r benchRole) error {
	pem, err := os.ReadFile(filepath.Join(r.Dir, "ca.pem"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return errors.New("ca.pem holds no certificate")
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

// startTunnelProcs starts an edge process and a connector process serving
// routes, waits until the edge reports the connector, and returns the
// edge's front URL. Both processes end in b's cleanup.
func startTunnelProcs(b *testing.B, routes map[string]string) string {
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

	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	start := func(r benchRole) (*exec.Cmd, io.Reader) {
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
		return cmd, stdout
	}
	_, out := start(benchRole{Role: "edge", Dir: dir})
	line, err := bufio.NewReader(out).ReadBytes('\n')
	if err != nil {
		b.Fatalf("edge process: %v", err)
	}
	var addrs struct{ Carrier, Front string }
	if err := json.Unmarshal(line, &addrs); err != nil {
		b.Fatalf("edge process said %q: %v", line, err)
	}
	start(benchRole{Role: "connector", Dir: dir, Edge: addrs.Carrier, Routes: routes})
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
