package cloudflare

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// APIError is an error the bridge reported: a JSON error body of a non-2xx
// answer, or an SSE "error" event of an exec stream (Status 200). Errors
// returned by this package wrap it where the bridge gave one, so errors.As
// reaches it.
type APIError struct {
	Status  int    // the HTTP status; 200 for an SSE error event
	Code    string // the bridge's stable code, such as "workspace_read_not_found"
	Message string // the bridge's human-readable text
}

// Error reads as "HTTP 404 workspace_read_not_found: File not found: /workspace/x".
func (e *APIError) Error() string {
	if e.Status == http.StatusOK {
		return fmt.Sprintf("exec stream error %s: %s", e.Code, e.Message)
	}
	if e.Code == "" && e.Message == "" {
		return "HTTP " + strconv.Itoa(e.Status)
	}
	return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Code, e.Message)
}

// Client is a plain net/http client of the Sandbox bridge's /v1 routes. It
// is safe for concurrent use. Its methods return *APIError for the bridge's
// errors and plain errors for transport failures; the [Provider] maps both
// to the contract's error kinds.
type Client struct {
	base *url.URL
	key  string
	http *http.Client
}

// NewClient returns a client of the bridge at baseURL (such as
// "https://sandbox-bridge.example.workers.dev"), sending apiKey as
// "Authorization: Bearer". An empty key sends no Authorization header (a
// bridge without SANDBOX_API_KEY skips authentication). A nil hc means a
// client without an overall timeout, since exec streams last as long as
// their commands.
func NewClient(baseURL, apiKey string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("bridge URL %q is not an http(s) URL", baseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("bridge URL %q must not carry a query, fragment or credentials", u.Redacted())
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	if hc == nil {
		hc = &http.Client{}
	}
	return &Client{base: u, key: apiKey, http: hc}, nil
}

// BaseURL returns the bridge's base URL.
func (c *Client) BaseURL() string { return c.base.String() }

// NewID mints a sandbox ID the way the bridge's POST /v1/sandbox does: 16
// random bytes as 26 characters of lowercase base32 without padding. Any ID
// accepted by [ValidID] names a sandbox; the bridge maps it to a container on
// first use.
func NewID() string {
	var b [16]byte
	rand.Read(b[:])
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

func (c *Client) newRequest(ctx context.Context, method, route string, q url.Values, body io.Reader) (*http.Request, error) {
	raw := c.base.String() + route
	if len(q) > 0 {
		raw += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, raw, body)
	if err != nil {
		return nil, err
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	return req, nil
}

// send performs req and returns the response when its status is 2xx; any
// other status is read as an *APIError.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, err
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, readAPIError(resp)
}

func readAPIError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &APIError{Status: resp.StatusCode}
	var b errorBody
	if json.Unmarshal(data, &b) == nil && (b.Code != "" || b.Error != "") {
		e.Code, e.Message = b.Code, b.Error
	} else {
		e.Message = strings.TrimSpace(string(data))
	}
	return e
}

// call sends a JSON request (in may be nil) and decodes a JSON answer into
// out (which may be nil).
func (c *Client) call(ctx context.Context, method, route string, q url.Values, hdr http.Header, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	}
	req, err := c.newRequest(ctx, method, route, q, body)
	if err != nil {
		return err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decoding the bridge's answer to %s %s: %w", method, route, err)
	}
	return nil
}

// VersionError is the start-up check's finding that the bridge is not the
// version this package targets, or lacks routes it calls.
type VersionError struct {
	Found   string   // the info.version the bridge reported
	Want    string   // TargetVersion
	Missing []string // "METHOD /path" of required routes absent from its document
}

// Error names what was found and what is wanted.
func (e *VersionError) Error() string {
	var b strings.Builder
	if e.Found != e.Want {
		fmt.Fprintf(&b, "the bridge's OpenAPI document reports version %q; this package targets %q (redeploy the bridge from the @cloudflare/sandbox 0.x template, or upgrade Perimeter)", e.Found, e.Want)
	}
	if len(e.Missing) > 0 {
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		b.WriteString("the bridge lacks routes this package calls: " + strings.Join(e.Missing, ", "))
	}
	return b.String()
}

// CheckVersion fetches GET /v1/openapi.json and returns a *VersionError when
// the bridge is not TargetVersion or lacks a route the adapter calls.
func (c *Client) CheckVersion(ctx context.Context) error {
	var doc openAPIDoc
	if err := c.call(ctx, http.MethodGet, routeOpenAPI, nil, nil, nil, &doc); err != nil {
		return err
	}
	ve := &VersionError{Found: doc.Info.Version, Want: TargetVersion}
	for p, methods := range requiredPaths {
		for _, m := range methods {
			if _, ok := doc.Paths[p][m]; !ok {
				ve.Missing = append(ve.Missing, strings.ToUpper(m)+" "+p)
			}
		}
	}
	slices.Sort(ve.Missing)
	if ve.Found != ve.Want || len(ve.Missing) > 0 {
		return ve
	}
	return nil
}

// Health calls GET /health (never authenticated) and returns nil when the
// bridge answers {ok:true}.
func (c *Client) Health(ctx context.Context) error {
	req, err := c.newRequest(ctx, http.MethodGet, routeHealth, nil, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	defer resp.Body.Close()
	var out struct {
		OK     bool     `json:"ok"`
		Errors []string `json:"errors"`
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	json.Unmarshal(data, &out)
	if resp.StatusCode == http.StatusOK && out.OK {
		return nil
	}
	msg := strings.Join(out.Errors, "; ")
	if msg == "" {
		msg = strings.TrimSpace(string(data))
	}
	return &APIError{Status: resp.StatusCode, Message: "health check failed: " + msg}
}

// CreateSandbox asks the bridge to mint an ID (POST /v1/sandbox). The
// container starts on first use. [NewID] does the same without a request.
func (c *Client) CreateSandbox(ctx context.Context) (string, error) {
	var out createSandboxResponse
	if err := c.call(ctx, http.MethodPost, routeSandbox, nil, nil, nil, &out); err != nil {
		return "", err
	}
	return out.ID, nil
}

// Running calls GET …/running, which wakes or starts the container.
func (c *Client) Running(ctx context.Context, id string) (bool, error) {
	var out runningResponse
	err := c.call(ctx, http.MethodGet, sandboxRoute(id, "running"), nil, nil, nil, &out)
	return out.Running, err
}

// DeleteSandbox destroys the sandbox's container (DELETE …); an unknown ID
// is not an error.
func (c *Client) DeleteSandbox(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodDelete, sandboxRoute(id), nil, nil, nil, nil)
}

// CreateSession creates a bridge session with a working directory and
// environment (POST …/session); an empty sid lets the bridge choose one.
func (c *Client) CreateSession(ctx context.Context, id, sid, cwd string, env map[string]string) (string, error) {
	var out sessionResponse
	err := c.call(ctx, http.MethodPost, sandboxRoute(id, "session"), nil, nil,
		&sessionRequest{ID: sid, Cwd: cwd, Env: env}, &out)
	if err == nil && out.ID == "" {
		err = errors.New("the bridge created a session but returned no id")
	}
	return out.ID, err
}

// DeleteSession deletes a bridge session (DELETE …/session/SID). The bridge
// answers 200 with the SDK's result.
func (c *Client) DeleteSession(ctx context.Context, id, sid string) error {
	var out deleteSessionResponse
	return c.call(ctx, http.MethodDelete, sandboxRoute(id, "session", sid), nil, nil, nil, &out)
}

// ExecOptions are the optional parts of an exec request.
type ExecOptions struct {
	// Session scopes the command to a bridge session (its cwd and env).
	Session string
	// Cwd is the working directory, inside /workspace.
	Cwd string
	// Timeout is sent as timeout_ms; zero sends none.
	Timeout time.Duration
}

// Exec runs argv (POST …/exec) and decodes its SSE stream as it arrives:
// stdout and stderr chunks are base64-decoded and written to stdout and
// stderr (nil discards) before the next event is read. It returns the exit
// code of the "exit" event; an "error" event is an *APIError (Status 200);
// a stream that ends without either is an error wrapping
// io.ErrUnexpectedEOF, never a success. Errors before the stream starts are
// *APIError with the bridge's status.
func (c *Client) Exec(ctx context.Context, id string, argv []string, o *ExecOptions, stdout, stderr io.Writer) (int, error) {
	if o == nil {
		o = &ExecOptions{}
	}
	in := execRequest{Argv: argv, Cwd: o.Cwd}
	if o.Timeout > 0 {
		in.TimeoutMS = max(o.Timeout.Milliseconds(), 1)
	}
	data, err := json.Marshal(in)
	if err != nil {
		return 0, err
	}
	req, err := c.newRequest(ctx, http.MethodPost, sandboxRoute(id, "exec"), nil, bytes.NewReader(data))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	if o.Session != "" {
		req.Header.Set(headerSession, o.Session)
	}
	resp, err := c.send(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return 0, fmt.Errorf("exec answered %q, not an event stream", ct)
	}
	code, err := decodeExec(resp.Body, stdout, stderr)
	if err != nil && ctx.Err() != nil {
		return 0, ctx.Err()
	}
	return code, err
}

// ReadFile opens the file at abs, an absolute path under /workspace (GET
// …/file/…); the body streams raw bytes.
func (c *Client) ReadFile(ctx context.Context, id, session, abs string) (io.ReadCloser, error) {
	req, err := c.newRequest(ctx, http.MethodGet, fileRoute(id, abs), nil, nil)
	if err != nil {
		return nil, err
	}
	if session != "" {
		req.Header.Set(headerSession, session)
	}
	resp, err := c.send(req)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// ErrTooLarge is returned, before anything is sent, for a body over
// [MaxFileSize].
var ErrTooLarge = fmt.Errorf("the bridge accepts at most %d bytes (32 MiB) per file write or hydrate", MaxFileSize)

// WriteFile creates or replaces the file at abs (PUT …/file/…) with size
// bytes read from r. A size over MaxFileSize is refused with an error
// wrapping ErrTooLarge before any byte is sent.
func (c *Client) WriteFile(ctx context.Context, id, session, abs string, r io.Reader, size int64) error {
	if size > MaxFileSize {
		return fmt.Errorf("writing %s (%d bytes): %w", abs, size, ErrTooLarge)
	}
	req, err := c.newRequest(ctx, http.MethodPut, fileRoute(id, abs), nil, io.LimitReader(r, size))
	if err != nil {
		return err
	}
	req.ContentLength = size
	if size == 0 {
		req.Body = http.NoBody
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if session != "" {
		req.Header.Set(headerSession, session)
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var out okResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || !out.OK {
		return fmt.Errorf("the bridge did not confirm writing %s", abs)
	}
	return nil
}

// Persist streams an uncompressed tar of /workspace (POST …/persist), with
// entries "./…"; excludes are paths relative to /workspace left out, and
// may not contain "..".
func (c *Client) Persist(ctx context.Context, id string, excludes []string) (io.ReadCloser, error) {
	var q url.Values
	if len(excludes) > 0 {
		q = url.Values{"excludes": {strings.Join(excludes, ",")}}
	}
	req, err := c.newRequest(ctx, http.MethodPost, sandboxRoute(id, "persist"), q, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.send(req)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Hydrate extracts a tar of size bytes read from r into /workspace (POST
// …/hydrate). The bridge takes 1 byte to 32 MiB; other sizes are refused
// before anything is sent.
func (c *Client) Hydrate(ctx context.Context, id string, r io.Reader, size int64) error {
	if size > MaxFileSize {
		return fmt.Errorf("hydrating %d bytes: %w", size, ErrTooLarge)
	}
	if size < 1 {
		return errors.New("hydrate needs a non-empty tar archive")
	}
	req, err := c.newRequest(ctx, http.MethodPost, sandboxRoute(id, "hydrate"), nil, io.LimitReader(r, size))
	if err != nil {
		return err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// CreateTunnel creates or reuses the tunnel to port (POST …/tunnel/PORT):
// an ephemeral quick tunnel when name is empty, else a named one whose
// subdomain prefix is name.
func (c *Client) CreateTunnel(ctx context.Context, id string, port int, name string) (*TunnelInfo, error) {
	var in any
	if name != "" {
		in = &tunnelRequest{Name: name}
	}
	var out TunnelInfo
	if err := c.call(ctx, http.MethodPost, sandboxRoute(id, "tunnel", portElem(port)), nil, nil, in, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteTunnel removes the tunnel to port; an absent tunnel is not an error.
func (c *Client) DeleteTunnel(ctx context.Context, id string, port int) error {
	return c.call(ctx, http.MethodDelete, sandboxRoute(id, "tunnel", portElem(port)), nil, nil, nil, nil)
}

// ptyURL is the WebSocket URL of the sandbox's terminal.
func (c *Client) ptyURL(id string, rows, cols int, shell, session string) string {
	u := *c.base
	switch u.Scheme {
	case "https":
		u.Scheme = "wss"
	default:
		u.Scheme = "ws"
	}
	u.Path = c.base.Path + sandboxRoute(id, "pty")
	q := url.Values{ptyQueryCols: {strconv.Itoa(cols)}, ptyQueryRows: {strconv.Itoa(rows)}}
	if shell != "" {
		q.Set(ptyQueryShell, shell)
	}
	if session != "" {
		q.Set(ptyQuerySession, session)
	}
	u.RawQuery = q.Encode()
	return u.String()
}
