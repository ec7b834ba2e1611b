// Package tunnelsfake is a local fake of Anthropic's tunnels API (beta,
// mcp-tunnels-2026-06-22) for tests: tunnels, their connector tokens and
// their CA certificates, in memory, on a loopback httptest server.
//
// Its wire shapes follow the Go SDK's types and paths (v2.15.0,
// betatunnel.go and betatunnelcertificate.go): POST/GET /v1/tunnels,
// GET /v1/tunnels/{id}, POST /v1/tunnels/{id}/archive, reveal_token and
// rotate_token, and /v1/tunnels/{id}/certificates[/{cid}[/archive]], with
// cursor pages ({"data":[...],"next_page":...}). Every request must carry the
// API key, an anthropic-version header and the beta header; errors use the
// API's envelope ({"type":"error","error":{"type":...,"message":...},
// "request_id":...}).
//
// What the SDK does not pin down, the fake chooses and documents here: a
// third active CA, a malformed CA, and token or certificate calls on an
// archived tunnel are 400 invalid_request_error; an unknown ID is 404
// not_found_error; a wrong key is 401 authentication_error. Those answers
// carry x-should-retry: false so the SDK does not retry them.
package tunnelsfake

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Beta is the beta header value every request must carry.
const Beta = "mcp-tunnels-2026-06-22"

// Request is what the fake saw of one request (never the token: the
// fake's answers are not recorded).
type Request struct {
	Method, Path, Query string
	Header              http.Header
	Body                string
}

// Server is a running fake. Close it when done.
type Server struct {
	*httptest.Server
	apiKey string

	mu       sync.Mutex
	seq      int
	tunnels  []*tunnel // creation order
	requests []Request
}

type tunnel struct {
	ID          string     `json:"id"`
	Type        string     `json:"type"`
	DisplayName *string    `json:"display_name"`
	Domain      string     `json:"domain"`
	CreatedAt   time.Time  `json:"created_at"`
	ArchivedAt  *time.Time `json:"archived_at"`

	token   string
	tokenID string
	certs   []*certificate
}

type certificate struct {
	ID          string     `json:"id"`
	Type        string     `json:"type"`
	TunnelID    string     `json:"tunnel_id"`
	Fingerprint string     `json:"fingerprint"`
	CreatedAt   time.Time  `json:"created_at"`
	ExpiresAt   time.Time  `json:"expires_at"`
	ArchivedAt  *time.Time `json:"archived_at"`

	pem string
}

// New starts a fake that accepts apiKey (as x-api-key or a bearer token).
func New(apiKey string) *Server {
	s := &Server{apiKey: apiKey}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// Requests returns the requests answered so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// Token returns the tunnel's current connector token, so a test can compare
// it with what was written to a file.
func (s *Server) Token(tunnelID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.find(tunnelID); t != nil {
		return t.token
	}
	return ""
}

// CertificatePEM returns the PEM registered as certificateID.
func (s *Server) CertificatePEM(tunnelID, certificateID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.find(tunnelID); t != nil {
		for _, c := range t.certs {
			if c.ID == certificateID {
				return c.pem
			}
		}
	}
	return ""
}

func (s *Server) find(id string) *tunnel {
	for _, t := range s.tunnels {
		if t.ID == id {
			return t
		}
	}
	return nil
}

func apiError(w http.ResponseWriter, status int, kind, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Request-Id", "req_fake")
	if status < 500 && status != http.StatusTooManyRequests {
		w.Header().Set("X-Should-Retry", "false")
	}
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{
		"type":       "error",
		"error":      map[string]any{"type": kind, "message": msg},
		"request_id": "req_fake",
	})
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Request-Id", "req_fake")
	json.NewEncoder(w).Encode(v)
}

func (s *Server) newID(prefix string) string {
	s.seq++
	b := make([]byte, 8)
	rand.Read(b)
	return fmt.Sprintf("%s%02d%s", prefix, s.seq, hex.EncodeToString(b))
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body := make([]byte, 0, 512)
	if r.Body != nil {
		buf := make([]byte, 4096)
		for len(body) <= 64<<10 {
			n, err := r.Body.Read(buf)
			body = append(body, buf[:n]...)
			if err != nil {
				break
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: string(body)})

	key := r.Header.Get("X-Api-Key")
	if key == "" {
		key, _ = strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	switch {
	case key == "":
		apiError(w, http.StatusUnauthorized, "authentication_error", "x-api-key header is required")
		return
	case key != s.apiKey:
		apiError(w, http.StatusUnauthorized, "authentication_error", "invalid x-api-key")
		return
	case r.Header.Get("Anthropic-Version") == "":
		apiError(w, http.StatusBadRequest, "invalid_request_error", "anthropic-version: header is required")
		return
	}
	if !hasBeta(r.Header) {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "this endpoint requires the anthropic-beta header "+Beta)
		return
	}
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/v1/tunnels"), "/")
	if !strings.HasPrefix(r.URL.Path, "/v1/tunnels") || parts[0] != "" {
		apiError(w, http.StatusNotFound, "not_found_error", "Not Found")
		return
	}
	parts = parts[1:] // after /v1/tunnels/
	if len(parts) == 1 && parts[0] == "" {
		parts = nil
	}
	route := func(method string, n int, tail ...string) bool {
		if r.Method != method || len(parts) != n {
			return false
		}
		for i, want := range tail {
			if want != "*" && parts[i] != want {
				return false
			}
		}
		return true
	}
	var t *tunnel
	if len(parts) > 0 {
		if t = s.find(parts[0]); t == nil {
			apiError(w, http.StatusNotFound, "not_found_error", "tunnel "+parts[0]+" not found")
			return
		}
	}
	switch {
	case route(http.MethodPost, 0):
		s.create(w, body)
	case route(http.MethodGet, 0):
		all := []*tunnel{}
		for _, t := range slices.Backward(s.tunnels) {
			if t.ArchivedAt == nil || r.URL.Query().Get("include_archived") == "true" {
				all = append(all, t)
			}
		}
		page(w, r, all)
	case route(http.MethodGet, 1):
		reply(w, t)
	case route(http.MethodPost, 2, "*", "archive"):
		if t.ArchivedAt == nil {
			now := time.Now().UTC()
			t.ArchivedAt = &now
			for _, c := range t.certs {
				if c.ArchivedAt == nil {
					c.ArchivedAt = &now
				}
			}
			t.token, t.tokenID = "", ""
		}
		reply(w, t)
	case route(http.MethodPost, 2, "*", "reveal_token"), route(http.MethodPost, 2, "*", "rotate_token"):
		if t.ArchivedAt != nil {
			apiError(w, http.StatusBadRequest, "invalid_request_error", "tunnel "+t.ID+" is archived")
			return
		}
		if parts[1] == "rotate_token" {
			var p struct {
				Reason *string `json:"reason"`
			}
			if len(body) > 0 {
				if err := strictDecode(body, &p); err != nil {
					apiError(w, http.StatusBadRequest, "invalid_request_error", err.Error())
					return
				}
			}
			s.newToken(t)
		}
		reply(w, map[string]any{"id": t.tokenID, "type": "tunnel_token", "tunnel_token": t.token})
	case route(http.MethodPost, 2, "*", "certificates"):
		s.addCert(w, t, body)
	case route(http.MethodGet, 2, "*", "certificates"):
		all := []*certificate{}
		for _, c := range slices.Backward(t.certs) {
			if c.ArchivedAt == nil || r.URL.Query().Get("include_archived") == "true" {
				all = append(all, c)
			}
		}
		page(w, r, all)
	case route(http.MethodGet, 3, "*", "certificates"):
		if c := findCert(t, parts[2]); c != nil {
			reply(w, c)
			return
		}
		apiError(w, http.StatusNotFound, "not_found_error", "certificate "+parts[2]+" not found")
	case route(http.MethodPost, 4, "*", "certificates", "*", "archive"):
		c := findCert(t, parts[2])
		if c == nil {
			apiError(w, http.StatusNotFound, "not_found_error", "certificate "+parts[2]+" not found")
			return
		}
		if c.ArchivedAt == nil {
			now := time.Now().UTC()
			c.ArchivedAt = &now
		}
		reply(w, c)
	default:
		apiError(w, http.StatusNotFound, "not_found_error", "Not Found")
	}
}

func hasBeta(h http.Header) bool {
	for _, v := range h.Values("Anthropic-Beta") {
		for _, b := range strings.Split(v, ",") {
			if strings.TrimSpace(b) == Beta {
				return true
			}
		}
	}
	return false
}

func strictDecode(body []byte, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid request body: %v", err)
	}
	return nil
}

func (s *Server) create(w http.ResponseWriter, body []byte) {
	var p struct {
		DisplayName *string `json:"display_name"`
	}
	if len(body) > 0 {
		if err := strictDecode(body, &p); err != nil {
			apiError(w, http.StatusBadRequest, "invalid_request_error", err.Error())
			return
		}
	}
	if p.DisplayName != nil && (len(*p.DisplayName) < 1 || len(*p.DisplayName) > 255) {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "display_name: must be 1-255 characters")
		return
	}
	id := s.newID("tnl_")
	t := &tunnel{ID: id, Type: "tunnel", DisplayName: p.DisplayName, Domain: strings.ToLower(id[4:]) + ".tunnel.example", CreatedAt: time.Now().UTC()}
	s.newToken(t)
	s.tunnels = append(s.tunnels, t)
	reply(w, t)
}

func (s *Server) newToken(t *tunnel) {
	b := make([]byte, 32)
	rand.Read(b)
	t.token = "tt_" + hex.EncodeToString(b)
	t.tokenID = s.newID("ttok_")
}

func findCert(t *tunnel, id string) *certificate {
	for _, c := range t.certs {
		if c.ID == id {
			return c
		}
	}
	return nil
}

func (s *Server) addCert(w http.ResponseWriter, t *tunnel, body []byte) {
	if t.ArchivedAt != nil {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "tunnel "+t.ID+" is archived")
		return
	}
	var p struct {
		PEM *string `json:"ca_certificate_pem"`
	}
	if err := strictDecode(body, &p); err != nil {
		apiError(w, http.StatusBadRequest, "invalid_request_error", err.Error())
		return
	}
	if p.PEM == nil {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "ca_certificate_pem: field required")
		return
	}
	if len(*p.PEM) > 8<<10 {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "ca_certificate_pem: larger than 8 KB")
		return
	}
	block, rest := pem.Decode([]byte(*p.PEM))
	if block == nil || block.Type != "CERTIFICATE" || strings.TrimSpace(string(rest)) != "" {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "ca_certificate_pem: want exactly one PEM CERTIFICATE block")
		return
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil || !cert.IsCA {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "ca_certificate_pem: not a CA certificate")
		return
	}
	active := 0
	for _, c := range t.certs {
		if c.ArchivedAt == nil {
			active++
		}
	}
	if active >= 2 {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "tunnel "+t.ID+" already has 2 active certificates; archive one first")
		return
	}
	sum := sha256.Sum256(cert.Raw)
	c := &certificate{
		ID: s.newID("tcert_"), Type: "tunnel_certificate", TunnelID: t.ID,
		Fingerprint: "sha256:" + hex.EncodeToString(sum[:]),
		CreatedAt:   time.Now().UTC(), ExpiresAt: cert.NotAfter.UTC(), pem: *p.PEM,
	}
	t.certs = append(t.certs, c)
	reply(w, c)
}

// page answers a cursor page of items: limit (default 20, at most 1000)
// items after the cursor given as page.
func page[T any](w http.ResponseWriter, r *http.Request, items []T) {
	limit := 20
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			apiError(w, http.StatusBadRequest, "invalid_request_error", "limit: must be an integer from 1 to 1000")
			return
		}
		limit = n
	}
	start := 0
	if v := r.URL.Query().Get("page"); v != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(v, "cur_"))
		if err != nil || n < 0 || n > len(items) {
			apiError(w, http.StatusBadRequest, "invalid_request_error", "page: invalid cursor")
			return
		}
		start = n
	}
	end := min(start+limit, len(items))
	var next *string
	if end < len(items) {
		c := "cur_" + strconv.Itoa(end)
		next = &c
	}
	reply(w, map[string]any{"data": items[start:end], "next_page": next})
}
