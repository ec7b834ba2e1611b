// Package tunnels manages the platform side of Anthropic's MCP tunnels
// (research preview, beta header mcp-tunnels-2026-06-22) through the Go
// SDK's tunnels API: it creates and archives tunnels, registers and rotates
// the CA certificates that sign the inner TLS of the tunnel's proxy, and
// writes the connector token into a private file without ever returning or
// printing it.
//
// A Perimeter gateway (`perimeter tunnel serve`) sits behind Anthropic's
// proxy as one of its HTTP upstreams; see docs/tunnel.md for the whole
// deployment. The CLI front end is `perimeter tunnel anthropic`.
//
// Certificate rotation keeps two CAs active: [Manager.RotateCA] registers the
// new CA before it archives the old one, so the proxy can be moved to a
// server certificate of the new CA while the old one still verifies.
package tunnels

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	sdk "github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
)

// Beta is the beta header value the tunnels API requires; the SDK sends it
// on every tunnels request.
const Beta = "mcp-tunnels-2026-06-22"

// MaxCAPEM is the largest CA certificate PEM the API accepts (8 KB).
const MaxCAPEM = 8 << 10

// MaxActiveCAs is how many CA certificates a tunnel can have active at once.
const MaxActiveCAs = 2

// Manager calls the tunnels API of one Anthropic client, optionally for one
// workspace.
type Manager struct {
	svc       *sdk.BetaTunnelService
	workspace string
}

// NewManager returns a Manager using client's tunnels service. workspaceID
// selects the workspace for credentials that can act on several; leave it
// empty otherwise.
func NewManager(client *sdk.Client, workspaceID string) *Manager {
	return &Manager{svc: &client.Beta.Tunnels, workspace: workspaceID}
}

func (m *Manager) opts() []option.RequestOption {
	if m.workspace == "" {
		return nil
	}
	return []option.RequestOption{option.WithHeader("anthropic-workspace-id", m.workspace)}
}

// Create creates a tunnel with an optional display name. Creation allocates
// a new hostname and is not idempotent, so it is sent once, without the
// SDK's retries. The tunnel refuses MCP traffic until a CA is registered.
func (m *Manager) Create(ctx context.Context, displayName string) (*sdk.BetaTunnel, error) {
	var p sdk.BetaTunnelNewParams
	if displayName != "" {
		if len(displayName) > 255 {
			return nil, fmt.Errorf("tunnels: display name is %d characters long; the limit is 255", len(displayName))
		}
		p.DisplayName = sdk.String(displayName)
	}
	t, err := m.svc.New(ctx, p, append(m.opts(), option.WithMaxRetries(0))...)
	if err != nil {
		return nil, apiError("create tunnel", err)
	}
	return t, nil
}

// Get fetches a tunnel.
func (m *Manager) Get(ctx context.Context, tunnelID string) (*sdk.BetaTunnel, error) {
	if err := checkID("tunnel", tunnelID); err != nil {
		return nil, err
	}
	t, err := m.svc.Get(ctx, tunnelID, sdk.BetaTunnelGetParams{}, m.opts()...)
	if err != nil {
		return nil, apiError("get tunnel "+tunnelID, err)
	}
	return t, nil
}

// List returns every tunnel, newest first, following the API's pages;
// archived ones only when includeArchived is set.
func (m *Manager) List(ctx context.Context, includeArchived bool) ([]sdk.BetaTunnel, error) {
	p := sdk.BetaTunnelListParams{Limit: sdk.Int(100)}
	if includeArchived {
		p.IncludeArchived = sdk.Bool(true)
	}
	var out []sdk.BetaTunnel
	it := m.svc.ListAutoPaging(ctx, p, m.opts()...)
	for it.Next() {
		out = append(out, it.Current())
	}
	if err := it.Err(); err != nil {
		return nil, apiError("list tunnels", err)
	}
	return out, nil
}

// Archive archives a tunnel: irreversible. Its certificates are archived,
// its hostname retired and its token invalidated. Archiving an archived
// tunnel returns it unchanged.
func (m *Manager) Archive(ctx context.Context, tunnelID string) (*sdk.BetaTunnel, error) {
	if err := checkID("tunnel", tunnelID); err != nil {
		return nil, err
	}
	t, err := m.svc.Archive(ctx, tunnelID, sdk.BetaTunnelArchiveParams{}, m.opts()...)
	if err != nil {
		return nil, apiError("archive tunnel "+tunnelID, err)
	}
	return t, nil
}

// RevealToken fetches the tunnel's connector token and writes it to path
// (mode 0600, replaced atomically; see [WriteSecretFile]). It returns only
// the token's identifier, never the token.
func (m *Manager) RevealToken(ctx context.Context, tunnelID, path string) (tokenID string, err error) {
	if err := checkID("tunnel", tunnelID); err != nil {
		return "", err
	}
	if err := checkSecretPath(path); err != nil {
		return "", err
	}
	tok, err := m.svc.RevealToken(ctx, tunnelID, sdk.BetaTunnelRevealTokenParams{}, m.opts()...)
	if err != nil {
		return "", apiError("reveal token of "+tunnelID, err)
	}
	return saveToken(tok, path)
}

// RotateToken replaces the tunnel's connector token (established connections
// stay up; a restarted connector needs the new one) and writes the new token
// to path like RevealToken. reason, if not empty, is recorded by the API.
// Rotation is not retried by the SDK: a retried rotation would invalidate the
// token written by the first.
func (m *Manager) RotateToken(ctx context.Context, tunnelID, reason, path string) (tokenID string, err error) {
	if err := checkID("tunnel", tunnelID); err != nil {
		return "", err
	}
	if err := checkSecretPath(path); err != nil {
		return "", err
	}
	var p sdk.BetaTunnelRotateTokenParams
	if reason != "" {
		p.Reason = sdk.String(reason)
	}
	tok, err := m.svc.RotateToken(ctx, tunnelID, p, append(m.opts(), option.WithMaxRetries(0))...)
	if err != nil {
		return "", apiError("rotate token of "+tunnelID, err)
	}
	id, err := saveToken(tok, path)
	if err != nil {
		return "", fmt.Errorf("%w (the token was rotated: run reveal to write the new one)", err)
	}
	return id, nil
}

func saveToken(tok *sdk.BetaTunnelToken, path string) (string, error) {
	if tok.TunnelToken == "" {
		return "", errors.New("tunnels: the API returned an empty tunnel token")
	}
	if err := WriteSecretFile(path, []byte(tok.TunnelToken+"\n")); err != nil {
		return "", err
	}
	return tok.ID, nil
}

// Certificates lists a tunnel's CA certificates, newest first; archived ones
// only when includeArchived is set.
func (m *Manager) Certificates(ctx context.Context, tunnelID string, includeArchived bool) ([]sdk.BetaTunnelCertificate, error) {
	if err := checkID("tunnel", tunnelID); err != nil {
		return nil, err
	}
	p := sdk.BetaTunnelCertificateListParams{Limit: sdk.Int(100)}
	if includeArchived {
		p.IncludeArchived = sdk.Bool(true)
	}
	var out []sdk.BetaTunnelCertificate
	it := m.svc.Certificates.ListAutoPaging(ctx, tunnelID, p, m.opts()...)
	for it.Next() {
		out = append(out, it.Current())
	}
	if err := it.Err(); err != nil {
		return nil, apiError("list certificates of "+tunnelID, err)
	}
	return out, nil
}

// AddCA registers a CA certificate (PEM) with the tunnel after checking it
// locally: one CA certificate, no private key, at most [MaxCAPEM] bytes.
func (m *Manager) AddCA(ctx context.Context, tunnelID string, caPEM []byte) (*sdk.BetaTunnelCertificate, error) {
	if err := checkID("tunnel", tunnelID); err != nil {
		return nil, err
	}
	if err := CheckCAPEM(caPEM); err != nil {
		return nil, err
	}
	c, err := m.svc.Certificates.New(ctx, tunnelID, sdk.BetaTunnelCertificateNewParams{CACertificatePEM: string(caPEM)}, m.opts()...)
	if err != nil {
		return nil, apiError("register CA with "+tunnelID, err)
	}
	return c, nil
}

// ArchiveCA archives one of the tunnel's CA certificates. Archiving the last
// active one makes the tunnel refuse MCP traffic.
func (m *Manager) ArchiveCA(ctx context.Context, tunnelID, certificateID string) (*sdk.BetaTunnelCertificate, error) {
	if err := checkID("tunnel", tunnelID); err != nil {
		return nil, err
	}
	if err := checkID("certificate", certificateID); err != nil {
		return nil, err
	}
	c, err := m.svc.Certificates.Archive(ctx, certificateID, sdk.BetaTunnelCertificateArchiveParams{TunnelID: tunnelID}, m.opts()...)
	if err != nil {
		return nil, apiError("archive certificate "+certificateID, err)
	}
	return c, nil
}

// RotateCA registers newPEM alongside the tunnel's active CA and, when
// archiveOld is set, then archives the CA that was active before. The new
// CA is always registered first, so at no point is the tunnel without one.
// Leave archiveOld unset until the proxy presents a server certificate of
// the new CA, then archive the old one with ArchiveCA (or call again).
//
// It refuses when the tunnel already has [MaxActiveCAs] active: which one to
// drop is the operator's choice. On a failure after the new CA was
// registered, the returned certificate is not nil and the error says which
// old CA is still active.
func (m *Manager) RotateCA(ctx context.Context, tunnelID string, newPEM []byte, archiveOld bool) (added *sdk.BetaTunnelCertificate, archived []sdk.BetaTunnelCertificate, err error) {
	if err := CheckCAPEM(newPEM); err != nil {
		return nil, nil, err
	}
	active, err := m.Certificates(ctx, tunnelID, false)
	if err != nil {
		return nil, nil, err
	}
	if len(active) >= MaxActiveCAs {
		ids := make([]string, len(active))
		for i, c := range active {
			ids[i] = c.ID
		}
		return nil, nil, fmt.Errorf("tunnels: tunnel %s already has %d active CAs (%s), the most it can have: archive the one the proxy no longer uses first", tunnelID, len(active), strings.Join(ids, ", "))
	}
	added, err = m.AddCA(ctx, tunnelID, newPEM)
	if err != nil {
		return nil, nil, err
	}
	if !archiveOld {
		return added, nil, nil
	}
	for _, old := range active {
		if old.ID == added.ID {
			continue
		}
		c, err := m.ArchiveCA(ctx, tunnelID, old.ID)
		if err != nil {
			return added, archived, fmt.Errorf("new CA %s registered, but %s is still active: %w", added.ID, old.ID, err)
		}
		archived = append(archived, *c)
	}
	return added, archived, nil
}

// CheckCAPEM reports whether data is what the API accepts as a tunnel CA:
// exactly one PEM CERTIFICATE block, a CA certificate, nothing else (in
// particular no private key), at most [MaxCAPEM] bytes.
func CheckCAPEM(data []byte) error {
	if len(data) > MaxCAPEM {
		return fmt.Errorf("tunnels: CA certificate PEM is %d bytes; the API takes at most %d", len(data), MaxCAPEM)
	}
	block, rest := pem.Decode(data)
	if block == nil {
		return errors.New("tunnels: CA certificate: no PEM block found")
	}
	if block.Type != "CERTIFICATE" {
		return fmt.Errorf("tunnels: CA certificate: PEM block is %q, want CERTIFICATE", block.Type)
	}
	if strings.TrimSpace(string(rest)) != "" {
		return errors.New("tunnels: CA certificate: more than one PEM block (give the CA certificate alone, never its key)")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return fmt.Errorf("tunnels: CA certificate: %w", err)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return fmt.Errorf("tunnels: certificate %q is not a CA (basic constraints CA:TRUE missing)", cert.Subject)
	}
	return nil
}

func checkID(what, id string) error {
	if id == "" {
		return fmt.Errorf("tunnels: no %s ID given", what)
	}
	if strings.ContainsAny(id, "/?#% \t\n") {
		return fmt.Errorf("tunnels: %s ID %q has characters an ID never has", what, id)
	}
	return nil
}

// apiError turns an SDK error into one line a person can act on: what was
// being done, the HTTP status, the API's error type and message, and the
// request ID to quote to support.
func apiError(op string, err error) error {
	var ae *sdk.Error
	if !errors.As(err, &ae) {
		return fmt.Errorf("tunnels: %s: %w", op, err)
	}
	msg := ae.Message
	if msg == "" {
		msg = "(no message)"
	}
	s := fmt.Sprintf("tunnels: %s: %d", op, ae.StatusCode)
	if t := string(ae.Type()); t != "" {
		s += " " + t
	}
	s += ": " + msg
	if ae.RequestID != "" {
		s += " (request " + ae.RequestID + ")"
	}
	return &Error{msg: s, err: ae}
}

// Error is an error answered by the tunnels API. Unwrap it to the SDK's
// *anthropic.Error for the status code and the raw body.
type Error struct {
	msg string
	err *sdk.Error
}

func (e *Error) Error() string { return e.msg }

// Unwrap returns the SDK's error.
func (e *Error) Unwrap() error { return e.err }

// StatusCode is the HTTP status the API answered with.
func (e *Error) StatusCode() int { return e.err.StatusCode }
