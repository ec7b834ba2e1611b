package conformance

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

// ---- files: escapes

func checkSymlinkEscape(c *C) {
	sb := c.NewSandbox(nil)
	// A canary file on the machine running the suite, outside any sandbox. A
	// sandbox whose filesystem is separate from this machine's cannot see
	// it at all; one whose files live on this machine must not reach it.
	dir, err := os.MkdirTemp("", "perimeter-conformance-canary-")
	if err != nil {
		c.Fatalf("making the canary directory: %v", err)
	}
	c.Cleanup(func() { os.RemoveAll(dir) })
	canary := filepath.Join(dir, "canary")
	secret := fmt.Sprintf("canary-%x", randomBytes(uint64(time.Now().UnixNano()), 8))
	if err := os.WriteFile(canary, []byte(secret), 0o644); err != nil {
		c.Fatalf("writing the canary: %v", err)
	}
	rel := strings.Repeat("../", 40) + strings.TrimPrefix(canary, "/")
	c.sh(sb, fmt.Sprintf("ln -s %q link-abs && ln -s %q link-rel && ln -s %q link-dir && ln -s / link-root",
		canary, rel, dir))

	for _, name := range []string{"link-abs", "link-rel", "link-dir/canary", "link-root" + canary} {
		got, err := c.readFile(sb, name)
		if err == nil && bytes.Contains(got, []byte(secret)) {
			c.Errorf("ReadFile(%q) read the host file %s outside the sandbox", name, canary)
		}
	}
	for _, name := range []string{"link-abs", "link-rel", "link-dir/canary", "link-dir/new-file"} {
		sb.WriteFile(c.ctx, name, strings.NewReader("overwritten through "+name), 0o644)
		if got, _ := os.ReadFile(canary); string(got) != secret {
			c.Fatalf("WriteFile(%q) changed the host file %s outside the sandbox to %q", name, canary, got)
		}
		if _, err := os.Stat(filepath.Join(dir, "new-file")); err == nil {
			c.Fatalf("WriteFile(%q) created a file in the host directory %s outside the sandbox", name, dir)
		}
	}
	sb.RemoveAll(c.ctx, "link-dir/canary")
	sb.Rename(c.ctx, "link-dir/canary", "stolen")
	if _, err := os.Stat(canary); err != nil {
		c.Errorf("file methods through link-dir removed or moved the host file %s: %v", canary, err)
	}
	if _, err := sb.ReadDir(c.ctx, "link-dir"); err == nil {
		if list, _ := sb.ReadDir(c.ctx, "link-dir"); strings.Contains(fileNames(list), "canary") {
			c.Errorf("ReadDir(link-dir) listed the host directory %s outside the sandbox", dir)
		}
	}
}

// ---- errors

func checkUnknownID(c *C) {
	_, err := c.r.h.Provider.Get(c.ctx, "perimeter-conformance-no-such-sandbox")
	c.wantKind("Get of an unknown ID", err, sandbox.ErrNotFound)
}

func checkErrorMessage(c *C) {
	sb := c.NewSandbox(nil)
	_, err := sb.ReadFile(c.ctx, "no-such-file")
	if err == nil {
		c.Fatalf("ReadFile of a missing file returned no error")
	}
	var e *sandbox.Error
	if !errors.As(err, &e) {
		c.Fatalf("ReadFile error %v (%T) is not a *sandbox.Error", err, err)
	}
	if e.Provider == "" || e.Op == "" {
		c.Errorf("error %+v does not name its provider and operation", e)
	}
	if e.Sandbox != sb.ID() {
		c.Errorf("error names sandbox %q, want %q", e.Sandbox, sb.ID())
	}
	if !strings.Contains(err.Error(), sb.ID()) {
		c.Errorf("error message %q does not name the sandbox %s", err, sb.ID())
	}
}

func checkNativeError(c *C) {
	if c.r.h.NativeError == nil {
		c.NotApplicable("the harness declares no native error type (Harness.NativeError), so there is nothing to reach with errors.As")
	}
	sb := c.NewSandbox(nil)
	_, err := sb.ReadFile(c.ctx, "no-such-file")
	target := c.r.h.NativeError()
	if err == nil || !errors.As(err, target) {
		c.Errorf("the error of ReadFile of a missing file (%v) does not reach the provider's native error %T with errors.As: pass the native error as the cause of sandbox.NewError", err, target)
	}
}

// ---- ports

func checkExpose(c *C) {
	sb, t := c.serveTwo()
	if !sb.Capabilities().Expose {
		_, err := sb.Expose(c.ctx, t[0].port, nil)
		c.wantKind("Expose, Expose unclaimed", err, sandbox.ErrNotSupported)
		c.unclaimed("Expose")
	}
	logs := c.startTwo(sb, t)
	// The second port first: a provider that forwards another port than the
	// one asked for (the first of Spec.Ports, a cached tunnel) answers with
	// the wrong body.
	var urls [2]string
	for _, i := range []int{1, 0} {
		tun, err := sb.Expose(c.ctx, t[i].port, nil)
		if err != nil {
			c.Fatalf("Expose(%d): %v", t[i].port, err)
		}
		defer tun.Close()
		urls[i] = strings.TrimSuffix(tun.URL(), "/") + "/probe"
		var got string
		var lastErr error
		ok := c.eventually(60*time.Second, func() bool {
			code, body, err := c.get(urls[i])
			if err != nil {
				lastErr = err
				return false
			}
			got, lastErr = body, fmt.Errorf("HTTP %d", code)
			return code == 200
		})
		if !ok {
			c.Fatalf("GET %s (Expose(%d)) never answered 200 within 60s: %v; server output: %q", urls[i], t[i].port, lastErr, logs.String())
		}
		if got != t[i].body {
			other := t[1-i]
			if got == other.body {
				c.Errorf("Expose(%d) forwards to port %d: forward the port asked for", t[i].port, other.port)
			} else {
				c.Errorf("GET %s = %q, want %q", urls[i], got, t[i].body)
			}
		}
		if i == 1 {
			if err := tun.Close(); err != nil {
				c.Errorf("Tunnel.Close: %v", err)
			}
			if err := tun.Close(); err != nil {
				c.Errorf("second Tunnel.Close: %v, want nil", err)
			}
			if !sb.Capabilities().CloseTunnel {
				c.Logf("Capabilities.CloseTunnel is false: the endpoint may answer until the sandbox ends, so its withdrawal is not checked")
				continue
			}
			var lastCode int
			var lastBody string
			if !c.eventually(60*time.Second, func() bool {
				code, body, err := c.get(urls[1])
				lastCode, lastBody = code, body
				return err != nil || code != 200 || body != t[1].body
			}) {
				c.Errorf("60s after Tunnel.Close, %s still answers (HTTP %d, %q): Close must withdraw the endpoint (or declare Capabilities.CloseTunnel false)", urls[1], lastCode, lastBody)
			}
		}
	}
	_, err := sb.Expose(c.ctx, t[0].port, &sandbox.ExposeOptions{Protocol: "udp"})
	c.wantKind(`Expose with the unknown protocol "udp"`, err, sandbox.ErrInvalidArgument, sandbox.ErrNotSupported)
}

func checkDial(c *C) {
	sb, t := c.serveTwo()
	if !sb.Capabilities().Dial {
		_, err := sb.Dial(c.ctx, t[0].port)
		c.wantKind("Dial, Dial unclaimed", err, sandbox.ErrNotSupported)
		c.unclaimed("Dial")
	}
	logs := c.startTwo(sb, t)
	for _, i := range []int{1, 0} {
		port := t[i].port
		var got string
		var lastErr error
		ok := c.eventually(60*time.Second, func() bool {
			conn, err := sb.Dial(c.ctx, port)
			if err != nil {
				lastErr = err
				return false
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(conn, "GET /probe HTTP/1.0\r\nHost: sandbox\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				lastErr = err
				return false
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			got = string(b)
			return resp.StatusCode == 200
		})
		if !ok {
			c.Fatalf("HTTP through Dial(%d) never answered 200 within 60s: %v; server output: %q", port, lastErr, logs.String())
		}
		if got != t[i].body {
			if got == t[1-i].body {
				c.Errorf("Dial(%d) connects to port %d: connect to the port asked for", port, t[1-i].port)
			} else {
				c.Errorf("HTTP through Dial(%d) = %q, want %q", port, got, t[i].body)
			}
		}
	}
}

// ---- pty

func checkPTY(c *C) {
	sb := c.NewSandbox(nil)
	cmd := &sandbox.Cmd{
		Args: []string{"sh", "-c", `stty size; if [ -t 0 ] && [ -t 1 ]; then echo on-a-tty; fi`},
		TTY:  &sandbox.TTY{Rows: 33, Cols: 111},
	}
	if !sb.Capabilities().PTY {
		_, err := sb.Start(c.ctx, cmd)
		c.wantKind("Start with TTY, PTY unclaimed", err, sandbox.ErrNotSupported)
		c.unclaimed("PTY")
	}
	res := c.run(sb, cmd)
	out := strings.ReplaceAll(string(res.Stdout), "\r", "")
	if !strings.Contains(out, "33 111\n") || !strings.Contains(out, "on-a-tty") {
		c.Errorf("on a 33x111 TTY the command printed %q, want \"33 111\" and on-a-tty", out)
	}
	if !res.Status.Success() {
		c.Errorf("status %v", res.Status)
	}
}

func checkPTYResize(c *C) {
	sb := c.NewSandbox(nil)
	if !sb.Capabilities().PTY {
		p, err := sb.Start(c.ctx, &sandbox.Cmd{Args: []string{"true"}})
		if err != nil {
			c.Fatalf("Start: %v", err)
		}
		p.Wait(c.ctx)
		c.wantKind("Resize of a process without a TTY, PTY unclaimed",
			p.Resize(c.ctx, 10, 10), sandbox.ErrNotSupported, sandbox.ErrInvalidArgument)
		c.unclaimed("PTY")
	}
	pr, pw := io.Pipe()
	defer pw.Close()
	out := newSyncBuffer()
	p, err := sb.Start(c.ctx, &sandbox.Cmd{
		Args:   []string{"sh", "-c", `stty -echo; echo ready; read line; stty size`},
		TTY:    &sandbox.TTY{Rows: 20, Cols: 70},
		Stdin:  pr,
		Stdout: out,
	})
	if err != nil {
		c.Fatalf("Start with TTY: %v", err)
	}
	if !c.eventually(20*time.Second, func() bool { return strings.Contains(out.String(), "ready") }) {
		c.Fatalf("the command never printed ready; output %q", out.String())
	}
	if err := p.Resize(c.ctx, 44, 132); err != nil {
		c.Fatalf("Resize: %v", err)
	}
	io.WriteString(pw, "go\n")
	st, err := p.Wait(c.ctx)
	if err != nil || !st.Success() {
		c.Errorf("Wait: %v, %v", st, err)
	}
	if got := strings.ReplaceAll(out.String(), "\r", ""); !strings.Contains(got, "44 132\n") {
		c.Errorf("after Resize(44, 132) stty size printed %q", got)
	}
}

// ---- network

// listener is a TCP listener on this machine's loopback that counts the
// connections it accepts.
type listener struct {
	ln       net.Listener
	accepted atomic.Int64
}

func (c *C) listen() *listener { return c.listenOn("tcp", "127.0.0.1:0") }

// listenOn is listen on another network and address.
func (c *C) listenOn(network, addr string) *listener {
	ln, err := net.Listen(network, addr)
	if err != nil {
		c.Fatalf("listening on %s: %v", addr, err)
	}
	l := &listener{ln: ln}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			l.accepted.Add(1)
			conn.Close()
		}
	}()
	c.Cleanup(func() { ln.Close(); <-done })
	return l
}

func (l *listener) port() int { return l.ln.Addr().(*net.TCPAddr).Port }

// checkBlocked runs the connect command to l from sb and fails the check if
// the connection got through or the command could not run at all.
func (c *C) checkBlocked(sb *sandbox.Sandbox, l *listener, what string) {
	res := c.run(sb, &sandbox.Cmd{Args: c.connectArgs("127.0.0.1", l.port()), Timeout: 30 * time.Second})
	switch {
	case res.Status.Code == 126 || res.Status.Code == 127:
		c.Errorf("%s: the connect command %q could not run (%v; stderr %q), so nothing was proven",
			what, c.connectArgs("127.0.0.1", l.port()), res.Status, res.Stderr)
	case res.Status.Success() && l.accepted.Load() > 0:
		c.Errorf("%s: a connection from the sandbox reached a listener on the host's 127.0.0.1:%d", what, l.port())
	case res.Status.Success():
		c.Errorf("%s: the connect command to 127.0.0.1:%d succeeded (reaching something other than the host's listener)", what, l.port())
	}
	if n := l.accepted.Load(); n > 0 {
		c.Errorf("%s: the host's listener accepted %d connection(s) from the sandbox", what, n)
	}
	c.checkProtocolsBlocked(sb, l, what)
}

// protocolProbe is the Python program checkProtocolsBlocked runs in the
// sandbox. Each argument is "name family type protocol host port"; for each,
// it prints the name and "refused" (no socket), "blocked" (no connection or
// no UDP echo) or "reached", with the errno.
const protocolProbe = `import socket, sys
for arg in sys.argv[1:]:
    name, fam, typ, proto, host, port = arg.split()
    fam, typ, proto, port = int(fam), int(typ), int(proto), int(port)
    try:
        s = socket.socket(fam, typ, proto)
    except OSError as e:
        print(name, 'refused', e.errno)
        continue
    s.settimeout(10)
    try:
        s.connect((host, port))
        if typ == socket.SOCK_DGRAM:
            s.send(b'perimeter')
            s.recv(64)
        print(name, 'reached', 0)
    except OSError as e:
        print(name, 'blocked', e.errno)
    finally:
        s.close()
`

// checkProtocolsBlocked tries, from sb, every protocol a program could reach
// this machine's loopback with: TCP, Multipath TCP and UDP, over IPv4 and,
// where this machine has ::1, IPv6. A connection or a UDP echo from a
// listener here fails the check; a protocol this machine's kernel lacks is
// noted as untested, not passed.
func (c *C) checkProtocolsBlocked(sb *sandbox.Sandbox, l4 *listener, what string) {
	const inet, inet6, stream, dgram, tcp, mptcp, udp = 2, 10, 1, 2, 6, 262, 17
	type target struct {
		name               string
		family, typ, proto int
		host               string
		port               int
		accepted           *atomic.Int64
	}
	udp4 := c.udpEcho("udp4", "127.0.0.1:0")
	targets := []target{
		{"tcp4", inet, stream, tcp, "127.0.0.1", l4.port(), &l4.accepted},
		{"mptcp4", inet, stream, mptcp, "127.0.0.1", l4.port(), &l4.accepted},
		{"udp4", inet, dgram, udp, "127.0.0.1", udp4.port, &udp4.received},
	}
	if ln6, err := net.Listen("tcp6", "[::1]:0"); err != nil {
		c.Logf("%s: IPv6 not tried: this machine has no ::1 (%v)", what, err)
	} else {
		ln6.Close()
		l6 := c.listenOn("tcp6", "[::1]:0")
		udp6 := c.udpEcho("udp6", "[::1]:0")
		targets = append(targets,
			target{"tcp6", inet6, stream, tcp, "::1", l6.port(), &l6.accepted},
			target{"mptcp6", inet6, stream, mptcp, "::1", l6.port(), &l6.accepted},
			target{"udp6", inet6, dgram, udp, "::1", udp6.port, &udp6.received})
	}
	args := []string{"python3", "-c", protocolProbe}
	for _, t := range targets {
		args = append(args, fmt.Sprintf("%s %d %d %d %s %d", t.name, t.family, t.typ, t.proto, t.host, t.port))
	}
	res := c.run(sb, &sandbox.Cmd{Args: args, Timeout: 2 * time.Minute})
	if !res.Status.Success() {
		c.Errorf("%s: the protocol probe (python3) could not run (%v; stderr %q), so TCP, Multipath TCP and UDP were not tried", what, res.Status, res.Stderr)
		return
	}
	outcome := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(res.Stdout)), "\n") {
		if f := strings.Fields(line); len(f) == 3 {
			outcome[f[0]] = f[1] + " (errno " + f[2] + ")"
		}
	}
	mptcpHere := hostHasMPTCP(c.ctx)
	var summary []string
	for _, t := range targets {
		got, ok := outcome[t.name]
		switch {
		case !ok:
			c.Errorf("%s: the protocol probe printed nothing for %s (stdout %q, stderr %q)", what, t.name, res.Stdout, res.Stderr)
			continue
		case strings.HasPrefix(got, "reached"):
			c.Errorf("%s: %s from the sandbox reached a listener on the host's %s port %d", what, t.name, t.host, t.port)
		case t.proto == mptcp && !mptcpHere:
			got = "not tested: this machine's kernel has no Multipath TCP, so a refusal proves nothing"
		}
		summary = append(summary, t.name+" "+got)
	}
	seen := map[*atomic.Int64]bool{}
	for _, t := range targets {
		if n := t.accepted.Load(); n > 0 && !seen[t.accepted] {
			seen[t.accepted] = true
			c.Errorf("%s: the host's listener on %s port %d got %d connection(s) or datagram(s) from the sandbox", what, t.host, t.port, n)
		}
	}
	c.Logf("%s: %s", what, strings.Join(summary, "; "))
}

// udpListener echoes every datagram it gets and counts them.
type udpListener struct {
	port     int
	received atomic.Int64
}

// udpEcho starts a udpListener on network ("udp4" or "udp6") and addr.
func (c *C) udpEcho(network, addr string) *udpListener {
	pc, err := net.ListenPacket(network, addr)
	if err != nil {
		c.Fatalf("listening for %s on %s: %v", network, addr, err)
	}
	u := &udpListener{port: pc.LocalAddr().(*net.UDPAddr).Port}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			u.received.Add(1)
			pc.WriteTo(buf[:n], from)
		}
	}()
	c.Cleanup(func() { pc.Close(); <-done })
	return u
}

// hostHasMPTCP reports whether this machine's kernel makes Multipath TCP
// connections.
func hostHasMPTCP(ctx context.Context) bool {
	var lc net.ListenConfig
	lc.SetMultipathTCP(true)
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return false
	}
	defer ln.Close()
	var d net.Dialer
	d.SetMultipathTCP(true)
	conn, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		return false
	}
	defer conn.Close()
	ok, err := conn.(*net.TCPConn).MultipathTCP()
	return err == nil && ok
}

// caps returns the capabilities of the provider's sandboxes, read from a
// sandbox made for the purpose.
func (c *C) caps() sandbox.Capabilities {
	return c.NewSandbox(nil).Capabilities()
}

func checkNetworkNone(c *C) {
	edit := func(s *sandbox.Spec) { s.Network = &sandbox.NetworkPolicy{Mode: sandbox.NetworkNone} }
	if !c.caps().SupportsNetwork(sandbox.NetworkNone) {
		_, err := c.create(edit)
		c.wantKind("Create with NetworkNone, unclaimed", err, sandbox.ErrNotSupported)
		c.unclaimed("network mode none")
	}
	l := c.listen()
	c.checkBlocked(c.NewSandbox(edit), l, "NetworkNone")
}

func checkNetworkAllowlist(c *C) {
	edit := func(s *sandbox.Spec) {
		s.Network = &sandbox.NetworkPolicy{Mode: sandbox.NetworkAllowlist, Allow: []string{"allowed.perimeter.invalid"}}
	}
	if !c.caps().SupportsNetwork(sandbox.NetworkAllowlist) {
		_, err := c.create(edit)
		c.wantKind("Create with NetworkAllowlist, unclaimed", err, sandbox.ErrNotSupported)
		c.unclaimed("network mode allowlist")
	}
	l := c.listen()
	c.checkBlocked(c.NewSandbox(edit), l, "NetworkAllowlist without 127.0.0.1")
}

func checkNetworkOpen(c *C) {
	edit := func(s *sandbox.Spec) { s.Network = &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen} }
	if !c.caps().SupportsNetwork(sandbox.NetworkOpen) {
		_, err := c.create(edit)
		c.wantKind("Create with NetworkOpen, unclaimed", err, sandbox.ErrNotSupported)
		c.unclaimed("network mode open")
	}
	sb, err := c.create(edit)
	if err != nil {
		c.Fatalf("Create with NetworkOpen, claimed: %v", err)
	}
	c.sh(sb, "true")
}

func checkUpdateNetwork(c *C) {
	sb := c.NewSandbox(nil)
	caps := sb.Capabilities()
	policy := &sandbox.NetworkPolicy{Mode: sandbox.NetworkNone}
	err := sb.UpdateNetwork(c.ctx, policy)
	if !caps.UpdateNetwork {
		c.wantKind("UpdateNetwork, unclaimed", err, sandbox.ErrNotSupported)
		c.unclaimed("UpdateNetwork")
	}
	if !caps.SupportsNetwork(sandbox.NetworkNone) {
		if err == nil {
			c.Errorf("UpdateNetwork to NetworkNone succeeded, but NetworkNone is not among the claimed modes")
		}
		c.NotApplicable("UpdateNetwork is claimed but network mode none is not; its refusal was verified")
	}
	if err != nil {
		c.Fatalf("UpdateNetwork(none): %v", err)
	}
	c.checkBlocked(sb, c.listen(), "after UpdateNetwork(NetworkNone)")
}

// ---- optional abilities

func checkPause(c *C) {
	sb := c.NewSandbox(nil)
	err := sb.Pause(c.ctx)
	if !sb.Capabilities().Pause {
		c.wantKind("Pause, unclaimed", err, sandbox.ErrNotSupported)
		c.wantKind("Resume, unclaimed", sb.Resume(c.ctx), sandbox.ErrNotSupported)
		c.unclaimed("Pause")
	}
	if err != nil {
		c.Fatalf("Pause: %v", err)
	}
	if info, err := sb.Info(c.ctx); err != nil || info.State != sandbox.StatePaused {
		c.Errorf("Info after Pause: state %q, %v; want paused", info.State, err)
	}
	if err := sb.Resume(c.ctx); err != nil {
		c.Fatalf("Resume: %v", err)
	}
	if out := c.sh(sb, "echo resumed"); out != "resumed\n" {
		c.Errorf("after Resume, echo printed %q", out)
	}
}

func checkSnapshot(c *C) {
	sb := c.NewSandbox(nil)
	if !sb.Capabilities().Snapshot {
		_, err := sb.Snapshot(c.ctx)
		c.wantKind("Snapshot, unclaimed", err, sandbox.ErrNotSupported)
		_, err = c.create(func(s *sandbox.Spec) { s.Snapshot = "perimeter-conformance-no-such-snapshot" })
		if err == nil {
			c.Errorf("Create with Spec.Snapshot succeeded although Snapshot is unclaimed: refuse Spec.Snapshot with ErrNotSupported")
		}
		c.unclaimed("Snapshot")
	}
	c.writeFile(sb, "snap.txt", []byte("kept by the snapshot"))
	id, err := sb.Snapshot(c.ctx)
	if err != nil {
		c.Fatalf("Snapshot: %v", err)
	}
	if id == "" {
		c.Fatalf("Snapshot returned an empty ID")
	}
	restored := c.NewSandbox(func(s *sandbox.Spec) { s.Snapshot = id })
	if got := c.mustRead(restored, "snap.txt"); string(got) != "kept by the snapshot" {
		c.Errorf("in the sandbox restored from the snapshot, snap.txt = %q", got)
	}
}

func checkExtendTimeout(c *C) {
	const ttl = 10 * time.Second
	sb, err := c.create(func(s *sandbox.Spec) { s.Timeout = ttl })
	if errors.Is(err, sandbox.ErrNotSupported) {
		// An honest refusal of Spec.Timeout: extend the provider's default
		// lifetime instead, if ExtendTimeout is claimed.
		sb = c.NewSandbox(nil)
		if !sb.Capabilities().ExtendTimeout {
			c.wantKind("ExtendTimeout, unclaimed", sb.ExtendTimeout(c.ctx, time.Minute), sandbox.ErrNotSupported)
			c.NotApplicable("ExtendTimeout is not claimed and Spec.Timeout is refused; the refusals were verified")
		}
		before, err := sb.Info(c.ctx)
		if err != nil {
			c.Fatalf("Info: %v", err)
		}
		if err := sb.ExtendTimeout(c.ctx, 10*time.Minute); err != nil {
			c.Fatalf("ExtendTimeout (claimed, on a sandbox of default lifetime): %v", err)
		}
		after, err := sb.Info(c.ctx)
		if err != nil {
			c.Fatalf("Info: %v", err)
		}
		if !before.Expires.IsZero() && !after.Expires.After(before.Expires) {
			c.Errorf("Expires went from %v to %v after ExtendTimeout(10m)", before.Expires, after.Expires)
		}
		return
	}
	if err != nil {
		c.Fatalf("Create with Spec.Timeout %v: %v", ttl, err)
	}
	if !sb.Capabilities().ExtendTimeout {
		c.wantKind("ExtendTimeout, unclaimed", sb.ExtendTimeout(c.ctx, time.Minute), sandbox.ErrNotSupported)
		c.unclaimed("ExtendTimeout")
	}
	before, err := sb.Info(c.ctx)
	if err != nil {
		c.Fatalf("Info: %v", err)
	}
	if err := sb.ExtendTimeout(c.ctx, 10*time.Minute); err != nil {
		if gone(err) {
			c.Fatalf("ExtendTimeout: %v: the sandbox (Spec.Timeout %v) ended before the suite could extend it", err, ttl)
		}
		c.Fatalf("ExtendTimeout: %v", err)
	}
	after, err := sb.Info(c.ctx)
	if err != nil {
		c.Fatalf("Info: %v", err)
	}
	if before.Expires.IsZero() {
		c.Fatalf("Info.Expires is zero for a sandbox created with Spec.Timeout %v: report the deadline", ttl)
	}
	if !after.Expires.After(before.Expires) {
		c.Errorf("Expires went from %v to %v after ExtendTimeout(10m): move the deadline later", before.Expires, after.Expires)
	}
	// The event: the original deadline passing. The sandbox must outlive it.
	time.Sleep(time.Until(before.Expires) + 2*time.Second)
	res, err := sandbox.Run(c.ctx, sb, &sandbox.Cmd{Args: []string{"true"}}, nil)
	if err != nil || !res.Status.Success() {
		c.Errorf("after ExtendTimeout(10m) moved Info.Expires from %v to %v, the sandbox ended at its original deadline (running true: %v, %v): extend the sandbox's real lifetime, not only the time reported",
			before.Expires.Format(time.RFC3339), after.Expires.Format(time.RFC3339), res.Status, err)
	}
}
