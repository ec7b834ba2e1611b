package tunnels_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sdk "github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/toolexec/anthropic/tunnels"
	"github.com/perimeter-sdk/perimeter/toolexec/anthropic/tunnels/tunnelsfake"
)

const apiKey = "sk-ant-fake-key"

func manager(t *testing.T, url, key, workspace string) *tunnels.Manager {
	t.Helper()
	c := sdk.NewClient(option.WithBaseURL(url), option.WithAPIKey(key), option.WithMaxRetries(0))
	return tunnels.NewManager(&c, workspace)
}

func newCA(t *testing.T, name string) *tunnels.CA {
	t.Helper()
	ca, err := tunnels.GenerateCA(name, 24*time.Hour)
	require.NoError(t, err)
	return ca
}

func TestLifecycle(t *testing.T) {
	fake := tunnelsfake.New(apiKey)
	defer fake.Close()
	m := manager(t, fake.URL, apiKey, "wrkspc_test")
	ctx := context.Background()

	tn, err := m.Create(ctx, "perimeter test")
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(tn.ID, "tnl_"), tn.ID)
	assert.Equal(t, "perimeter test", tn.DisplayName)
	assert.NotEmpty(t, tn.Domain)
	assert.True(t, tn.ArchivedAt.IsZero())

	got, err := m.Get(ctx, tn.ID)
	require.NoError(t, err)
	assert.Equal(t, tn.Domain, got.Domain)

	// Token: written to a private file, never returned.
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(tokFile, []byte("old"), 0o644))
	tokID, err := m.RevealToken(ctx, tn.ID, tokFile)
	require.NoError(t, err)
	assert.NotEmpty(t, tokID)
	assertSecretFile(t, tokFile, fake.Token(tn.ID))
	rotID, err := m.RotateToken(ctx, tn.ID, "test rotation", tokFile)
	require.NoError(t, err)
	assert.NotEqual(t, tokID, rotID)
	assertSecretFile(t, tokFile, fake.Token(tn.ID))

	// CA: register, rotate keeping two active, refuse a third, finish.
	ca1 := newCA(t, "ca one")
	c1, err := m.AddCA(ctx, tn.ID, ca1.CertPEM())
	require.NoError(t, err)
	assert.Equal(t, string(ca1.CertPEM()), fake.CertificatePEM(tn.ID, c1.ID))
	assert.Equal(t, tn.ID, c1.TunnelID)
	assert.WithinDuration(t, ca1.Cert.NotAfter, c1.ExpiresAt, time.Second)

	ca2 := newCA(t, "ca two")
	c2, archived, err := m.RotateCA(ctx, tn.ID, ca2.CertPEM(), false)
	require.NoError(t, err)
	assert.Empty(t, archived)
	active, err := m.Certificates(ctx, tn.ID, false)
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{c1.ID, c2.ID}, ids(active))

	_, _, err = m.RotateCA(ctx, tn.ID, newCA(t, "ca three").CertPEM(), true)
	require.ErrorContains(t, err, "already has 2 active CAs")
	require.ErrorContains(t, err, c1.ID)

	_, err = m.ArchiveCA(ctx, tn.ID, c1.ID)
	require.NoError(t, err)
	ca3 := newCA(t, "ca three")
	c3, archived, err := m.RotateCA(ctx, tn.ID, ca3.CertPEM(), true)
	require.NoError(t, err)
	assert.Equal(t, []string{c2.ID}, ids(archived))
	active, err = m.Certificates(ctx, tn.ID, false)
	require.NoError(t, err)
	assert.Equal(t, []string{c3.ID}, ids(active))
	all, err := m.Certificates(ctx, tn.ID, true)
	require.NoError(t, err)
	assert.Len(t, all, 3)

	// The new CA was registered before the old one was archived.
	var order []string
	for _, r := range fake.Requests() {
		if r.Method == http.MethodPost && strings.Contains(r.Path, "/certificates") {
			order = append(order, r.Path)
		}
	}
	require.GreaterOrEqual(t, len(order), 2)
	assert.Equal(t, "/v1/tunnels/"+tn.ID+"/certificates", order[len(order)-2])
	assert.Equal(t, "/v1/tunnels/"+tn.ID+"/certificates/"+c2.ID+"/archive", order[len(order)-1])

	// Listing, archiving.
	tn2, err := m.Create(ctx, "")
	require.NoError(t, err)
	list, err := m.List(ctx, false)
	require.NoError(t, err)
	assert.Equal(t, []string{tn2.ID, tn.ID}, tunnelIDs(list), "newest first")
	arch, err := m.Archive(ctx, tn.ID)
	require.NoError(t, err)
	assert.False(t, arch.ArchivedAt.IsZero())
	list, err = m.List(ctx, false)
	require.NoError(t, err)
	assert.Equal(t, []string{tn2.ID}, tunnelIDs(list))
	list, err = m.List(ctx, true)
	require.NoError(t, err)
	assert.Len(t, list, 2)
	active, err = m.Certificates(ctx, tn.ID, false)
	require.NoError(t, err)
	assert.Empty(t, active, "archiving a tunnel archives its certificates")

	_, err = m.RevealToken(ctx, tn.ID, tokFile)
	var te *tunnels.Error
	require.ErrorAs(t, err, &te)
	assert.Equal(t, http.StatusBadRequest, te.StatusCode())
	assert.Contains(t, err.Error(), "invalid_request_error")
	assert.Contains(t, err.Error(), "is archived")

	// Every request carried the key, the version, the beta header and the
	// workspace; no request carried a token.
	for _, r := range fake.Requests() {
		assert.True(t, r.Header.Get("X-Api-Key") == apiKey || r.Header.Get("Authorization") == "Bearer "+apiKey, r.Path)
		assert.NotEmpty(t, r.Header.Get("Anthropic-Version"), r.Path)
		assert.Contains(t, r.Header.Get("Anthropic-Beta"), tunnels.Beta, r.Path)
		assert.Equal(t, "wrkspc_test", r.Header.Get("Anthropic-Workspace-Id"), r.Path)
		assert.NotContains(t, r.Body, "tt_", r.Path)
	}
}

func TestListFollowsPages(t *testing.T) {
	fake := tunnelsfake.New(apiKey)
	defer fake.Close()
	m := manager(t, fake.URL, apiKey, "")
	for range 103 {
		_, err := m.Create(context.Background(), "")
		require.NoError(t, err)
	}
	list, err := m.List(context.Background(), false)
	require.NoError(t, err)
	assert.Len(t, list, 103)
	pages := 0
	for _, r := range fake.Requests() {
		if r.Method == http.MethodGet {
			pages++
		}
	}
	assert.Equal(t, 2, pages)
}

func assertSecretFile(t *testing.T, path, want string) {
	t.Helper()
	require.NotEmpty(t, want)
	st, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, want+"\n", string(b))
	left, err := filepath.Glob(filepath.Join(filepath.Dir(path), ".*tmp*"))
	require.NoError(t, err)
	assert.Empty(t, left, "no temporary file left behind")
}

func ids(cs []sdk.BetaTunnelCertificate) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.ID)
	}
	return out
}

func tunnelIDs(ts []sdk.BetaTunnel) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.ID)
	}
	return out
}

func TestWrongKeyAndUnknownTunnel(t *testing.T) {
	fake := tunnelsfake.New(apiKey)
	defer fake.Close()
	_, err := manager(t, fake.URL, "sk-ant-wrong", "").Create(context.Background(), "")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "create tunnel: 401 authentication_error: invalid x-api-key")
	assert.Contains(t, err.Error(), "request req_fake")
	var ae *sdk.Error
	require.True(t, errors.As(err, &ae), "the SDK's error is reachable")

	_, err = manager(t, fake.URL, apiKey, "").Get(context.Background(), "tnl_missing")
	assert.ErrorContains(t, err, "404 not_found_error: tunnel tnl_missing not found")

	_, err = manager(t, fake.URL, apiKey, "").Get(context.Background(), "../x")
	assert.ErrorContains(t, err, "has characters an ID never has")
}

// TestCreateIsNotRetried: creation allocates a hostname each time, so a
// failed create is not sent again even when the client allows retries.
func TestCreateIsNotRetried(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		w.Write([]byte(`{"type":"error","error":{"type":"api_error","message":"boom"}}`))
	}))
	defer srv.Close()
	c := sdk.NewClient(option.WithBaseURL(srv.URL), option.WithAPIKey(apiKey), option.WithMaxRetries(3))
	_, err := tunnels.NewManager(&c, "").Create(context.Background(), "x")
	require.ErrorContains(t, err, "500 api_error: boom")
	assert.EqualValues(t, 1, n.Load())
}

func TestCheckCAPEM(t *testing.T) {
	ca := newCA(t, "ca")
	require.NoError(t, tunnels.CheckCAPEM(ca.CertPEM()))

	leaf, key, err := ca.Issue(tunnels.ServerAuth, []string{"example.test"}, time.Hour)
	require.NoError(t, err)
	assert.ErrorContains(t, tunnels.CheckCAPEM(leaf), "not a CA")
	assert.ErrorContains(t, tunnels.CheckCAPEM(append(ca.CertPEM(), key...)), "more than one PEM block")
	assert.ErrorContains(t, tunnels.CheckCAPEM(key), `"PRIVATE KEY", want CERTIFICATE`)
	assert.ErrorContains(t, tunnels.CheckCAPEM([]byte("hello")), "no PEM block")
	big := append([]byte(strings.Repeat("#", tunnels.MaxCAPEM)), ca.CertPEM()...)
	assert.ErrorContains(t, tunnels.CheckCAPEM(big), "at most 8192")

	// Refused locally: nothing reaches the API.
	fake := tunnelsfake.New(apiKey)
	defer fake.Close()
	_, err = manager(t, fake.URL, apiKey, "").AddCA(context.Background(), "tnl_x", leaf)
	require.Error(t, err)
	assert.Empty(t, fake.Requests())
}

func TestIssueAndLoad(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "tunnel CA")
	certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	require.NoError(t, ca.WriteFiles(certFile, keyFile))
	st, err := os.Stat(keyFile)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	assert.ErrorContains(t, ca.WriteFiles(certFile, keyFile), "already exists")

	loaded, err := tunnels.LoadCA(certFile, keyFile)
	require.NoError(t, err)
	srvPEM, _, err := loaded.Issue(tunnels.ServerAuth, []string{"*.abc.tunnel.example", "abc.tunnel.example", "127.0.0.1"}, 48*time.Hour)
	require.NoError(t, err)
	block, _ := pem.Decode(srvPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	for _, name := range []string{"mcp.abc.tunnel.example", "abc.tunnel.example"} {
		_, err = cert.Verify(x509.VerifyOptions{DNSName: name, Roots: pool})
		assert.NoError(t, err, name)
	}
	_, err = cert.Verify(x509.VerifyOptions{DNSName: "other.example", Roots: pool})
	assert.Error(t, err)
	assert.False(t, cert.NotAfter.After(ca.Cert.NotAfter), "a leaf ends no later than its CA")

	other := newCA(t, "other")
	require.NoError(t, other.WriteFiles(filepath.Join(dir, "o.pem"), filepath.Join(dir, "o-key.pem")))
	_, err = tunnels.LoadCA(certFile, filepath.Join(dir, "o-key.pem"))
	assert.ErrorContains(t, err, "is not the key of")
}

func TestWriteSecretFileRefusesDirectory(t *testing.T) {
	dir := t.TempDir()
	assert.ErrorContains(t, tunnels.WriteSecretFile(dir, []byte("x")), "is a directory")
	assert.ErrorContains(t, tunnels.WriteSecretFile(filepath.Join(dir, "no", "such"), []byte("x")), "does not exist")
}
