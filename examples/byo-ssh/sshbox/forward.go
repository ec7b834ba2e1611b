package sshbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

// DialContext connects to port on the remote host's 127.0.0.1 through SSH
// port forwarding (direct-tcpip). The sandbox shares the host's network, so
// this reaches any port the host serves there.
func (s *Sandbox) DialContext(ctx context.Context, port int) (net.Conn, error) {
	if _, err := s.p.sftp.Lstat(s.root); err != nil {
		return nil, s.err("dial", pathErr("lstat", s.root, err))
	}
	c, err := s.p.first.client.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, sandbox.NewError(Name, s.meta.ID, "dial", sandbox.ErrUnavailable, err)
	}
	return c, nil
}

// Expose listens on the client's 127.0.0.1 and forwards each connection to
// port on the remote host's 127.0.0.1.
func (s *Sandbox) Expose(ctx context.Context, port int, opts *driver.ExposeOptions) (driver.Tunnel, error) {
	if _, err := s.p.sftp.Lstat(s.root); err != nil {
		return nil, s.err("expose", pathErr("lstat", s.root, err))
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, sandbox.NewError(Name, s.meta.ID, "expose", sandbox.ErrUnavailable, err)
	}
	scheme := "http"
	if opts.Protocol == "tcp" {
		scheme = "tcp"
	}
	t := &tunnel{l: l, url: fmt.Sprintf("%s://%s", scheme, l.Addr()), conns: map[net.Conn]bool{}}
	target := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if !t.track(c, true) {
				c.Close()
				return
			}
			t.wg.Add(1)
			go func() {
				defer t.wg.Done()
				defer t.track(c, false)
				defer c.Close()
				r, err := s.p.first.client.Dial("tcp", target)
				if err != nil {
					return
				}
				if !t.track(r, true) {
					r.Close()
					return
				}
				defer t.track(r, false)
				defer r.Close()
				done := make(chan struct{}, 2)
				go func() { io.Copy(r, c); done <- struct{}{} }()
				go func() { io.Copy(c, r); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	return t, nil
}

type tunnel struct {
	l   net.Listener
	url string
	wg  sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
}

func (t *tunnel) track(c net.Conn, add bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if add {
		if t.closed {
			return false
		}
		t.conns[c] = true
	} else {
		delete(t.conns, c)
	}
	return true
}

// URL returns http://127.0.0.1:PORT (tcp:// for the tcp protocol).
func (t *tunnel) URL() string { return t.url }

// Close stops listening, closes the forwarded connections and waits for
// their goroutines.
func (t *tunnel) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	for c := range t.conns {
		c.Close()
	}
	t.mu.Unlock()
	err := t.l.Close()
	t.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// As sets a *net.Listener target.
func (t *tunnel) As(target any) bool {
	if p, ok := target.(*net.Listener); ok {
		*p = t.l
		return true
	}
	return false
}

var _ driver.Dialer = (*Sandbox)(nil)
