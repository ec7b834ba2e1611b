package tunnel

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
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
// [KnownProtocolVersions], and refuses every request that carries an Origin
// header (browsers send one; agents do not).
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
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64 `yaml:"max_body_bytes" json:"max_body_bytes,omitempty"`
	// AllowedOrigins lists the exact Origin header values accepted
	// (such as "https://app.example.com"). A request with any other Origin
	// gets 403; a request without one passes.
	AllowedOrigins []string `yaml:"allowed_origins" json:"allowed_origins,omitempty"`
	// ProtocolVersions lists the MCP-Protocol-Version header values accepted;
	// empty means KnownProtocolVersions. Any other value gets 400; a request
	// without the header passes (the spec then assumes 2025-03-26).
	ProtocolVersions []string `yaml:"protocol_versions" json:"protocol_versions,omitempty"`
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

// rpcMessage is the part of a JSON-RPC message the policy reads.
type rpcMessage struct {
	ID     json.RawMessage `json:"id,omitempty"`
	Method string          `json:"method,omitempty"`
	Params json.RawMessage `json:"params,omitempty"`
}

// name returns the MCP "name" of a message: params.name for tools/call and
// prompts/get, params.uri for resources/read, "" otherwise.
func (m *rpcMessage) name() string {
	var p struct {
		Name string `json:"name"`
		URI  string `json:"uri"`
	}
	switch m.Method {
	case "tools/call", "prompts/get":
		_ = json.Unmarshal(m.Params, &p)
		return p.Name
	case "resources/read":
		_ = json.Unmarshal(m.Params, &p)
		return p.URI
	}
	return ""
}

// parseMessages parses a POST body: one JSON-RPC message, or a batch (an
// array, allowed by the 2025-03-26 revision).
func parseMessages(body []byte) ([]rpcMessage, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, errors.New("empty body")
	}
	if body[0] == '[' {
		var batch []rpcMessage
		if err := json.Unmarshal(body, &batch); err != nil {
			return nil, err
		}
		if len(batch) == 0 {
			return nil, errors.New("empty batch")
		}
		return batch, nil
	}
	var m rpcMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, err
	}
	return []rpcMessage{m}, nil
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

// callInfo describes one MCP call for the audit record. The guard fills the
// request side; the forwarding handler adds the connector.
type callInfo struct {
	method    string
	tool      string
	connector string
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
	side    string // "edge" or "connector"
	route   string
	policy  Policy
	next    http.Handler
	logger  *slog.Logger
	metrics Metrics
	// connector names the connector for the audit record when known up front
	// (the connector side); the edge fills callInfo.connector instead.
	connector string
}

func (g *guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ci := &callInfo{connector: g.connector}
	rec := &recorder{w: w}
	var bytesIn int64
	defer func() {
		g.record(r, rec, ci, bytesIn, time.Since(start))
	}()

	switch r.Method {
	case http.MethodPost, http.MethodGet, http.MethodDelete:
	default:
		rec.Header().Set("Allow", "GET, POST, DELETE")
		ci.denied = "method not allowed"
		http.Error(rec, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if origin := r.Header.Get("Origin"); origin != "" && !slices.Contains(g.policy.AllowedOrigins, origin) {
		ci.denied = "origin not allowed"
		http.Error(rec, fmt.Sprintf("Forbidden: Origin %q is not allowed on route %q", origin, g.route), http.StatusForbidden)
		return
	}
	if v := r.Header.Get("Mcp-Protocol-Version"); v != "" {
		versions := g.policy.ProtocolVersions
		if len(versions) == 0 {
			versions = KnownProtocolVersions
		}
		if !slices.Contains(versions, v) {
			ci.denied = "unsupported protocol version"
			http.Error(rec, fmt.Sprintf("Bad Request: unsupported MCP-Protocol-Version %q (supported: %s)", v, strings.Join(versions, ", ")), http.StatusBadRequest)
			return
		}
	}
	if r.Method == http.MethodPost {
		max := g.policy.maxBody()
		body, err := io.ReadAll(io.LimitReader(r.Body, max+1))
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
		msgs, err := parseMessages(body)
		if err != nil {
			ci.denied = "unparsable body"
			writeRPCError(rec, http.StatusBadRequest, nil, -32700, "parse error: "+err.Error())
			return
		}
		if len(msgs) == 1 {
			ci.method, ci.tool = msgs[0].Method, msgs[0].name()
		}
		if hm := r.Header.Get("Mcp-Method"); hm != "" {
			if len(msgs) != 1 || decodeHeaderValue(hm) != msgs[0].Method {
				ci.denied = "Mcp-Method header does not match body"
				writeRPCError(rec, http.StatusBadRequest, firstID(msgs), -32600, "Mcp-Method header does not match the request body")
				return
			}
		}
		if hn := r.Header.Get("Mcp-Name"); hn != "" {
			if len(msgs) != 1 || decodeHeaderValue(hn) != msgs[0].name() {
				ci.denied = "Mcp-Name header does not match body"
				writeRPCError(rec, http.StatusBadRequest, firstID(msgs), -32600, "Mcp-Name header does not match the request body")
				return
			}
		}
		for _, m := range msgs {
			if m.Method == "" {
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

func firstID(msgs []rpcMessage) json.RawMessage {
	if len(msgs) > 0 {
		return msgs[0].ID
	}
	return nil
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
		slog.String("connector", ci.connector),
		slog.String("session", session),
		slog.String("http_method", r.Method),
		slog.String("method", method),
		slog.String("tool", ci.tool),
		slog.Int("status", status),
		slog.Duration("latency", latency),
		slog.Int64("bytes_in", bytesIn),
		slog.Int64("bytes_out", rec.bytes),
	}
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
}

func (r *recorder) Header() http.Header { return r.w.Header() }

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && code >= 200 {
		r.status = code
	}
	r.w.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
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
