package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// egressProxy is a sandbox's way out in allowlist mode: an HTTP proxy
// (CONNECT for TLS and anything else, absolute-URI requests for plain HTTP)
// on a Unix socket that the sandbox's agent relays from 127.0.0.1:3128. It
// refuses every destination not on the allowlist and logs each decision.
type egressProxy struct {
	sandboxID string
	allow     allowlist
	log       *slog.Logger
	ln        net.Listener
	srv       *http.Server
	transport *http.Transport

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newEgressProxy(sandboxID string, allow []string, ln net.Listener, log *slog.Logger) (*egressProxy, error) {
	al, err := parseAllowlist(allow)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	ln = newLimitListener(ln, sandboxID, log)
	p := &egressProxy{sandboxID: sandboxID, allow: al, log: log, ln: ln, conns: map[net.Conn]struct{}{}}
	p.transport = &http.Transport{
		Proxy:               nil,
		DialContext:         p.dialAllowed,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
	}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 30 * time.Second}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.srv.Serve(ln)
	}()
	return p, nil
}

// Close stops the proxy and cuts every relayed connection.
func (p *egressProxy) Close() error {
	p.srv.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.transport.CloseIdleConnections()
	p.wg.Wait()
	return nil
}

// errDenied is a destination the allowlist refuses.
type errDenied struct{ why string }

func (e *errDenied) Error() string { return e.why }

// dialAllowed dials addr if the allowlist permits it. A name is resolved
// here, on the host, and the connection goes to the address checked (no
// second lookup). A name that resolves to a loopback, private, link-local
// (cloud metadata), multicast or unspecified address is refused unless a
// CIDR or IP entry allows that address too: an allowed domain must not
// become a way into the host's own networks.
func (p *egressProxy) dialAllowed(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if !p.allow.permits(host) {
		return nil, &errDenied{host + " is not on the allowlist"}
	}
	var d net.Dialer
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return d.DialContext(ctx, "tcp", addr)
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	var lastErr error = &errDenied{host + " has no address"}
	for _, ip := range ips {
		ip = ip.Unmap()
		if internal(ip) && !p.allow.permitsIP(ip) {
			lastErr = &errDenied{fmt.Sprintf("%s resolves to %s, an internal address no CIDR entry allows", host, ip)}
			continue
		}
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ip.String(), port))
		if err == nil {
			return c, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

// internal reports whether ip is an address of the host's own or private
// networks: loopback, private, link-local, CGNAT, multicast, unspecified,
// IPv6 site-local, or an IPv6 address that embeds such an IPv4 address
// (see [embeddedIPv4]). NAT64's local-use prefix 64:ff9b:1::/48 is internal
// whatever it embeds.
func internal(ip netip.Addr) bool {
	ip = ip.Unmap()
	if internalDirect(ip) || nat64Local.Contains(ip) {
		return true
	}
	for _, v4 := range embeddedIPv4(ip) {
		if internalDirect(v4) {
			return true
		}
	}
	return false
}

var (
	cgnat      = netip.MustParsePrefix("100.64.0.0/10")
	siteLocal  = netip.MustParsePrefix("fec0::/10")
	nat64      = netip.MustParsePrefix("64:ff9b::/96")
	nat64Local = netip.MustParsePrefix("64:ff9b:1::/48")
	sixToFour  = netip.MustParsePrefix("2002::/16")
	teredo     = netip.MustParsePrefix("2001::/32")
	v4compat   = netip.MustParsePrefix("::/96")
	siit       = netip.MustParsePrefix("::ffff:0:0:0/96")
)

func internalDirect(ip netip.Addr) bool {
	return ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsMulticast() || ip.IsUnspecified() || ip.IsInterfaceLocalMulticast() ||
		cgnat.Contains(ip) || siteLocal.Contains(ip)
}

// embeddedIPv4 returns the IPv4 addresses an IPv6 address carries and
// that a translator or tunnel would deliver to: NAT64 (64:ff9b::/96, the
// last 32 bits), 6to4 (2002::/16, bits 16-47), Teredo (2001::/32: the
// server in bits 32-63 and the client, inverted, in the last 32 bits),
// IPv4-compatible (::a.b.c.d) and SIIT (::ffff:0:a.b.c.d).
func embeddedIPv4(ip netip.Addr) []netip.Addr {
	if !ip.Is6() {
		return nil
	}
	b := ip.As16()
	v4 := func(p []byte) netip.Addr { return netip.AddrFrom4([4]byte(p)) }
	switch {
	case nat64.Contains(ip), v4compat.Contains(ip), siit.Contains(ip):
		return []netip.Addr{v4(b[12:16])}
	case sixToFour.Contains(ip):
		return []netip.Addr{v4(b[2:6])}
	case teredo.Contains(ip):
		client := [4]byte{^b[12], ^b[13], ^b[14], ^b[15]}
		return []netip.Addr{v4(b[4:8]), netip.AddrFrom4(client)}
	}
	return nil
}

func (p *egressProxy) decide(r *http.Request, host string, ok bool, why string) {
	p.log.Info("perimeter egress",
		slog.String("sandbox", p.sandboxID),
		slog.String("decision", map[bool]string{true: "allow", false: "deny"}[ok]),
		slog.String("method", r.Method),
		slog.String("host", host),
		slog.String("reason", why))
}

func (p *egressProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		p.connect(w, r)
		return
	}
	if r.URL.Host == "" || (r.URL.Scheme != "http") {
		p.decide(r, r.Host, false, "not a proxy request")
		http.Error(w, "perimeter: this is an egress proxy; send absolute http:// URLs or CONNECT", http.StatusBadRequest)
		return
	}
	host := r.URL.Hostname()
	if !p.allow.permits(host) {
		p.decide(r, host, false, "not on the allowlist")
		http.Error(w, "perimeter: "+host+" is not on this sandbox's egress allowlist", http.StatusForbidden)
		return
	}
	p.decide(r, host, true, "on the allowlist (addresses checked at connect)")
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.Header.Del("Proxy-Connection")
	out.Header.Del("Proxy-Authorization")
	resp, err := p.transport.RoundTrip(out)
	if err != nil {
		var denied *errDenied
		if errors.As(err, &denied) {
			p.decide(r, host, false, denied.why)
			http.Error(w, "perimeter: "+denied.why, http.StatusForbidden)
			return
		}
		http.Error(w, "perimeter: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

func (p *egressProxy) connect(w http.ResponseWriter, r *http.Request) {
	host, _, err := net.SplitHostPort(r.Host)
	if err != nil {
		p.decide(r, r.Host, false, "malformed CONNECT target")
		http.Error(w, "perimeter: CONNECT wants host:port", http.StatusBadRequest)
		return
	}
	if !p.allow.permits(host) {
		p.decide(r, host, false, "not on the allowlist")
		http.Error(w, "perimeter: "+host+" is not on this sandbox's egress allowlist", http.StatusForbidden)
		return
	}
	up, err := p.dialAllowed(r.Context(), "tcp", r.Host)
	if err != nil {
		p.decide(r, host, false, err.Error())
		code := http.StatusBadGateway
		var denied *errDenied
		if errors.As(err, &denied) {
			code = http.StatusForbidden
		}
		http.Error(w, "perimeter: "+err.Error(), code)
		return
	}
	p.decide(r, host, true, "on the allowlist")
	hj, ok := w.(http.Hijacker)
	if !ok {
		up.Close()
		http.Error(w, "perimeter: cannot hijack", http.StatusInternalServerError)
		return
	}
	c, buf, err := hj.Hijack()
	if err != nil {
		up.Close()
		return
	}
	if !p.track(c, up) {
		return
	}
	c.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
	if n := buf.Reader.Buffered(); n > 0 {
		b, _ := buf.Reader.Peek(n)
		up.Write(b)
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		pipeConns(c, up)
		p.untrack(c, up)
	}()
}

func (p *egressProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *egressProxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	for _, c := range cs {
		if p.conns != nil {
			delete(p.conns, c)
		}
	}
	p.mu.Unlock()
}

// allowlist is NetworkPolicy.Allow parsed: exact names, "*.suffix" wildcards
// (which do not match the bare suffix) and CIDR prefixes (which match IP
// literals only).
type allowlist struct {
	names    map[string]bool
	suffixes []string
	prefixes []netip.Prefix
}

func parseAllowlist(entries []string) (allowlist, error) {
	al := allowlist{names: map[string]bool{}}
	for _, e := range entries {
		e = strings.ToLower(strings.TrimSpace(e))
		switch {
		case e == "":
			return al, fmt.Errorf("empty allowlist entry")
		case strings.Contains(e, "/"):
			pfx, err := netip.ParsePrefix(e)
			if err != nil {
				return al, fmt.Errorf("allowlist entry %q: %w", e, err)
			}
			al.prefixes = append(al.prefixes, pfx.Masked())
		case strings.HasPrefix(e, "*."):
			al.suffixes = append(al.suffixes, e[1:])
		default:
			if a, err := netip.ParseAddr(e); err == nil {
				al.prefixes = append(al.prefixes, netip.PrefixFrom(a, a.BitLen()))
				continue
			}
			if strings.ContainsAny(e, "*:?#@/ ") {
				return al, fmt.Errorf("allowlist entry %q is neither a domain, a *.domain, an IP nor a CIDR", e)
			}
			al.names[strings.TrimSuffix(e, ".")] = true
		}
	}
	return al, nil
}

func (al allowlist) permitsIP(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range al.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (al allowlist) permits(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if a, err := netip.ParseAddr(host); err == nil {
		return al.permitsIP(a)
	}
	if al.names[host] {
		return true
	}
	for _, s := range al.suffixes {
		if strings.HasSuffix(host, s) {
			return true
		}
	}
	return false
}
