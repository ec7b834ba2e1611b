package kubernetes

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

// DialContext connects to a port inside the sandbox's pod through the
// pods/portforward subresource: one SPDY connection per call, closed with
// the returned conn.
func (s *Sandbox) DialContext(ctx context.Context, port int) (net.Conn, error) {
	podName, _ := s.target()
	req := s.p.podRequest(podName, "portforward")
	rt, upgrader, err := spdy.RoundTripperFor(s.p.config)
	if err != nil {
		return nil, sandbox.NewError(name, s.id, "dial", sandbox.ErrInvalidArgument, err)
	}
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: rt}, http.MethodPost, req.URL())
	type result struct {
		conn httpstream.Connection
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		c, _, err := dialer.Dial(portforward.PortForwardProtocolV1Name)
		ch <- result{c, err}
	}()
	var conn httpstream.Connection
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, s.execErr(ctx, fmt.Errorf("port-forward to pod %s: %w", podName, r.err))
		}
		conn = r.conn
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.conn != nil {
				r.conn.Close()
			}
		}()
		return nil, ctx.Err()
	}
	h := http.Header{}
	h.Set(corev1.StreamType, corev1.StreamTypeError)
	h.Set(corev1.PortHeader, strconv.Itoa(port))
	h.Set(corev1.PortForwardRequestIDHeader, "0")
	errStream, err := conn.CreateStream(h)
	if err != nil {
		conn.Close()
		return nil, sandbox.NewError(name, s.id, "dial", sandbox.ErrUnavailable, err)
	}
	errStream.Close() // nothing is written to it
	h.Set(corev1.StreamType, corev1.StreamTypeData)
	data, err := conn.CreateStream(h)
	if err != nil {
		conn.Close()
		return nil, sandbox.NewError(name, s.id, "dial", sandbox.ErrUnavailable, err)
	}
	// The kubelet reports a failed connection on the error stream and ends
	// the data stream, which the caller reads as EOF.
	local, remote := net.Pipe()
	var once sync.Once
	closeAll := func() {
		once.Do(func() {
			data.Reset()
			conn.Close()
			remote.Close()
		})
	}
	go io.Copy(io.Discard, errStream)
	go func() {
		io.Copy(remote, data) // sandbox → caller
		closeAll()
	}()
	go func() {
		io.Copy(data, remote) // caller → sandbox
		data.Close()          // half-close toward the sandbox
		<-conn.CloseChan()
		closeAll()
	}()
	return &pipeConn{Conn: local, close: closeAll}, nil
}

// pipeConn is the caller's end of a port-forward stream.
type pipeConn struct {
	net.Conn
	close func()
}

func (c *pipeConn) Close() error {
	err := c.Conn.Close()
	c.close()
	return err
}

// Expose serves a port of the sandbox on a listener on the host's loopback:
// each accepted connection is forwarded with DialContext. Its URL is
// http://127.0.0.1:PORT (tcp://… for the "tcp" protocol).
func (s *Sandbox) Expose(ctx context.Context, port int, opts *sandbox.ExposeOptions) (driver.Tunnel, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, sandbox.NewError(name, s.id, "expose", sandbox.ErrUnavailable, err)
	}
	scheme := "http"
	if opts.Protocol == "tcp" {
		scheme = "tcp"
	}
	t := &tunnel{ln: ln, url: scheme + "://" + ln.Addr().String(), done: make(chan struct{})}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.wg.Add(1)
			go func() {
				defer t.wg.Done()
				t.forward(s, c, port)
			}()
		}
	}()
	return t, nil
}

// tunnel is an exposed port: a loopback listener.
type tunnel struct {
	ln   net.Listener
	url  string
	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

func (t *tunnel) forward(s *Sandbox, c net.Conn, port int) {
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-t.done:
			cancel()
			c.Close()
		case <-ctx.Done():
		}
	}()
	r, err := s.DialContext(ctx, port)
	if err != nil {
		return
	}
	defer r.Close()
	go func() {
		io.Copy(r, c)
		if cw, ok := r.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}()
	io.Copy(c, r)
}

// URL returns where the port answers.
func (t *tunnel) URL() string { return t.url }

// Close stops the listener and its connections.
func (t *tunnel) Close() error {
	t.once.Do(func() {
		close(t.done)
		t.ln.Close()
	})
	t.wg.Wait()
	return nil
}

// As sets a *net.Listener.
func (t *tunnel) As(target any) bool {
	if l, ok := target.(*net.Listener); ok {
		*l = t.ln
		return true
	}
	return false
}
