package tunnel

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DefaultMaxBodyBytes is the request body cap a [Policy] applies when its
// MaxBodyBytes is zero: 4 MiB, as the MCP Go SDK's server.
const DefaultMaxBodyBytes = 4 << 20

// CodePolicyDenied is the JSON-RPC error code of a request refused by a
// route's [Policy] (a denied method or tool). It lies in the range JSON-RPC
// reserves for implementation-defined server errors.
const CodePolicyDenied = -32010

// KnownProtocolVersions are the MCP protocol revisions a [Policy] accepts in
// the MCP-Protocol-Version header when its ProtocolVersions is empty.
var KnownProtocolVersions = []string{"2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"}

// lifecycleMethods are always permitted by an allow list: without them no MCP
// session can start or stay alive. A deny list can still name them.
var lifecycleMethods = []string{"initialize", "notifications/initialized", "ping", "notifications/cancelled", "server/discover"}

// Policy is what a route lets through. The zero value lets every method and
// tool through, caps bodies at [DefaultMaxBodyBytes], accepts the
// [KnownProtocolVersions], and at the edge accepts an Origin header only when
// it is the edge's own origin (its scheme and host match the request's Host).
type Policy struct {
	// AllowMethods, if not empty, lists the JSON-RPC methods (requests and
	// notifications) that may pass; the MCP lifecycle methods (initialize,
	// notifications/initialized, ping, notifications/cancelled,
	// server/discover) always may. Entries are path.Match patterns, such as
	// "tools/*".
	AllowMethods []string `yaml:"allow_methods" json:"allow_methods,omitempty"`
	// DenyMethods lists methods that never pass; it wins over AllowMethods.
	DenyMethods []string `yaml:"deny_methods" json:"deny_methods,omitempty"`
	// AllowTools, if not empty, lists the tool names tools/call may name.
	// Entries are path.Match patterns, such as "db_read_*".
	AllowTools []string `yaml:"allow_tools" json:"allow_tools,omitempty"`
	// DenyTools lists tool names tools/call may not name; it wins over
	// AllowTools. Tools refused by AllowTools or DenyTools are also removed
	// from tools/list results.
	DenyTools []string `yaml:"deny_tools" json:"deny_tools,omitempty"`
	// MaxBodyBytes caps a request body; larger bodies get 413. Zero means
	// DefaultMaxBodyBytes (4 MiB).
	MaxBodyBytes int64 `yaml:"max_body_bytes" json:"max_body_bytes,omitempty"`
	// AllowedOrigins lists Origin header values accepted besides the edge's
	// own origin (such as "https://app.example.com"). A request with any
	// other Origin, or with more than one, gets 403; a request without one
	// passes. On a connector behind an edge, an empty list leaves the Origin
	// check to the edge (which alone knows its own origin); a non-empty list
	// must also admit the Origin.
	AllowedOrigins []string `yaml:"allowed_origins" json:"allowed_origins,omitempty"`
	// AllowedHosts lists the Host header values the front end (the edge, or
	// perimeter tunnel serve) accepts: "mcp.example.com" matches that name
	// on any port, "mcp.example.com:8443" only that port. Other hosts get
	// 403 (DNS rebinding protection). When empty, a loopback listener
	// accepts only loopback names (localhost, 127.0.0.0/8, [::1]) and any
	// other listener accepts any Host.
	AllowedHosts []string `yaml:"allowed_hosts" json:"allowed_hosts,omitempty"`
	// ProtocolVersions lists the MCP-Protocol-Version header values accepted;
	// empty means KnownProtocolVersions. Any other value gets 400; a request
	// without the header passes (the spec then assumes 2025-03-26).
	ProtocolVersions []string `yaml:"protocol_versions" json:"protocol_versions,omitempty"`
}

// Merge returns the policy of a route whose own policy is route, under the
// global policy p. Deny lists, allowed origins and allowed hosts are
// joined; a field the route sets (allow lists, MaxBodyBytes,
// ProtocolVersions) replaces the global one, and a field it leaves empty
// keeps the global one. So a route can narrow or re-scope what passes, but
// never silently drops a global deny rule or body cap.
func (p Policy) Merge(route Policy) Policy {
	out := Policy{
		AllowMethods:     p.AllowMethods,
		DenyMethods:      joinUnique(p.DenyMethods, route.DenyMethods),
		AllowTools:       p.AllowTools,
		DenyTools:        joinUnique(p.DenyTools, route.DenyTools),
		MaxBodyBytes:     p.MaxBodyBytes,
		AllowedOrigins:   joinUnique(p.AllowedOrigins, route.AllowedOrigins),
		AllowedHosts:     joinUnique(p.AllowedHosts, route.AllowedHosts),
		ProtocolVersions: p.ProtocolVersions,
	}
	if len(route.AllowMethods) > 0 {
		out.AllowMethods = route.AllowMethods
	}
	if len(route.AllowTools) > 0 {
		out.AllowTools = route.AllowTools
	}
	if route.MaxBodyBytes > 0 {
		out.MaxBodyBytes = route.MaxBodyBytes
	}
	if len(route.ProtocolVersions) > 0 {
		out.ProtocolVersions = route.ProtocolVersions
	}
	return out
}

func joinUnique(a, b []string) []string {
	if len(b) == 0 {
		return a
	}
	out := slices.Clone(a)
	for _, s := range b {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// validate checks the patterns of p.
func (p *Policy) validate() error {
	for _, list := range [][]string{p.AllowMethods, p.DenyMethods, p.AllowTools, p.DenyTools} {
		for _, pat := range list {
			if _, err := path.Match(pat, ""); err != nil {
				return fmt.Errorf("bad pattern %q: %w", pat, err)
			}
		}
	}
	if p.MaxBodyBytes < 0 {
		return fmt.Errorf("max_body_bytes %d is negative", p.MaxBodyBytes)
	}
	return nil
}

func matchAny(patterns []string, s string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, s); ok {
			return true
		}
	}
	return false
}

// checkMethod returns why method (and tool, for tools/call) is refused, or "".
func (p *Policy) checkMethod(method, tool string) string {
	if matchAny(p.DenyMethods, method) {
		return fmt.Sprintf("method %q is denied on this route", method)
	}
	if len(p.AllowMethods) > 0 && !slices.Contains(lifecycleMethods, method) && !matchAny(p.AllowMethods, method) {
		return fmt.Sprintf("method %q is not allowed on this route", method)
	}
	if method == "tools/call" {
		if matchAny(p.DenyTools, tool) {
			return fmt.Sprintf("tool %q is denied on this route", tool)
		}
		if len(p.AllowTools) > 0 && !matchAny(p.AllowTools, tool) {
			return fmt.Sprintf("tool %q is not allowed on this route", tool)
		}
	}
	return ""
}

func (p *Policy) maxBody() int64 {
	if p.MaxBodyBytes > 0 {
		return p.MaxBodyBytes
	}
	return DefaultMaxBodyBytes
}

// decodeHeaderValue undoes the "=?base64?…?=" wrapping MCP uses for
// non-ASCII header values.
func decodeHeaderValue(v string) string {
	if rest, ok := strings.CutPrefix(v, "=?base64?"); ok {
		if inner, ok := strings.CutSuffix(rest, "?="); ok {
			if b, err := base64.StdEncoding.DecodeString(inner); err == nil {
				return string(b)
			}
		}
	}
	return v
}

// callInfo describes one MCP call for the audit record and the handlers
// behind the guard. The guard fills the request side; the forwarding handler
// adds the connector.
type callInfo struct {
	method    string
	tool      string
	id        []byte // the request's JSON-RPC id (single message), or nil
	connector string
	client    string // who called: see clientIdentity
	denied    string
}

type callInfoKey struct{}

func callInfoFrom(ctx context.Context) *callInfo {
	ci, _ := ctx.Value(callInfoKey{}).(*callInfo)
	return ci
}

// guard enforces a Policy in front of next and writes one audit record and
// the metrics for each request.
type guard struct {
	side    string // "edge", "connector" or "gateway"
	route   string
	policy  Policy
	next    http.Handler
	logger  *slog.Logger
	metrics Metrics
	// connector names the connector for the audit record when known up front
	// (the connector side); the edge fills callInfo.connector instead.
	connector string
	// front is set where MCP clients connect directly (the edge, the
	// gateway): Host is checked and the own origin is accepted there.
	front bool
	// client returns who sent r (for the audit record and the caps).
	client func(r *http.Request) string
}

type inProcessKey struct{}

// singleHeader returns the one value of header k, or an error if it is
// repeated (a policy must not read one copy while the upstream reads
// another).
func singleHeader(r *http.Request, k string) (string, error) {
	vs := r.Header.Values(k)
	switch len(vs) {
	case 0:
		return "", nil
	case 1:
		return vs[0], nil
	}
	return "", fmt.Errorf("the %s header is repeated", k)
}

// originAllowed reports whether origin may call. The front accepts its own
// origin; a connector with no list defers to the edge.
func (g *guard) originAllowed(r *http.Request, origin string) bool {
	if slices.Contains(g.policy.AllowedOrigins, origin) {
		return true
	}
	if !g.front {
		return len(g.policy.AllowedOrigins) == 0
	}
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.User != nil {
		return false
	}
	return strings.EqualFold(u.Host, r.Host) && g.hostAllowed(r)
}

// hostAllowed checks the Host header at the front (DNS rebinding
// protection).
func (g *guard) hostAllowed(r *http.Request) bool {
	if !g.front || r.Context().Value(inProcessKey{}) != nil {
		return true
	}
	host := r.Host
	name := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		name = h
	}
	for _, a := range g.policy.AllowedHosts {
		if strings.EqualFold(a, host) || strings.EqualFold(a, name) {
			return true
		}
	}
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	loopbackListener := false
	if ta, ok := local.(*net.TCPAddr); ok && ta.IP.IsLoopback() {
		loopbackListener = true
	}
	if !loopbackListener {
		return len(g.policy.AllowedHosts) == 0
	}
	if strings.EqualFold(name, "localhost") || strings.HasSuffix(strings.ToLower(name), ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(strings.Trim(name, "[]"))
	return err == nil && ip.IsLoopback()
}

func (g *guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ci := &callInfo{connector: g.connector}
	if g.client != nil {
		ci.client = g.client(r)
	}
	rec := &recorder{w: w, front: g.front}
	var bytesIn int64
	defer func() {
		g.record(r, rec, ci, bytesIn, time.Since(start))
	}()

	switch r.Method {
	case http.MethodPost, http.MethodGet, http.MethodDelete:
	default:
		rec.Header().Set("Allow", "GET, POST, DELETE")
		ci.denied = "method not allowed"
		http.Error(rec, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	if !g.hostAllowed(r) {
		ci.denied = "host not allowed"
		http.Error(rec, fmt.Sprintf("Forbidden: Host %q is not allowed", r.Host), http.StatusForbidden)
		return
	}
	origins := r.Header.Values("Origin")
	if len(origins) > 1 {
		ci.denied = "repeated Origin header"
		http.Error(rec, "Forbidden: the Origin header is repeated", http.StatusForbidden)
		return
	}
	if len(origins) == 1 && !g.originAllowed(r, origins[0]) {
		ci.denied = "origin not allowed"
		http.Error(rec, fmt.Sprintf("Forbidden: Origin %q is not allowed on route %q", origins[0], g.route), http.StatusForbidden)
		return
	}
	version, err := singleHeader(r, "Mcp-Protocol-Version")
	if err == nil {
		_, err = singleHeader(r, "Mcp-Session-Id")
	}
	if err != nil {
		ci.denied = err.Error()
		http.Error(rec, "Bad Request: "+err.Error(), http.StatusBadRequest)
		return
	}
	if version != "" {
		versions := g.policy.ProtocolVersions
		if len(versions) == 0 {
			versions = KnownProtocolVersions
		}
		if !slices.Contains(versions, version) {
			ci.denied = "unsupported protocol version"
			http.Error(rec, fmt.Sprintf("Bad Request: Unsupported protocol version %q (supported versions: %s)", version, strings.Join(versions, ",")), http.StatusBadRequest)
			return
		}
	}
	if r.Method == http.MethodPost {
		max := g.policy.maxBody()
		if r.ContentLength > max {
			ci.denied = "body too large"
			writeRPCError(rec, http.StatusRequestEntityTooLarge, nil, -32600,
				fmt.Sprintf("request body exceeds the route's limit of %d bytes", max))
			return
		}
		body, err := readBody(r, max)
		bytesIn = int64(len(body))
		if err != nil {
			ci.denied = "reading body"
			http.Error(rec, "Bad Request: reading body: "+err.Error(), http.StatusBadRequest)
			return
		}
		if int64(len(body)) > max {
			ci.denied = "body too large"
			writeRPCError(rec, http.StatusRequestEntityTooLarge, nil, -32600,
				fmt.Sprintf("request body exceeds the route's limit of %d bytes", max))
			return
		}
		msgs, batch, err := parseMessages(body)
		if err != nil {
			ci.denied = "unparsable or ambiguous body"
			writeRPCError(rec, http.StatusBadRequest, nil, -32700, "Parse error: "+err.Error())
			return
		}
		if batch && version >= "2025-06-18" {
			// As the MCP Go SDK: batches were removed in 2025-06-18.
			ci.denied = "batch"
			writeRPCError(rec, http.StatusBadRequest, nil, -32600,
				fmt.Sprintf("JSON-RPC batching is not supported in 2025-06-18 and later (request version: %s)", version))
			return
		}
		if len(msgs) == 1 {
			ci.method, ci.tool, ci.id = msgs[0].Method, msgs[0].name(), msgs[0].ID
		}
		for _, h := range []string{"Mcp-Method", "Mcp-Name"} {
			v, err := singleHeader(r, h)
			if err != nil {
				ci.denied = err.Error()
				writeRPCError(rec, http.StatusBadRequest, ci.id, -32600, err.Error())
				return
			}
			if v == "" {
				continue
			}
			want := ""
			if len(msgs) == 1 {
				if h == "Mcp-Method" {
					want = msgs[0].Method
				} else {
					want = msgs[0].name()
				}
			}
			if len(msgs) != 1 || decodeHeaderValue(v) != want {
				ci.denied = h + " header does not match body"
				writeRPCError(rec, http.StatusBadRequest, ci.id, -32600, h+" header does not match the request body")
				return
			}
		}
		for _, m := range msgs {
			if !m.hasMethod {
				continue // a response to a server request
			}
			if why := g.policy.checkMethod(m.Method, m.name()); why != "" {
				ci.denied = why
				if len(m.ID) > 0 && len(msgs) == 1 {
					writeRPCError(rec, http.StatusOK, m.ID, CodePolicyDenied, why)
				} else {
					writeRPCError(rec, http.StatusForbidden, m.ID, CodePolicyDenied, why)
				}
				return
			}
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		if f, ok := r.Context().Value(handedOnKey{}).(handedOnFuncs); ok {
			r.Body = &onEOF{ReadCloser: r.Body, f: f}
		}
		r.ContentLength = int64(len(body))
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		if len(msgs) == 1 && msgs[0].Method == "tools/list" && len(msgs[0].ID) > 0 &&
			(len(g.policy.AllowTools) > 0 || len(g.policy.DenyTools) > 0) {
			// Do not list what may not be called.
			f := &toolsListFilter{w: rec, policy: &g.policy, id: msgs[0].ID}
			g.next.ServeHTTP(f, r.WithContext(context.WithValue(r.Context(), callInfoKey{}, ci)))
			f.finish()
			return
		}
	}
	g.next.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), callInfoKey{}, ci)))
}

// readBody reads up to max+1 bytes of r's body in one allocation when the
// length is known.
func readBody(r *http.Request, max int64) ([]byte, error) {
	var buf bytes.Buffer
	if r.ContentLength > 0 && r.ContentLength <= max {
		buf.Grow(int(r.ContentLength) + bytes.MinRead)
	}
	_, err := buf.ReadFrom(io.LimitReader(r.Body, max+1))
	return buf.Bytes(), err
}

// writeRPCError writes a JSON-RPC error response. id may be nil (null).
func writeRPCError(w http.ResponseWriter, status int, id json.RawMessage, code int, msg string) {
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	body, _ := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}{JSONRPC: "2.0", ID: id, Error: struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}{code, msg}})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

func (g *guard) record(r *http.Request, rec *recorder, ci *callInfo, bytesIn int64, latency time.Duration) {
	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	session := r.Header.Get("Mcp-Session-Id")
	if session == "" {
		session = rec.Header().Get("Mcp-Session-Id")
	}
	method := ci.method
	if method == "" && r.Method != http.MethodPost {
		method = r.Method // a GET stream or a DELETE
	}
	attrs := []slog.Attr{
		slog.String("side", g.side),
		slog.String("route", g.route),
	}
	if g.connector == "" {
		// On a connector its logger already names it.
		attrs = append(attrs, slog.String("connector", ci.connector))
	}
	attrs = append(attrs,
		slog.String("client", ci.client),
		slog.String("session", session),
		slog.String("http_method", r.Method),
		slog.String("method", method),
		slog.String("tool", ci.tool),
		slog.Int("status", status),
		slog.Duration("latency", latency),
		slog.Int64("bytes_in", bytesIn),
		slog.Int64("bytes_out", rec.bytes),
	)
	level := slog.LevelInfo
	if ci.denied != "" {
		attrs = append(attrs, slog.String("denied", ci.denied))
		level = slog.LevelWarn
	} else if status >= 500 {
		level = slog.LevelWarn
	}
	g.logger.LogAttrs(r.Context(), level, "mcp call", attrs...)
	labels := []string{"side", g.side, "route", g.route, "method", method, "status", strconv.Itoa(status)}
	g.metrics.Count("tunnel_calls_total", labels...)
	g.metrics.Observe("tunnel_call_seconds", latency.Seconds(), labels...)
	g.metrics.Observe("tunnel_request_bytes", float64(bytesIn), labels...)
	g.metrics.Observe("tunnel_response_bytes", float64(rec.bytes), labels...)
}

// recorder notes the status and the bytes written, and keeps flushing
// working (SSE must not be buffered).
type recorder struct {
	w      http.ResponseWriter
	status int
	bytes  int64
	front  bool // ask proxies in front not to buffer SSE
}

func (r *recorder) Header() http.Header { return r.w.Header() }

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && code >= 200 {
		r.status = code
		if r.front && strings.HasPrefix(r.w.Header().Get("Content-Type"), "text/event-stream") {
			r.w.Header().Set("X-Accel-Buffering", "no")
		}
	}
	r.w.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.WriteHeader(http.StatusOK)
	}
	n, err := r.w.Write(p)
	r.bytes += int64(n)
	return n, err
}

// Flush sends buffered data to the client at once.
func (r *recorder) Flush() {
	_ = http.NewResponseController(r.w).Flush()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.w }
