package cloudflare

// Every route string and wire structure of the Sandbox bridge's HTTP API is in
// this file, so that a later bridge version is a contained change. The bridge
// targeted is the one the @cloudflare/sandbox 0.x bridge Worker serves; its
// OpenAPI document reports info.version TargetVersion.

import (
	"net/url"
	"strconv"
	"strings"
)

// TargetVersion is the info.version of the bridge OpenAPI document this
// package speaks. [New] refuses a bridge that reports another version.
const TargetVersion = "1.0.0"

// MaxFileSize is the largest body the bridge accepts for one file write
// (PUT …/file) or one hydrate: 32 MiB.
const MaxFileSize = 32 << 20

// Workspace is the only directory the bridge's file routes and exec cwd may
// reach.
const Workspace = "/workspace"

// Routes, relative to the bridge's base URL.
const (
	routeHealth  = "/health"
	routeOpenAPI = "/v1/openapi.json"
	routeSandbox = "/v1/sandbox"
)

// sandboxRoute returns /v1/sandbox/ID followed by the given elements, each
// escaped.
func sandboxRoute(id string, elems ...string) string {
	var b strings.Builder
	b.WriteString(routeSandbox)
	b.WriteString("/")
	b.WriteString(url.PathEscape(id))
	for _, e := range elems {
		b.WriteString("/")
		b.WriteString(url.PathEscape(e))
	}
	return b.String()
}

// fileRoute returns /v1/sandbox/ID/file/<abs path without its leading />,
// each path element escaped.
func fileRoute(id, abs string) string {
	parts := strings.Split(strings.TrimPrefix(abs, "/"), "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return sandboxRoute(id, "file") + "/" + strings.Join(parts, "/")
}

func portElem(port int) string { return strconv.Itoa(port) }

// Header and query names.
const (
	headerSession = "Session-Id"
)

// ValidID reports whether id follows the bridge's rule for sandbox IDs:
// 1 to 128 characters of lowercase base32 (a-z, 2-7). (A loop, not a
// regular expression: `{1,128}` compiles into a program whose cost every
// program linking this package paid at start-up.)
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !('a' <= c && c <= 'z' || '2' <= c && c <= '7') {
			return false
		}
	}
	return true
}

// Tunnel ports the bridge accepts.
const (
	MinTunnelPort = 1024
	MaxTunnelPort = 65535
)

// Error codes of the bridge's error bodies and SSE error events.
const (
	CodeInvalidRequest            = "invalid_request"
	CodeUnauthorized              = "unauthorized"
	CodeWorkspaceReadNotFound     = "workspace_read_not_found"
	CodePayloadTooLarge           = "payload_too_large"
	CodeCapacityExceeded          = "capacity_exceeded"
	CodePoolError                 = "pool_error"
	CodeExecError                 = "exec_error"
	CodeExecTransportError        = "exec_transport_error"
	CodeWorkspaceArchiveReadError = "workspace_archive_read_error"
	CodeWorkspaceArchiveWriteErr  = "workspace_archive_write_error"
	CodeTunnelError               = "tunnel_error"
	CodeMountError                = "mount_error"
	CodeUnmountError              = "unmount_error"
	CodeSessionError              = "session_error"
)

// errorBody is every JSON error answer: {"error": "...", "code": "..."}.
type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

type createSandboxResponse struct {
	ID string `json:"id"`
}

type runningResponse struct {
	Running bool `json:"running"`
}

type okResponse struct {
	OK bool `json:"ok"`
}

// execRequest is POST …/exec's body.
type execRequest struct {
	Argv      []string `json:"argv"`
	TimeoutMS int64    `json:"timeout_ms,omitempty"`
	Cwd       string   `json:"cwd,omitempty"`
}

// SSE event names of an exec stream.
const (
	eventStdout = "stdout"
	eventStderr = "stderr"
	eventExit   = "exit"
	eventError  = "error"
)

type exitEvent struct {
	ExitCode *int `json:"exit_code"`
}

// sessionRequest is POST …/session's body.
type sessionRequest struct {
	ID  string            `json:"id,omitempty"`
	Cwd string            `json:"cwd,omitempty"`
	Env map[string]string `json:"env,omitempty"`
}

type sessionResponse struct {
	ID string `json:"id"`
}

type deleteSessionResponse struct {
	Success   bool   `json:"success"`
	SessionID string `json:"sessionId"`
}

type tunnelRequest struct {
	Name string `json:"name,omitempty"`
}

// TunnelInfo is the bridge's description of a tunnel to a sandbox port.
type TunnelInfo struct {
	ID        string `json:"id"`
	Port      int    `json:"port"`
	URL       string `json:"url"`
	Hostname  string `json:"hostname"`
	CreatedAt string `json:"createdAt"`
	Name      string `json:"name,omitempty"`
}

// PTY query parameters and control frames (text JSON frames; terminal bytes
// travel in binary frames both ways).
const (
	ptyQueryCols    = "cols"
	ptyQueryRows    = "rows"
	ptyQueryShell   = "shell"
	ptyQuerySession = "session"
)

type ptyControl struct {
	Type    string `json:"type"` // client: "resize"; server: "ready", "exit", "error"
	Cols    int    `json:"cols,omitempty"`
	Rows    int    `json:"rows,omitempty"`
	Code    *int   `json:"code,omitempty"`
	Signal  string `json:"signal,omitempty"`
	Message string `json:"message,omitempty"`
}

// openAPIDoc is the part of GET /v1/openapi.json the version check reads.
type openAPIDoc struct {
	OpenAPI string `json:"openapi"`
	Info    struct {
		Title   string `json:"title"`
		Version string `json:"version"`
	} `json:"info"`
	Paths map[string]map[string]any `json:"paths"`
}

// requiredPaths are the OpenAPI paths (with their methods) the adapter calls;
// the start-up check names any the bridge lacks.
var requiredPaths = map[string][]string{
	"/v1/sandbox/{id}":               {"delete"},
	"/v1/sandbox/{id}/running":       {"get"},
	"/v1/sandbox/{id}/exec":          {"post"},
	"/v1/sandbox/{id}/file/{path}":   {"get", "put"},
	"/v1/sandbox/{id}/persist":       {"post"},
	"/v1/sandbox/{id}/hydrate":       {"post"},
	"/v1/sandbox/{id}/tunnel/{port}": {"post", "delete"},
	"/v1/sandbox/{id}/session":       {"post"},
	"/v1/sandbox/{id}/session/{sid}": {"delete"},
	"/v1/sandbox/{id}/pty":           {"get"},
}
