package local

import (
	"context"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

// Expose listens on a fresh port of host loopback and forwards each connection
// to port on loopback, where the baseline sandbox's servers listen. Closing the
// tunnel closes the listener and every forwarded connection.
func (s *Sandbox) Expose(ctx context.Context, port int, opts *sandbox.ExposeOptions) (driver.Tunnel, error) {
	const op = "expose"
	if err := s.live(ctx, op); err != nil {
		return nil, err
	}
	if s.iso != nil && s.iso.l1 != nil {
		return nil, sandbox.Errorf(Name, s.id, op, sandbox.ErrNotSupported, "an L1 sandbox (no network namespace) cannot serve ports")
	}
	scheme := "http"
	if opts != nil && opts.Protocol != "" {
		switch opts.Protocol {
		case "http", "tcp":
			scheme = opts.Protocol
		default:
			return nil, sandbox.Errorf(Name, s.id, op, sandbox.ErrNotSupported,
				"protocol %q (want http or tcp)", opts.Protocol)
		}
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, sandbox.NewError(Name, s.id, op, sandbox.ErrUnavailable, err)
	}
	f := &forwarder{
		sb:     s,
		ln:     ln,
		port:   port,
		target: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		url:    scheme + "://" + ln.Addr().String(),
		conns:  map[net.Conn]struct{}{},
	}
	s.mu.Lock()
	if s.terminated {
		s.mu.Unlock()
		ln.Close()
		return nil, sandbox.NewError(Name, s.id, op, sandbox.ErrTerminated, nil)
	}
	s.tunnels[f] = struct{}{}
	s.mu.Unlock()
	f.wg.Add(1)
	go f.serve()
	return f, nil
}

// DialContext connects to port on loopback, where the baseline sandbox's
// servers listen.
func (s *Sandbox) DialContext(ctx context.Context, port int) (net.Conn, error) {
	const op = "dial"
	if err := s.live(ctx, op); err != nil {
		return nil, err
	}
	if s.iso != nil && s.iso.l1 != nil {
		return nil, sandbox.Errorf(Name, s.id, op, sandbox.ErrNotSupported, "an L1 sandbox (no network namespace) cannot serve ports")
	}
	if port < 1 || port > 65535 {
		return nil, sandbox.Errorf(Name, s.id, op, sandbox.ErrInvalidArgument,
			"port %d out of range 1-65535", port)
	}
	c, err := s.dial(ctx, port)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, sandbox.NewError(Name, s.id, op, sandbox.ErrUnavailable, err)
	}
	return c, nil
}

// dial connects to port where the sandbox's servers listen: inside its
// network namespace through its agent, or on host loopback at L0.
func (s *Sandbox) dial(ctx context.Context, port int) (net.Conn, error) {
	if s.iso != nil {
		return s.dialIsolated(ctx, port)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
}

// forwarder is a Tunnel: a loopback listener relaying to a sandbox port.
type forwarder struct {
	sb     *Sandbox
	ln     net.Listener
	port   int
	target string
	url    string

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func (f *forwarder) URL() string { return f.url }

// As reports false: a forwarder has no native type to expose.
func (f *forwarder) As(any) bool { return false }

// Close stops the listener, cuts every relayed connection and waits for the
// relaying goroutines to end.
func (f *forwarder) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	f.ln.Close()
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
	f.sb.mu.Lock()
	delete(f.sb.tunnels, f)
	f.sb.mu.Unlock()
	return nil
}

func (f *forwarder) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		c.Close()
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *forwarder) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	c.Close()
}

func (f *forwarder) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		if !f.track(c) {
			return
		}
		f.wg.Add(1)
		go f.relay(c)
	}
}

func (f *forwarder) relay(in net.Conn) {
	defer f.wg.Done()
	defer f.untrack(in)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	out, err := f.sb.dial(ctx, f.port)
	cancel()
	if err != nil {
		return
	}
	if !f.track(out) {
		return
	}
	defer f.untrack(out)
	done := make(chan struct{})
	go func() {
		io.Copy(out, in)
		if tc, ok := out.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		close(done)
	}()
	io.Copy(in, out)
	closeWrite(in)
	<-done
}
