package local

import (
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The egress proxies' connections are bounded, so that one sandbox cannot
// exhaust the host process's descriptors (each relayed connection holds
// two): per sandbox, and across every sandbox of this process. A
// connection over either bound is answered "503 Service Unavailable" and
// closed at once, and the refusals are logged (at most once a second per
// sandbox, with their count).
var (
	proxyConnsPerSandbox int64        = 256
	proxyConnsTotal      int64        = 2048
	proxyConnsOpen       atomic.Int64 // across every sandbox
)

// limitListener is an egress proxy's listener with those bounds.
type limitListener struct {
	net.Listener
	sandboxID string
	log       *slog.Logger
	open      atomic.Int64

	mu      sync.Mutex
	refused int
	lastLog time.Time
}

func newLimitListener(ln net.Listener, sandboxID string, log *slog.Logger) *limitListener {
	return &limitListener{Listener: ln, sandboxID: sandboxID, log: log}
}

// Accept returns the next connection within the bounds, refusing the
// others meanwhile.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		mine := l.open.Add(1)
		total := proxyConnsOpen.Add(1)
		if mine <= proxyConnsPerSandbox && total <= proxyConnsTotal {
			return &limitedConn{Conn: c, l: l}, nil
		}
		l.open.Add(-1)
		proxyConnsOpen.Add(-1)
		l.refuse(c, mine > proxyConnsPerSandbox)
	}
}

const refusal = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"

func (l *limitListener) refuse(c net.Conn, perSandbox bool) {
	why := "too many open proxy connections across sandboxes (" + itoa(proxyConnsTotal) + ")"
	if perSandbox {
		why = "too many open proxy connections from this sandbox (" + itoa(proxyConnsPerSandbox) + ")"
	}
	c.SetWriteDeadline(time.Now().Add(time.Second))
	c.Write([]byte(refusal + "perimeter: " + why + "\n"))
	c.Close()
	l.mu.Lock()
	l.refused++
	now := time.Now()
	if now.Sub(l.lastLog) < time.Second {
		l.mu.Unlock()
		return
	}
	n := l.refused
	l.refused, l.lastLog = 0, now
	l.mu.Unlock()
	l.log.Warn("perimeter egress",
		slog.String("sandbox", l.sandboxID),
		slog.String("decision", "deny"),
		slog.String("reason", why),
		slog.Int("refused", n))
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// limitedConn gives its slot back once closed.
type limitedConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.open.Add(-1)
		proxyConnsOpen.Add(-1)
	})
	return err
}

// CloseWrite half-closes the connection where the underlying one can.
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
