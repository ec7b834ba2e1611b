package main

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/toolexec/anthropic/tunnels/tunnelsfake"
)

// anthropicEnv points the SDK at a fresh fake with a known key and no other
// credential source.
func anthropicEnv(t *testing.T) *tunnelsfake.Server {
	fake := tunnelsfake.New("sk-ant-cli-test")
	t.Cleanup(fake.Close)
	t.Setenv("ANTHROPIC_API_KEY", "sk-ant-cli-test")
	for _, v := range []string{"ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_PROFILE", "ANTHROPIC_BASE_URL", "ANTHROPIC_CUSTOM_HEADERS", "ANTHROPIC_FEDERATION_RULE_ID"} {
		t.Setenv(v, "")
	}
	return fake
}

// TestTunnelAnthropicEverySubcommand drives each subcommand of
// `perimeter tunnel anthropic` against the fake tunnels API.
func TestTunnelAnthropicEverySubcommand(t *testing.T) {
	fake := anthropicEnv(t)
	base := []string{"--base-url", fake.URL, "--workspace", "wrkspc_cli"}
	run := func(args ...string) (int, string, string) {
		t.Helper()
		// Subcommand words first, then the common flags, then the rest.
		n := 1
		if args[0] == "token" || args[0] == "ca" {
			n = 2
		}
		full := append([]string{"tunnel", "anthropic"}, args[:n]...)
		full = append(full, base...)
		return cli(t, "", append(full, args[n:]...)...)
	}

	code, out, errOut := run("create", "--name", "cli tunnel")
	require.Equal(t, 0, code, errOut)
	fields := strings.Split(strings.TrimSpace(out), "\t")
	require.Len(t, fields, 4, out)
	id, domain := fields[0], fields[1]
	assert.True(t, strings.HasPrefix(id, "tnl_"))
	assert.Equal(t, "cli tunnel", fields[2])
	assert.Equal(t, "active", fields[3])
	assert.Contains(t, errOut, "ca create --tunnel "+id)

	code, out, _ = run("get", id)
	require.Equal(t, 0, code)
	assert.Contains(t, out, domain)

	// Token: into a 0600 file, never on the terminal.
	dir := t.TempDir()
	tok := filepath.Join(dir, "tunnel.token")
	code, out, errOut = run("token", "reveal", "--tunnel", id, "--out", tok)
	require.Equal(t, 0, code, errOut)
	first := fake.Token(id)
	assertPrivateFile(t, tok, first)
	assert.NotContains(t, out+errOut, first)
	code, out, errOut = run("token", "rotate", "--tunnel", id, "--out", tok, "--reason", "test")
	require.Equal(t, 0, code, errOut)
	second := fake.Token(id)
	require.NotEqual(t, first, second)
	assertPrivateFile(t, tok, second)
	assert.NotContains(t, out+errOut, second)

	// CA: create, rotate keeping both, a third refused, rotate with
	// --archive-old after archiving one.
	ca1 := filepath.Join(dir, "ca1")
	code, out, errOut = run("ca", "create", "--tunnel", id, "--dir", ca1)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "registered with "+id)
	for _, f := range []string{"ca-key.pem", "proxy-key.pem"} {
		st, err := os.Stat(filepath.Join(ca1, f))
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), st.Mode().Perm(), f)
	}
	proxy := readCert(t, filepath.Join(ca1, "proxy.pem"))
	assert.ElementsMatch(t, []string{"*." + domain, domain}, proxy.DNSNames)
	pool := x509.NewCertPool()
	pool.AddCert(readCert(t, filepath.Join(ca1, "ca.pem")))
	_, err := proxy.Verify(x509.VerifyOptions{Roots: pool, DNSName: "mcp." + domain})
	require.NoError(t, err, "the proxy's certificate is signed by the registered CA")

	code, _, errOut = run("ca", "create", "--tunnel", id, "--dir", ca1)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "already exists: refusing to replace it")

	ca2 := filepath.Join(dir, "ca2")
	code, _, errOut = run("ca", "rotate", "--tunnel", id, "--dir", ca2)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, errOut, "both CAs are active")
	code, out, _ = run("ca", "list", "--tunnel", id)
	require.Equal(t, 0, code)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 2, out)
	newest, oldest := strings.Fields(lines[0])[0], strings.Fields(lines[1])[0]

	code, _, errOut = run("ca", "rotate", "--tunnel", id, "--dir", filepath.Join(dir, "ca3"))
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "already has 2 active CAs")
	_, err = os.Stat(filepath.Join(dir, "ca3", "ca-key.pem"))
	assert.ErrorIs(t, err, os.ErrNotExist, "a refused rotation leaves no key behind")

	code, out, errOut = run("ca", "archive", "--tunnel", id, oldest)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "CA "+oldest+" archived")
	code, out, errOut = run("ca", "rotate", "--tunnel", id, "--dir", filepath.Join(dir, "ca3"), "--archive-old")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "CA "+newest+" archived")
	code, out, _ = run("ca", "list", "--tunnel", id, "--all")
	require.Equal(t, 0, code)
	assert.Equal(t, 3, strings.Count(out, "\n"), out)
	assert.Equal(t, 1, strings.Count(out, "\tactive"), out)

	code, _, errOut = run("ca", "archive", "--tunnel", id, strings.Fields(strings.Split(out, "\n")[0])[0])
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, errOut, "last active CA")

	// List and archive.
	code, out, _ = run("list")
	require.Equal(t, 0, code)
	assert.Contains(t, out, id)
	code, _, errOut = run("archive", id)
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "add --yes")
	code, out, errOut = run("archive", "--yes", id)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "archived ")
	code, out, _ = run("list")
	require.Equal(t, 0, code)
	assert.NotContains(t, out, id)
	code, out, _ = run("list", "--all")
	require.Equal(t, 0, code)
	assert.Contains(t, out, id)
	code, _, errOut = run("token", "reveal", "--tunnel", id, "--out", tok)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "400 invalid_request_error: tunnel "+id+" is archived")
	assertPrivateFile(t, tok, second) // untouched by the failed call

	for _, r := range fake.Requests() {
		assert.Equal(t, "wrkspc_cli", r.Header.Get("Anthropic-Workspace-Id"), r.Path)
		assert.Contains(t, r.Header.Get("Anthropic-Beta"), tunnelsfake.Beta, r.Path)
	}
}

func TestTunnelAnthropicErrors(t *testing.T) {
	fake := anthropicEnv(t)
	code, _, errOut := cli(t, "", "tunnel", "anthropic")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "usage: perimeter tunnel anthropic")
	code, out, _ := cli(t, "", "tunnel", "anthropic", "help")
	assert.Equal(t, 0, code)
	assert.Contains(t, out, "token reveal")
	code, _, errOut = cli(t, "", "tunnel", "anthropic", "bogus")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, `unknown subcommand "bogus"`)
	code, _, errOut = cli(t, "", "tunnel", "anthropic", "token", "reveal", "--base-url", fake.URL, "--tunnel", "tnl_x")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "usage: perimeter tunnel anthropic token reveal --tunnel ID --out FILE")
	code, _, errOut = cli(t, "", "tunnel", "anthropic", "get", "--base-url", fake.URL, "tnl_missing")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "404 not_found_error")
	code, _, errOut = cli(t, "", "tunnel", "anthropic", "token", "reveal", "--base-url", fake.URL, "--tunnel", "tnl_x", "--out", t.TempDir())
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "is a directory")

	// No credential at all: the SDK's own message, which lists where it
	// looked; nothing is sent.
	t.Setenv("ANTHROPIC_API_KEY", "")
	t.Setenv("HOME", t.TempDir())
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	before := len(fake.Requests())
	code, _, errOut = cli(t, "", "tunnel", "anthropic", "list", "--base-url", fake.URL)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "no Anthropic credentials found")
	assert.Len(t, fake.Requests(), before)

	t.Setenv("ANTHROPIC_API_KEY", "sk-ant-wrong")
	code, _, errOut = cli(t, "", "tunnel", "anthropic", "list", "--base-url", fake.URL)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "401 authentication_error")
	assert.NotContains(t, errOut, "sk-ant-wrong", "the key is never printed")
}

func assertPrivateFile(t *testing.T, path, content string) {
	t.Helper()
	require.NotEmpty(t, content)
	st, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, content+"\n", string(b))
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	block, _ := pem.Decode(b)
	require.NotNil(t, block, path)
	c, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	return c
}
