package daytona

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

const providerName = "daytona"

// DefaultAPIURL is Daytona Cloud's control API.
const DefaultAPIURL = "https://app.daytona.io/api"

// SDKVersion is the Daytona API version the adapter is written against. It
// is sent as X-Daytona-SDK-Version, which the daemon reads to choose its
// output formats (split command logs as JSON from 0.167.0 on).
const SDKVersion = "0.190.0"

// APIError is a non-2xx answer of the control API or a sandbox's toolbox.
// Errors returned by this package wrap it where Daytona gave one, so
// errors.As reaches it.
type APIError struct {
	Status  int    // the HTTP status
	Code    string // the body's code (toolbox) or error (API), if any
	Message string // the body's message
	// Daemon is true when the body came from the sandbox's daemon (it names
	// the request's path and method), false when the control API or the
	// toolbox proxy answered.
	Daemon bool
}

// Error reads as "HTTP 404: file not found".
func (e *APIError) Error() string {
	s := "HTTP " + strconv.Itoa(e.Status)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// kind maps an API error to the contract's error kinds.
func (e *APIError) kind() error {
	switch s := e.Status; {
	case s == http.StatusNotFound:
		return sandbox.ErrNotFound
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		return sandbox.ErrPermissionDenied
	case s == http.StatusConflict:
		return sandbox.ErrAlreadyExists
	case s == http.StatusTooManyRequests || s == http.StatusPaymentRequired:
		return sandbox.ErrResourceExhausted
	case s == http.StatusRequestTimeout || s == http.StatusGatewayTimeout:
		return sandbox.ErrTimeout
	case s >= 500:
		return sandbox.ErrUnavailable
	}
	return sandbox.ErrInvalidArgument
}

// Client is a small client of Daytona's control API and of sandboxes'
// toolbox API: it adds the credentials and version headers, retries
// transient failures, and decodes error bodies into *APIError. It is the
// escape hatch for endpoints the adapter does not use.
type Client struct {
	base  *url.URL
	token string
	org   string // sent only with a JWT
	http  *http.Client
	retry httpretry.Policy
}

// body is a request body. A body with open can be sent again on a retry;
// one with a reader is sent once.
type body struct {
	contentType string
	open        func() io.Reader
	once        io.Reader
}

func jsonBody(v any) (*body, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return &body{contentType: "application/json", open: func() io.Reader { return bytes.NewReader(b) }}, nil
}

// APIURL returns the control API's base URL.
func (c *Client) APIURL() string { return c.base.String() }

// API sends one control API request: path is relative to the base URL
// ("/sandbox"), a non-nil in is sent as JSON. A non-2xx answer is returned
// as an *APIError; on success the caller closes the response body. GET,
// PUT and DELETE are retried on network errors, 5xx and 429; POST only
// when the request cannot have run (a refused connection, a 429).
func (c *Client) API(ctx context.Context, method, path string, query url.Values, in any) (*http.Response, error) {
	var b *body
	if in != nil {
		var err error
		if b, err = jsonBody(in); err != nil {
			return nil, err
		}
	}
	return c.do(ctx, method, c.apiURL(path, query), b, method != http.MethodPost)
}

func (c *Client) apiURL(path string, query url.Values) string {
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawPath = ""
	u.RawQuery = query.Encode()
	return u.String()
}

// Toolbox sends one request to a sandbox's toolbox: base is the sandbox's
// toolbox URL ({toolboxProxyUrl}/{sandboxId}) and path an endpoint such as
// "/files/info". Errors and retries as for API.
func (c *Client) Toolbox(ctx context.Context, base, method, path string, query url.Values, in any) (*http.Response, error) {
	var b *body
	if in != nil {
		var err error
		if b, err = jsonBody(in); err != nil {
			return nil, err
		}
	}
	return c.do(ctx, method, toolboxURL(base, path, query), b, method != http.MethodPost)
}

func toolboxURL(base, path string, query url.Values) string {
	s := strings.TrimSuffix(base, "/") + path
	if len(query) > 0 {
		s += "?" + query.Encode()
	}
	return s
}

// header adds the credentials and the client's identity to h.
func (c *Client) header(h http.Header) {
	h.Set("Authorization", "Bearer "+c.token)
	if c.org != "" {
		h.Set("X-Daytona-Organization-ID", c.org)
	}
	h.Set("X-Daytona-Source", "perimeter")
	h.Set("X-Daytona-SDK-Version", SDKVersion)
	h.Set("User-Agent", "perimeter-daytona")
}

func (c *Client) do(ctx context.Context, method, rawURL string, b *body, idem bool) (*http.Response, error) {
	policy := c.retry
	if b != nil && b.open == nil {
		policy.Retries = 0 // a body read from a one-shot reader cannot be sent again
	}
	return policy.Do(ctx, idem, func() (*http.Response, error) {
		var rd io.Reader
		if b != nil {
			if b.open != nil {
				rd = b.open()
			} else {
				rd = b.once
			}
		}
		req, err := http.NewRequestWithContext(ctx, method, rawURL, rd)
		if err != nil {
			return nil, err
		}
		c.header(req.Header)
		if b != nil {
			req.Header.Set("Content-Type", b.contentType)
		}
		return c.http.Do(req)
	}, func(resp *http.Response) error { return readAPIError(resp) })
}

func readAPIError(resp *http.Response) *APIError {
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &APIError{Status: resp.StatusCode}
	var w wireError
	if json.Unmarshal(raw, &w) == nil && (w.Message != nil || w.Code != "" || w.Error != "") {
		switch m := w.Message.(type) {
		case string:
			e.Message = m
		case []any:
			parts := make([]string, 0, len(m))
			for _, p := range m {
				parts = append(parts, fmt.Sprint(p))
			}
			e.Message = strings.Join(parts, "; ")
		}
		e.Code = w.Code
		if e.Code == "" {
			e.Code = w.Error
		}
		e.Daemon = w.Path != "" && w.Method != ""
	} else if t := bytes.TrimSpace(raw); len(t) > 0 {
		e.Message = string(t[:min(len(t), 512)])
	}
	return e
}

// decodeJSON reads a JSON response into out and closes it.
func decodeJSON(resp *http.Response, out any) error {
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(out); err != nil {
		return fmt.Errorf("decoding the answer to %s %s: %w", resp.Request.Method, resp.Request.URL.Path, err)
	}
	return nil
}

// finish decodes resp into out, or discards its body when out is nil.
func finish(resp *http.Response, err error, out any) error {
	if err != nil {
		return err
	}
	if out == nil {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		return nil
	}
	return decodeJSON(resp, out)
}

// api is API with JSON in and out.
func (c *Client) api(ctx context.Context, method, path string, query url.Values, in, out any) error {
	resp, err := c.API(ctx, method, path, query, in)
	return finish(resp, err, out)
}

// toolbox is Toolbox with JSON in and out.
func (c *Client) toolbox(ctx context.Context, base, method, path string, query url.Values, in, out any) error {
	resp, err := c.Toolbox(ctx, base, method, path, query, in)
	return finish(resp, err, out)
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
