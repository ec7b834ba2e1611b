package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// run runs cmd to completion and ends the check if it cannot be run.
func (c *C) run(sb *sandbox.Sandbox, cmd *sandbox.Cmd) *sandbox.Result {
	res, err := sandbox.Run(c.ctx, sb, cmd, &sandbox.RunOptions{OutputLimit: 8 << 20})
	if err != nil {
		c.Fatalf("running %q: %v", cmd.Args, err)
	}
	return res
}

// sh runs script with sh -c and returns its stdout, ending the check unless
// it exits 0.
func (c *C) sh(sb *sandbox.Sandbox, script string) string {
	res := c.run(sb, &sandbox.Cmd{Args: []string{"sh", "-c", script}})
	if !res.Status.Success() {
		c.Fatalf("sh -c %q: %v; stderr: %q", script, res.Status, res.Stderr)
	}
	return string(res.Stdout)
}

func (c *C) writeFile(sb *sandbox.Sandbox, name string, data []byte) {
	if err := sb.WriteFile(c.ctx, name, bytes.NewReader(data), 0o644); err != nil {
		c.Fatalf("WriteFile(%q): %v", name, err)
	}
}

func (c *C) readFile(sb *sandbox.Sandbox, name string) ([]byte, error) {
	rc, err := sb.ReadFile(c.ctx, name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// mustRead reads a whole file or ends the check.
func (c *C) mustRead(sb *sandbox.Sandbox, name string) []byte {
	b, err := c.readFile(sb, name)
	if err != nil {
		c.Fatalf("ReadFile(%q): %v", name, err)
	}
	return b
}

// wantKind fails the check unless err matches one of kinds, saying what the
// provider returned and what it should return.
func (c *C) wantKind(what string, err error, kinds ...error) bool {
	if err == nil {
		c.Errorf("%s: no error; return an error of kind %s", what, kindNames(kinds))
		return false
	}
	for _, k := range kinds {
		if errors.Is(err, k) {
			return true
		}
	}
	got := sandbox.KindOf(err)
	switch {
	case got == sandbox.ErrUnavailable:
		c.Errorf("%s: %v: the error has kind ErrUnavailable, which the portable layer gives a driver error without a kind (a plain error); wrap it with sandbox.NewError and kind %s", what, err, kindNames(kinds))
	case got != nil:
		c.Errorf("%s: %v: the error has kind %s; return kind %s", what, err, kindName(got), kindNames(kinds))
	default:
		c.Errorf("%s: %v: the error has no kind; return a *sandbox.Error of kind %s", what, err, kindNames(kinds))
	}
	return false
}

var kindIdents = map[error]string{
	sandbox.ErrNotFound: "ErrNotFound", sandbox.ErrAlreadyExists: "ErrAlreadyExists",
	sandbox.ErrInvalidArgument: "ErrInvalidArgument", sandbox.ErrNotSupported: "ErrNotSupported",
	sandbox.ErrTimeout: "ErrTimeout", sandbox.ErrPermissionDenied: "ErrPermissionDenied",
	sandbox.ErrResourceExhausted: "ErrResourceExhausted", sandbox.ErrUnavailable: "ErrUnavailable",
	sandbox.ErrTerminated: "ErrTerminated", sandbox.ErrClosed: "ErrClosed",
}

func kindName(k error) string {
	if n, ok := kindIdents[k]; ok {
		return n
	}
	return strconv.Quote(k.Error())
}

func kindNames(kinds []error) string {
	s := ""
	for i, k := range kinds {
		if i > 0 {
			s += " or "
		}
		s += kindName(k)
	}
	return s
}

// eventually polls cond every 100ms until it holds or d passes.
func (c *C) eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) || c.ctx.Err() != nil {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// randomBytes returns n bytes from a PRNG seeded with seed.
func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	io.ReadFull(newPRNG(seed, int64(n)), b)
	return b
}

// prng is a reader of n seeded pseudo-random bytes, for data too large to
// hold in memory.
type prng struct {
	r    *rand.ChaCha8
	left int64
}

func newPRNG(seed uint64, n int64) *prng {
	var s [32]byte
	for i := 0; i < 8; i++ {
		s[i] = byte(seed >> (8 * i))
	}
	return &prng{r: rand.NewChaCha8(s), left: n}
}

func (p *prng) Read(b []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	n, _ := p.r.Read(b)
	p.left -= int64(n)
	return n, nil
}

// handedOut holds the ports freePort has returned in this process.
var handedOut struct {
	sync.Mutex
	ports map[int]bool
}

// freePort returns a TCP port for a server in a sandbox that was free on
// this host's loopback a moment ago, for providers whose sandboxes share the
// host's network. It is below Linux's default ephemeral range (32768 and
// up), from which the kernel picks the ports of outgoing connections and of
// listeners bound to port 0, such as a provider's Expose: a port taken from
// that range was seen handed to another check's tunnel between the check
// choosing it and its server binding it, and the check then reached the
// other check's server. No port is returned twice in a process, so checks
// running at once never share one.
func freePort() int {
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports == nil {
		handedOut.ports = map[int]bool{}
	}
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		if handedOut.ports[port] {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		ln.Close()
		handedOut.ports[port] = true
		return port
	}
	// Nothing free below the ephemeral range: take one from it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 20000 + rand.IntN(12000)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// background starts cmd and stops it (cancelling its context) when the check
// ends.
func (c *C) background(sb *sandbox.Sandbox, cmd *sandbox.Cmd) *sandbox.Process {
	ctx, cancel := context.WithCancel(c.ctx)
	p, err := sb.Start(ctx, cmd)
	if err != nil {
		cancel()
		c.Fatalf("Start %q: %v", cmd.Args, err)
	}
	c.Cleanup(func() {
		cancel()
		wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer wcancel()
		p.Wait(wctx)
	})
	return p
}

func (c *C) httpServerArgs(port int) []string {
	if c.r.h.HTTPServer != nil {
		return c.r.h.HTTPServer(port)
	}
	return []string{"python3", "-m", "http.server", strconv.Itoa(port), "--bind", "0.0.0.0"}
}

func (c *C) connectArgs(host string, port int) []string {
	if c.r.h.Connect != nil {
		return c.r.h.Connect(host, port)
	}
	return []string{"bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/%s/%d", host, port)}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu  chan struct{}
	buf bytes.Buffer
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{mu: make(chan struct{}, 1)} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.String()
}
