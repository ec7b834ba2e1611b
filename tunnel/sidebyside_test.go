package tunnel

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// BenchmarkSideBySide runs the same workloads direct, through the tunnel
// (TLS carrier and WebSocket carrier in this process; TLS carrier with the
// edge and the connector each in its own process, "tunnel-procs", as they
// are deployed), through "relay-procs" (two processes that only relay bytes
// over TLS, one connection per client: the floor for any carrier written in
// Go, see relayEdge) and through `ssh -R` (OpenSSH's reverse port
// forwarding, with an sshd it starts on loopback), in one run:
//
//   - stream: 4 MiB of SSE in 4 KiB events, each flushed (B/s);
//   - call-1MiB: a tools/call whose argument and result are 1 MiB (B/s);
//   - echo: a small tools/call round trip.
//
// Compare each path's ns/op or MB/s with direct's. The ssh rows need
// Debian's openssh-server (/usr/sbin/sshd) and ssh; without them they are
// skipped and say so.
func BenchmarkSideBySide(b *testing.B) {
	const total, event = 4 << 20, 4 << 10
	perOp := int64(total / event * (event + len("data: \n\n")))

	mux := http.NewServeMux()
	mux.Handle("/sse", sseSource(event))
	s := newTestServer(nil)
	mux.Handle("/mcp", mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil))
	up := httptest.NewServer(mux)
	b.Cleanup(func() {
		up.CloseClientConnections()
		up.Close()
		for ss := range s.Sessions() {
			ss.Close()
		}
	})

	paths := []struct{ name, base string }{{"direct", up.URL}}
	// Tunnel, TLS carrier.
	e := startEdge(b, edgeOptions(b), "")
	co := connectorOptions(b, e.addr, Route{Name: "sse", URL: up.URL + "/sse"}, Route{Name: "mcp", URL: up.URL + "/mcp"})
	c, _ := startConnector(b, co)
	waitConnected(b, e, c, 1)
	paths = append(paths, struct{ name, base string }{"tunnel", e.url})
	// Tunnel, WebSocket carrier.
	we, err := NewEdge(edgeOptions(b))
	if err != nil {
		b.Fatal(err)
	}
	ws := httptest.NewUnstartedServer(we.WebSocketHandler())
	ws.TLS = &tls.Config{Certificates: []tls.Certificate{getCerts().server}, NextProtos: []string{"http/1.1"}}
	ws.StartTLS()
	front := httptest.NewServer(we.Handler())
	b.Cleanup(func() {
		front.CloseClientConnections()
		front.Close()
		we.Close()
		ws.CloseClientConnections()
		ws.Close()
	})
	wco := connectorOptions(b, "wss://"+strings.TrimPrefix(ws.URL, "https://")+"/", co.Routes...)
	wco.ID = "ws"
	wc, _ := startConnector(b, wco)
	waitConnected(b, &testEdge{Edge: we}, wc, 1)
	paths = append(paths, struct{ name, base string }{"tunnel-websocket", front.URL})
	// Tunnel, TLS carrier, edge and connector each in its own process.
	paths = append(paths, struct{ name, base string }{"tunnel-procs",
		startTunnelProcs(b, map[string]string{"sse": up.URL + "/sse", "mcp": up.URL + "/mcp"})})
	// The floor for a carrier in Go: TLS, two processes, bytes only.
	paths = append(paths, struct{ name, base string }{"relay-procs", startRelayProcs(b, strings.TrimPrefix(up.URL, "http://"))})
	// ssh -R.
	sshBase, why := startSSHReverse(b, strings.TrimPrefix(up.URL, "http://"))
	if sshBase != "" {
		paths = append(paths, struct{ name, base string }{"ssh-R", sshBase})
	}

	url := func(base, _, route string) string { return base + "/" + route }
	for _, p := range paths {
		b.Run("stream/"+p.name, func(b *testing.B) {
			hc := benchClient(4)
			defer hc.CloseIdleConnections()
			b.SetBytes(perOp)
			for b.Loop() {
				resp, err := hc.Get(fmt.Sprintf("%s?bytes=%d", url(p.base, p.name, "sse"), total))
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || n != perOp {
					b.Fatalf("read %d bytes, err %v", n, err)
				}
			}
		})
	}
	if sshBase == "" {
		b.Run("ssh-R", func(b *testing.B) { b.Skip(why) })
	}
	big := strings.Repeat("x", 1<<20)
	for _, w := range []struct {
		name string
		text string
	}{{"call-1MiB", big}, {"echo", "ping"}} {
		for _, p := range paths {
			b.Run(w.name+"/"+p.name, func(b *testing.B) {
				hc := benchClient(4)
				defer hc.CloseIdleConnections()
				cl := mcp.NewClient(&mcp.Implementation{Name: "bench", Version: "1"}, nil)
				cs, err := cl.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: url(p.base, p.name, "mcp"), HTTPClient: hc, MaxRetries: -1}, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer cs.Close()
				if len(w.text) > 1000 {
					b.SetBytes(int64(2 * len(w.text)))
				}
				for b.Loop() {
					got, err := callEcho(context.Background(), cs, w.text)
					if err != nil {
						b.Fatal(err)
					}
					if len(got) != len(w.text) {
						b.Fatalf("echo returned %d bytes, want %d", len(got), len(w.text))
					}
				}
			})
		}
	}
}

// startSSHReverse starts sshd on loopback and `ssh -R` from a loopback port
// to target, and returns "http://127.0.0.1:PORT". Without OpenSSH it
// returns "" and why.
func startSSHReverse(b *testing.B, target string) (string, string) {
	sshd, err := exec.LookPath("sshd")
	if err != nil {
		sshd = "/usr/sbin/sshd"
	}
	if _, err := os.Stat(sshd); err != nil {
		return "", "ssh -R: OpenSSH's sshd is not installed (apt-get install openssh-server)"
	}
	sshBin, err := exec.LookPath("ssh")
	if err != nil {
		return "", "ssh -R: the ssh client is not installed"
	}
	dir := b.TempDir()
	keygen, err := exec.LookPath("ssh-keygen")
	if err != nil {
		return "", "ssh -R: ssh-keygen is not installed"
	}
	for _, name := range []string{"host_key", "client_key"} {
		if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, name)).CombinedOutput(); err != nil {
			b.Fatalf("ssh-keygen: %v: %s", err, out)
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, "client_key.pub"))
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return "", "ssh -R: cannot create /run/sshd: " + err.Error()
	}
	sshPort, fwdPort := freePort(b), freePort(b)
	conf := fmt.Sprintf(`ListenAddress 127.0.0.1:%d
HostKey %[2]s/host_key
AuthorizedKeysFile %[2]s/authorized_keys
PidFile %[2]s/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
GatewayPorts no
`, sshPort, dir)
	if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(conf), 0o600); err != nil {
		b.Fatal(err)
	}
	var sshdErr bytes.Buffer
	d := exec.Command(sshd, "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	d.Stderr = &sshdErr
	if err := d.Start(); err != nil {
		return "", "ssh -R: starting sshd: " + err.Error()
	}
	b.Cleanup(func() { d.Process.Kill(); d.Wait() })
	cl := exec.Command(sshBin, "-N", "-T", "-p", fmt.Sprint(sshPort), "-i", filepath.Join(dir, "client_key"),
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
		"-o", "ExitOnForwardFailure=yes", "-o", "LogLevel=ERROR",
		"-R", fmt.Sprintf("127.0.0.1:%d:%s", fwdPort, target), "root@127.0.0.1")
	var clErr bytes.Buffer
	cl.Stderr = &clErr
	// sshd may need a moment to listen: retry the client a few times.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", sshPort)); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return "", "ssh -R: sshd did not listen: " + sshdErr.String()
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cl.Start(); err != nil {
		return "", "ssh -R: starting ssh: " + err.Error()
	}
	b.Cleanup(func() { cl.Process.Kill(); cl.Wait() })
	for {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", fwdPort)); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return "", fmt.Sprintf("ssh -R: forwarding did not come up: ssh: %s sshd: %s", clErr.String(), sshdErr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Sprintf("http://127.0.0.1:%d", fwdPort), ""
}

func freePort(b *testing.B) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
