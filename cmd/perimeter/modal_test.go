package main

import (
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/conformance"
	"github.com/perimeter-sdk/perimeter/providers/modal/modalfake"
)

// TestConformanceModal runs `perimeter conformance modal://APP` against the
// Modal fake, reached by the unmodified SDK through MODAL_SERVER_URL: the CLI
// links the Modal provider, and every MUST check passes through it.
func TestConformanceModal(t *testing.T) {
	fake, err := modalfake.Start(nil)
	require.NoError(t, err)
	t.Cleanup(func() { fake.Close() })
	t.Setenv("MODAL_SERVER_URL", fake.URL)
	t.Setenv("MODAL_TOKEN_ID", fake.TokenID)
	t.Setenv("MODAL_TOKEN_SECRET", fake.TokenSecret)
	t.Setenv("MODAL_CONFIG_PATH", filepath.Join(t.TempDir(), "absent.toml"))
	t.Setenv("MODAL_PROFILE", "")
	t.Setenv("MODAL_ENVIRONMENT", "")
	// Modal's tunnels carry certificates every client trusts; the fake's
	// carry its own, which this test process trusts in their stead.
	tr := http.DefaultTransport.(*http.Transport)
	old := tr.TLSClientConfig
	tr.TLSClientConfig = fake.TunnelClientTLS()
	t.Cleanup(func() { tr.TLSClientConfig = old; tr.CloseIdleConnections() })

	// The fake serves a sandbox's ports from the host's loopback, which a
	// fake sandbox without egress (its own network namespace) does not
	// share; the checks that set no network themselves ask for open egress,
	// as providers/modal's own conformance test does.
	if testing.Short() {
		// The fast tier checks that the CLI reaches Modal through one check;
		// providers/modal runs the whole suite against the fake itself.
		code, out, errOut := cli(t, "", "conformance", "--network", "open", "--run", "^exec/env$", "modal://perimeter-cli-test")
		assert.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
		assert.Contains(t, out, "1 passed, 0 failed (MUST)")
		return
	}
	code, out, errOut := cli(t, "", "conformance", "--network", "open", "modal://perimeter-cli-test")
	assert.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errOut)

	// Every MUST check of the suite has a row in the table, and each says
	// pass, or n/a for an ability the provider declares absent.
	row := regexp.MustCompile(`^(\S+)\s+(MUST|SHOULD)\s+(pass|FAIL|warn|n/a)\s`)
	got := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if m := row.FindStringSubmatch(line); m != nil && m[2] == "MUST" {
			got[m[1]] = m[3]
		}
	}
	musts := 0
	for _, ch := range conformance.Checks() {
		if ch.Level != conformance.MUST {
			continue
		}
		musts++
		assert.Contains(t, []string{"pass", "n/a"}, got[ch.ID], "MUST check %s", ch.ID)
	}
	require.NotZero(t, musts)
	assert.Len(t, got, musts, "one row per MUST check")
	assert.Contains(t, out, " 0 failed (MUST)")
}

func TestConformanceNetworkFlag(t *testing.T) {
	code, _, errOut := cli(t, "", "conformance", "--network", "allowlist", providerURL(t))
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, `--network "allowlist": want none or open`)

	code, out, errOut := cli(t, "", "conformance", "--network", "open", "--run", "^network/none$", providerURL(t))
	assert.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "1 passed, 0 failed (MUST)")
}
