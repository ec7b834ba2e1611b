package tunnel

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// freezeConn stops carrying bytes when frozen, without closing: a silent
// network path, which only a PING can detect.
type freezeConn struct {
	net.Conn
	frozen  *atomic.Bool
	closed  chan struct{}
	closeMu sync.Once
}

func (c *freezeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.frozen.Load() {
		<-c.closed // swallow what arrived; block like a black hole
		return 0, net.ErrClosed
	}
	return n, err
}

func (c *freezeConn) Write(p []byte) (int, error) {
	if c.frozen.Load() {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *freezeConn) Close() error {
	c.closeMu.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

func TestSilentConnectionIsDetectedByPingAndReplaced(t *testing.T) {
	var mu sync.Mutex
	var frozen []*atomic.Bool
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		f := &atomic.Bool{}
		mu.Lock()
		frozen = append(frozen, f)
		mu.Unlock()
		return &freezeConn{Conn: c, frozen: f, closed: make(chan struct{})}, nil
	}
	e, c := setup(t, nil, func(o *EdgeOptions) {
		o.PingInterval, o.PingTimeout = 300*time.Millisecond, 500*time.Millisecond
	}, func(o *ConnectorOptions) {
		o.Dial = dial
		o.PingInterval, o.PingTimeout = 300*time.Millisecond, 500*time.Millisecond
	})
	cs := connect(t, e.url+"/r", nil, nil)
	_, err := callEcho(context.Background(), cs, "before")
	require.NoError(t, err)

	mu.Lock()
	require.Len(t, frozen, 1)
	t0 := time.Now()
	frozen[0].Store(true)
	mu.Unlock()

	// Both ends notice the silence by PING, drop the connection, and the
	// connector dials a fresh one.
	waitFor(t, "a second connection", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(frozen) >= 2
	})
	waitReconnected(t, e, c, t0)
	cs2 := connect(t, e.url+"/r", nil, nil)
	got, err := callEcho(context.Background(), cs2, "after")
	require.NoError(t, err)
	assert.Equal(t, "after", got)
}
