package tunnel

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ClientAuth is how a front end (the [Edge]'s Handler, or a [Gateway])
// authenticates MCP clients. Set Tokens, ClientCAs or both (a client then
// needs either one); or set Disabled to serve without client authentication,
// which the front end logs as a warning at start. The zero value is refused:
// a front end never runs open by accident.
type ClientAuth struct {
	// Tokens are the accepted bearer tokens (each at least 16 characters).
	// Only their SHA-256 digests are kept; comparison is in constant time.
	Tokens []string
	// Header is the request header carrying the token. Empty means
	// "Authorization" with the Bearer scheme; that header is then removed
	// before the request is forwarded, so an upstream that uses OAuth needs
	// another header here (such as "X-Perimeter-Token"), and Authorization
	// then passes through untouched. A custom header is always removed
	// before forwarding.
	Header string
	// ClientCAs, if set, admits a client whose TLS certificate (as verified
	// by the server in front of the handler, which must request client
	// certificates) chains to one of these CAs for client authentication.
	ClientCAs *x509.CertPool
	// Disabled serves every client without authentication. Only for a
	// handler that nothing untrusted can reach.
	Disabled bool
}

// clientAuth is a ClientAuth ready for use.
type clientAuth struct {
	tokens   tokenSet
	header   string
	bearer   bool
	cas      *x509.CertPool
	disabled bool
}

func newClientAuth(a ClientAuth) (*clientAuth, error) {
	tokens, err := newTokenSet(a.Tokens)
	if err != nil {
		return nil, fmt.Errorf("client auth: %w", err)
	}
	if a.Disabled && (len(tokens) > 0 || a.ClientCAs != nil) {
		return nil, errors.New("client auth: Disabled set together with Tokens or ClientCAs")
	}
	if !a.Disabled && len(tokens) == 0 && a.ClientCAs == nil {
		return nil, errors.New("no MCP client authentication: set ClientAuth.Tokens or ClientAuth.ClientCAs, or ClientAuth.Disabled to serve clients without authentication")
	}
	c := &clientAuth{tokens: tokens, header: http.CanonicalHeaderKey(a.Header), cas: a.ClientCAs, disabled: a.Disabled}
	if c.header == "" {
		c.header, c.bearer = "Authorization", true
	}
	return c, nil
}

// clientHeader carries the edge's name for the client to the connector,
// which keys its per-client caps on it. The edge always replaces it.
const clientHeader = "Perimeter-Client"

// authenticate returns the client's identity ("token:N", "cert:NAME", or
// "addr:IP" when authentication is disabled) and removes the credential
// header from r; ok is false if the client is not admitted.
func (c *clientAuth) authenticate(r *http.Request) (id string, ok bool) {
	if r.Context().Value(inProcessKey{}) != nil {
		return "in-process", true
	}
	if c.disabled {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			host = r.RemoteAddr
		}
		return "addr:" + host, true
	}
	vals := r.Header.Values(c.header)
	if c.header != "Authorization" || len(c.tokens) > 0 {
		r.Header.Del(c.header)
	}
	if c.cas != nil && r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		inter := x509.NewCertPool()
		for _, ic := range r.TLS.PeerCertificates[1:] {
			inter.AddCert(ic)
		}
		leaf := r.TLS.PeerCertificates[0]
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: c.cas, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
			return "cert:" + leaf.Subject.CommonName, true
		}
	}
	if len(c.tokens) == 0 || len(vals) != 1 {
		return "", false
	}
	tok := vals[0]
	if c.bearer {
		scheme, rest, found := strings.Cut(tok, " ")
		if !found || !strings.EqualFold(scheme, "Bearer") {
			return "", false
		}
		tok = strings.TrimSpace(rest)
	}
	if i := c.tokens.index(tok); i >= 0 {
		return "token:" + strconv.Itoa(i), true
	}
	return "", false
}

// sanitizeClient makes a client identity safe as a header value and a log
// field.
func sanitizeClient(id string) string {
	b := []byte(id)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._:@-[]", c) >= 0) {
			b[i] = '_'
		}
	}
	if len(b) > 128 {
		b = b[:128]
	}
	return string(b)
}

// writeRefusal answers a request refused for a limit or authentication:
// HTTP status plus a JSON-RPC error, so MCP clients show the reason.
func writeRefusal(w http.ResponseWriter, status int, msg string) {
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "10")
	}
	writeRPCError(w, status, nil, -32000, msg)
}

// sessionCaps counts the MCP sessions each client holds and refuses new
// ones beyond the limits. A session is counted from its initialize answer
// (one carrying Mcp-Session-Id) until DELETE, a 404 on it, or IdleTimeout
// without any request.
type sessionCaps struct {
	max, perClient int
	idle           time.Duration

	mu       sync.Mutex
	sessions map[string]*capSession // by session ID
	byClient map[string]int         // sessions and reservations per client
	total    int
}

type capSession struct {
	client string
	active int
	last   time.Time
}

func newSessionCaps(max, perClient int, idle time.Duration) *sessionCaps {
	return &sessionCaps{max: max, perClient: perClient, idle: idle,
		sessions: make(map[string]*capSession), byClient: make(map[string]int)}
}

// reserve takes a slot for a new session of client, or returns the HTTP
// status and reason of the refusal.
func (c *sessionCaps) reserve(client string, now time.Time) (int, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expire(now)
	// The host's own agent (the in-process client) is bound only by the
	// total.
	if client != "in-process" && c.byClient[client] >= c.perClient {
		return http.StatusTooManyRequests, fmt.Sprintf("too many MCP sessions for this client (limit %d): end one (DELETE) or wait", c.perClient)
	}
	if c.total >= c.max {
		return http.StatusServiceUnavailable, fmt.Sprintf("too many MCP sessions on this edge (limit %d): try again later", c.max)
	}
	c.byClient[client]++
	c.total++
	return 0, ""
}

// settle turns a reservation into a session (id != "") or releases it.
func (c *sessionCaps) settle(client, id string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if id == "" || c.sessions[id] != nil {
		c.releaseLocked(client)
		return
	}
	c.sessions[id] = &capSession{client: client, last: now}
}

func (c *sessionCaps) releaseLocked(client string) {
	c.total--
	if c.byClient[client]--; c.byClient[client] <= 0 {
		delete(c.byClient, client)
	}
}

// begin and end bracket a request on session id.
func (c *sessionCaps) begin(id string, now time.Time) {
	c.mu.Lock()
	if s := c.sessions[id]; s != nil {
		s.active++
		s.last = now
	}
	c.mu.Unlock()
}

func (c *sessionCaps) end(id string, gone bool, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.sessions[id]
	if s == nil {
		return
	}
	s.active--
	s.last = now
	if gone {
		delete(c.sessions, id)
		c.releaseLocked(s.client)
	}
}

// expire drops sessions idle longer than c.idle (the upstream has ended
// them by then, or will soon).
func (c *sessionCaps) expire(now time.Time) {
	for id, s := range c.sessions {
		if s.active <= 0 && now.Sub(s.last) > c.idle {
			delete(c.sessions, id)
			c.releaseLocked(s.client)
		}
	}
}

// count reports the sessions counted for client.
func (c *sessionCaps) count(client string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byClient[client]
}
