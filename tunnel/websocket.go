package tunnel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"
)

// WebSocketHandler returns an http.Handler that accepts connectors over
// WebSocket: the fallback carrier for networks that let only HTTP/1.1 on
// port 443 out. Mount it on the host's HTTPS server (for example at
// /tunnel); connectors then list "wss://host/tunnel" among their Edges. The
// same handshake and the same reversed HTTP/2 run inside the WebSocket
// (binary messages, subprotocol perimeter-tunnel/1), so everything else
// behaves as on the TLS carrier.
//
// The host's server terminates TLS. When the edge requires client
// certificates (TLSConfig.ClientAuth = tls.RequireAndVerifyClientCert), the
// handler verifies the certificate the host's server received against
// TLSConfig.ClientCAs, and refuses the upgrade (403) without one; the host's
// server must then ask for client certificates
// (tls.VerifyClientCertIfGiven or stricter).
func (e *Edge) WebSocketHandler() http.Handler {
	return http.HandlerFunc(e.serveWebSocket)
}

func (e *Edge) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	remote := r.RemoteAddr
	var cert *x509.Certificate
	if e.tlsConf.ClientAuth == tls.RequireAndVerifyClientCert {
		var err error
		if cert, err = e.verifyPeer(r); err != nil {
			e.handshakeFailed(remote, "tls", err)
			http.Error(w, "Forbidden: a valid client certificate is required", http.StatusForbidden)
			return
		}
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		http.Error(w, "edge closed", http.StatusServiceUnavailable)
		return
	}
	if len(e.pending) >= e.opts.MaxPendingHandshakes {
		e.mu.Unlock()
		e.handshakeFailed(remote, "overload", errors.New("too many handshakes in progress"))
		http.Error(w, "too many handshakes in progress", http.StatusServiceUnavailable)
		return
	}
	e.wg.Add(1)
	e.mu.Unlock()
	defer e.wg.Done()
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols:    []string{ALPN},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		e.handshakeFailed(remote, "websocket", err)
		return
	}
	if ws.Subprotocol() != ALPN {
		e.handshakeFailed(remote, "websocket", errors.New("client did not offer subprotocol "+ALPN))
		ws.Close(websocket.StatusPolicyViolation, "subprotocol "+ALPN+" required")
		return
	}
	// The connection lives until the tunnel ends, not the request.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nc := websocket.NetConn(ctx, ws, websocket.MessageBinary)
	nc.SetDeadline(time.Now().Add(e.opts.HandshakeTimeout))
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		nc.Close()
		return
	}
	e.pending[nc] = struct{}{}
	e.mu.Unlock()
	e.attach(nc, nc, nc, remote, cert)
}

// verifyPeer checks the client certificate the host's server received and
// returns it.
func (e *Edge) verifyPeer(r *http.Request) (*x509.Certificate, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil, errors.New("no client certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range r.TLS.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := r.TLS.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots: e.tlsConf.ClientCAs, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, err
	}
	return r.TLS.PeerCertificates[0], nil
}

// dialWebSocket opens a carrier connection to a wss:// edge address.
func (c *Connector) dialWebSocket(ctx context.Context, addr string) (net.Conn, error) {
	conf := c.tlsConf.Clone()
	conf.NextProtos = []string{"http/1.1"}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment, // restrictive networks often mandate one
		DialContext:         c.opts.Dial,
		TLSClientConfig:     conf,
		ForceAttemptHTTP2:   false,
		TLSHandshakeTimeout: 10 * time.Second,
	}
	defer tr.CloseIdleConnections()
	ws, _, err := websocket.Dial(ctx, addr, &websocket.DialOptions{
		HTTPClient:      &http.Client{Transport: tr},
		Subprotocols:    []string{ALPN},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		return nil, fmt.Errorf("websocket: %w", err)
	}
	if ws.Subprotocol() != ALPN {
		ws.Close(websocket.StatusPolicyViolation, "subprotocol "+ALPN+" required")
		return nil, fmt.Errorf("edge did not accept subprotocol %q", ALPN)
	}
	return websocket.NetConn(context.Background(), ws, websocket.MessageBinary), nil
}

func isWebSocketAddr(addr string) bool {
	return strings.HasPrefix(addr, "wss://")
}
