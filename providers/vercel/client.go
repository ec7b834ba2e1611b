package vercel

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/perimeter-sdk/perimeter/internal/httpretry"
	"github.com/perimeter-sdk/perimeter/sandbox"
)

const providerName = "vercel"

// DefaultBaseURL is the Vercel REST API.
const DefaultBaseURL = "https://api.vercel.com"

// APIError is a non-2xx answer of the Vercel API. Errors returned by this
// package wrap it where the API gave one, so errors.As reaches it.
type APIError struct {
	Status  int    // the HTTP status
	Code    string // the body's error.code, such as "sandbox_stopped"
	Message string // the body's error.message
}

// Error reads as "HTTP 404 not_found: Sandbox not found: NAME".
func (e *APIError) Error() string {
	if e.Code == "" && e.Message == "" {
		return "HTTP " + strconv.Itoa(e.Status)
	}
	return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Code, e.Message)
}

// kind maps an API error to the contract's error kinds.
func (e *APIError) kind() error {
	switch {
	case e.Status == http.StatusNotFound:
		return sandbox.ErrNotFound
	case e.Status == http.StatusBadRequest:
		return sandbox.ErrInvalidArgument
	case e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden:
		return sandbox.ErrPermissionDenied
	case e.Status == http.StatusConflict:
		return sandbox.ErrAlreadyExists
	case e.Status == http.StatusGone && e.Code == "snapshot_not_found":
		return sandbox.ErrNotFound
	case e.Status == http.StatusTooManyRequests || e.Status == http.StatusPaymentRequired:
		return sandbox.ErrResourceExhausted
	case e.Status == http.StatusRequestTimeout || e.Status == http.StatusGatewayTimeout:
		return sandbox.ErrTimeout
	case e.Status == http.StatusGone, e.Status == http.StatusUnprocessableEntity, e.Status >= 500:
		return sandbox.ErrUnavailable
	}
	return sandbox.ErrInvalidArgument
}

// stopped reports whether the error says the session is no longer running,
// which the SDK answers by resuming the sandbox and retrying once.
func (e *APIError) stopped() bool {
	return e.Status == http.StatusGone && e.Code != "snapshot_not_found" ||
		e.Status == http.StatusUnprocessableEntity && (e.Code == "sandbox_stopping" || e.Code == "sandbox_snapshotting")
}

// Client is a small client of the Vercel Sandbox REST API: it adds the token
// and teamId, retries as Vercel's SDK does, and decodes error bodies into
// *APIError. It is the escape hatch for endpoints the adapter does not use.
type Client struct {
	base    *url.URL
	team    string
	project string
	tokens  TokenSource
	http    *http.Client
	retry   httpretry.Policy
}

// body is a request body that can be sent again on a retry.
type body struct {
	contentType string
	open        func() (io.ReadCloser, error)
	header      http.Header
}

func jsonBody(v any) (*body, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return &body{contentType: "application/json", open: func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}}, nil
}

// TeamID is the team the client acts for.
func (c *Client) TeamID() string { return c.team }

// ProjectID is the project the client acts for.
func (c *Client) ProjectID() string { return c.project }

// Do sends one API request: path is absolute ("/v2/sandboxes"), query gets
// teamId added, and a non-nil in is sent as JSON. A non-2xx answer is
// returned as an *APIError after the retries; on success the caller closes
// the response body. Only idempotent requests are retried (see [Idempotent]):
// a command start, a sandbox creation, a snapshot or a timeout extension is
// sent once, so a lost answer never makes it happen twice.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, in any) (*http.Response, error) {
	var b *body
	if in != nil {
		var err error
		if b, err = jsonBody(in); err != nil {
			return nil, err
		}
	}
	return c.do(ctx, method, path, query, b)
}

// Idempotent reports whether sending the request twice has the effect of
// sending it once, so that the client may retry it: every method but POST,
// and the POST routes that read, replace or stop (fs/read, fs/write, kill,
// stop, network-policy).
func Idempotent(method, path string) bool {
	if method != http.MethodPost {
		return true
	}
	for _, suffix := range []string{"/fs/read", "/fs/write", "/kill", "/stop", "/network-policy"} {
		if strings.HasSuffix(path, suffix) {
			return true
		}
	}
	return false
}

func (c *Client) do(ctx context.Context, method, path string, query url.Values, b *body) (*http.Response, error) {
	policy := c.retry
	idempotent := Idempotent(method, path)
	if !idempotent {
		// Vercel's API has no idempotency keys: a command start, a creation,
		// a snapshot or a timeout extension is sent once, whatever failed.
		policy.Retries = 0
	}
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	q := url.Values{}
	for k, v := range query {
		q[k] = v
	}
	q.Set("teamId", c.team)
	u.RawQuery = q.Encode()

	return policy.Do(ctx, idempotent, func() (*http.Response, error) {
		token, err := c.tokens.Token(ctx)
		if err != nil {
			return nil, err
		}
		var rd io.ReadCloser
		if b != nil {
			if rd, err = b.open(); err != nil {
				return nil, err
			}
		}
		req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
		if err != nil {
			if rd != nil {
				rd.Close()
			}
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("User-Agent", "perimeter-vercel")
		if b != nil {
			req.Header.Set("Content-Type", b.contentType)
			for k, v := range b.header {
				req.Header[k] = v
			}
		} else {
			req.Header.Set("Content-Type", "application/json")
		}
		return c.http.Do(req)
	}, func(resp *http.Response) error { return readAPIError(resp) })
}

func readAPIError(resp *http.Response) *APIError {
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &APIError{Status: resp.StatusCode}
	var parsed struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(raw, &parsed) == nil && (parsed.Error.Code != "" || parsed.Error.Message != "") {
		e.Code, e.Message = parsed.Error.Code, parsed.Error.Message
	} else if len(bytes.TrimSpace(raw)) > 0 {
		e.Message = strings.TrimSpace(string(raw[:min(len(raw), 512)]))
	}
	return e
}

// decodeJSON reads a JSON response into out and closes it.
func decodeJSON(resp *http.Response, out any) error {
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(out); err != nil {
		return fmt.Errorf("decoding the %s response: %w", resp.Request.URL.Path, err)
	}
	return nil
}

// call is Do for JSON in and out.
func (c *Client) call(ctx context.Context, method, path string, query url.Values, in, out any) error {
	resp, err := c.Do(ctx, method, path, query, in)
	if err != nil {
		return err
	}
	if out == nil {
		resp.Body.Close()
		return nil
	}
	return decodeJSON(resp, out)
}

// wrap turns any error of the client into the contract's error.
func wrap(sandboxID, op string, err error) error {
	if err == nil {
		return nil
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return sandbox.NewError(providerName, sandboxID, op, ae.kind(), err)
	}
	var se *sandbox.Error
	if errors.As(err, &se) {
		return err
	}
	return sandbox.NewError(providerName, sandboxID, op, nil, err)
}
