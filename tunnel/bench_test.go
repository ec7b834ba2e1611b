package tunnel

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// benchTunnel starts an upstream MCP server, an edge and a connector with
// route "r", and returns the direct and the tunnelled endpoint.
func benchTunnel(b *testing.B, connections int) (direct, tunnelled string) {
	b.Helper()
	up, _ := startUpstream(b, nil)
	e := startEdge(b, edgeOptions(b), "")
	co := connectorOptions(b, e.addr, Route{Name: "r", URL: up})
	co.Connections = connections
	c, _ := startConnector(b, co)
	waitConnected(b, e, c, connections)
	return up, e.url + "/r"
}

func benchClient(maxConns int) *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: maxConns, MaxConnsPerHost: 0, IdleConnTimeout: time.Minute}}
}

// BenchmarkToolsCall measures one tools/call round trip on an initialised
// session, direct to the server and through edge → connector.
func BenchmarkToolsCall(b *testing.B) {
	direct, tunnelled := benchTunnel(b, 1)
	// The same upstream through the WebSocket fallback carrier.
	e, err := NewEdge(edgeOptions(b))
	if err != nil {
		b.Fatal(err)
	}
	ws := httptest.NewUnstartedServer(e.WebSocketHandler())
	ws.TLS = &tls.Config{Certificates: []tls.Certificate{getCerts().server}, NextProtos: []string{"http/1.1"}}
	ws.StartTLS()
	front := httptest.NewServer(e.Handler())
	b.Cleanup(func() {
		front.CloseClientConnections()
		front.Close()
		e.Close()
		ws.CloseClientConnections()
		ws.Close()
	})
	co := connectorOptions(b, "wss://"+strings.TrimPrefix(ws.URL, "https://")+"/", Route{Name: "r", URL: direct})
	co.ID = "ws"
	c, _ := startConnector(b, co)
	waitConnected(b, &testEdge{Edge: e}, c, 1)
	overWS := front.URL + "/r"
	for _, bc := range []struct{ name, url string }{{"direct", direct}, {"tunnel", tunnelled}, {"tunnel-websocket", overWS}} {
		b.Run(bc.name, func(b *testing.B) {
			hc := benchClient(4)
			defer hc.CloseIdleConnections()
			cl := mcp.NewClient(&mcp.Implementation{Name: "bench", Version: "1"}, nil)
			cs, err := cl.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: bc.url, HTTPClient: hc, MaxRetries: -1}, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer cs.Close()
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := callEcho(ctx, cs, "ping"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// sseSource streams total bytes as SSE events of eventSize bytes, flushing
// each one.
func sseSource(eventSize int) http.Handler {
	data := strings.Repeat("x", eventSize)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var total int
		fmt.Sscan(r.URL.Query().Get("bytes"), &total)
		w.Header().Set("Content-Type", "text/event-stream")
		f := w.(http.Flusher)
		for sent := 0; sent < total; sent += eventSize {
			if _, err := io.WriteString(w, "data: "+data+"\n\n"); err != nil {
				return
			}
			f.Flush()
		}
	})
}

// BenchmarkStreamingThroughput moves 4 MiB of SSE (4 KiB events, each
// flushed) per operation: over a raw TCP connection on loopback (the floor),
// over HTTP direct to the server, and through the tunnel.
func BenchmarkStreamingThroughput(b *testing.B) {
	const total, event = 4 << 20, 4 << 10
	perOp := int64(total / event * (event + len("data: \n\n")))

	b.Run("tcp-raw", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		chunk := []byte("data: " + strings.Repeat("x", event) + "\n\n")
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				for sent := 0; sent < total; sent += event {
					if _, err := c.Write(chunk); err != nil {
						break
					}
				}
				c.Close()
			}
		})
		defer wg.Wait()
		defer ln.Close()
		b.SetBytes(perOp)
		for b.Loop() {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.Copy(io.Discard, c)
			c.Close()
			if err != nil || n != perOp {
				b.Fatalf("read %d bytes, err %v", n, err)
			}
		}
	})

	src := newLoopbackServer(b, sseSource(event))
	e := startEdge(b, edgeOptions(b), "")
	c, _ := startConnector(b, connectorOptions(b, e.addr, Route{Name: "sse", URL: src + "/"}))
	waitConnected(b, e, c, 1)
	for _, bc := range []struct{ name, url string }{{"http-direct", src + "/"}, {"tunnel", e.url + "/sse"}} {
		b.Run(bc.name, func(b *testing.B) {
			hc := benchClient(4)
			defer hc.CloseIdleConnections()
			b.SetBytes(perOp)
			for b.Loop() {
				resp, err := hc.Get(fmt.Sprintf("%s?bytes=%d", bc.url, total))
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
}

// BenchmarkConcurrentSessions opens 1,000 MCP sessions, then each operation
// makes every session call a tool at once; it reports the calls' p50 and p99
// latency, direct and through the tunnel (2 carrier connections).
func BenchmarkConcurrentSessions(b *testing.B) {
	const sessions = 1000
	direct, tunnelled := benchTunnel(b, 2)
	for _, bc := range []struct{ name, url string }{{"direct", direct}, {"tunnel", tunnelled}} {
		b.Run(fmt.Sprintf("%s/sessions=%d", bc.name, sessions), func(b *testing.B) {
			hc := benchClient(sessions)
			defer hc.CloseIdleConnections()
			cl := mcp.NewClient(&mcp.Implementation{Name: "bench", Version: "1"}, nil)
			css := make([]*mcp.ClientSession, sessions)
			ctx := context.Background()
			var wg sync.WaitGroup
			sem := make(chan struct{}, 64)
			var mu sync.Mutex
			var firstErr error
			for i := range css {
				wg.Go(func() {
					sem <- struct{}{}
					defer func() { <-sem }()
					cs, err := cl.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: bc.url, HTTPClient: hc, MaxRetries: -1, DisableStandaloneSSE: true}, nil)
					mu.Lock()
					defer mu.Unlock()
					if err != nil && firstErr == nil {
						firstErr = err
					}
					css[i] = cs
				})
			}
			wg.Wait()
			defer func() {
				for _, cs := range css {
					if cs != nil {
						cs.Close()
					}
				}
			}()
			if firstErr != nil {
				b.Fatal(firstErr)
			}
			var lat []time.Duration
			for b.Loop() {
				round := make([]time.Duration, sessions)
				for i, cs := range css {
					wg.Go(func() {
						start := time.Now()
						_, err := callEcho(ctx, cs, "x")
						round[i] = time.Since(start)
						if err != nil {
							mu.Lock()
							if firstErr == nil {
								firstErr = err
							}
							mu.Unlock()
						}
					})
				}
				wg.Wait()
				if firstErr != nil {
					b.Fatal(firstErr)
				}
				lat = append(lat, round...)
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}
