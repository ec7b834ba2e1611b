package tunnel

import (
	"crypto/tls"
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAuthorizeBindsCredentialsToConnectorAndRoutes(t *testing.T) {
	up, _ := startUpstream(t, nil)
	const second = "second-token-0123456789abcdef"
	// Token 0 may serve only route "a"; token 1 only route "b".
	allowed := map[int][]string{0: {"a"}, 1: {"b"}}
	authorize := func(id ConnectorIdentity) error {
		for _, r := range id.Routes {
			if !slices.Contains(allowed[id.TokenIndex], r) {
				return fmt.Errorf("token %d may not serve route %q", id.TokenIndex, r)
			}
		}
		return nil
	}
	cases := []struct {
		name  string
		token string
		route string
		ok    bool
	}{
		{"token 0 serving a", testToken, "a", true},
		{"token 0 claiming b", testToken, "b", false},
		{"token 1 serving b", second, "b", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			eo := edgeOptions(t)
			eo.Tokens = []string{testToken, second}
			eo.Authorize = authorize
			m := &countMetrics{}
			eo.Metrics = m
			e := startEdge(t, eo, "")
			co := connectorOptions(t, e.addr, Route{Name: tc.route, URL: up})
			co.Token = tc.token
			c, _ := startConnector(t, co)
			if tc.ok {
				waitConnected(t, e, c, 1)
				return
			}
			waitFor(t, "refusals", func() bool { return m.get("tunnel_handshake_failures_total") >= 2 })
			assert.Equal(t, 0, c.Connected())
		})
	}

	t.Run("certificate name must match the connector id", func(t *testing.T) {
		for _, id := range []string{"c1", "connector"} { // the client certificate's CN is "connector"
			eo := edgeOptions(t)
			eo.Tokens = nil
			eo.TLSConfig.ClientAuth = tls.RequireAndVerifyClientCert
			eo.TLSConfig.ClientCAs = getCerts().pool
			eo.Authorize = func(ci ConnectorIdentity) error {
				require.NotNil(t, ci.Certificate)
				assert.Equal(t, -1, ci.TokenIndex)
				if ci.Certificate.Subject.CommonName != ci.ID {
					return fmt.Errorf("certificate is for %q, not %q", ci.Certificate.Subject.CommonName, ci.ID)
				}
				return nil
			}
			m := &countMetrics{}
			eo.Metrics = m
			e := startEdge(t, eo, "")
			co := connectorOptions(t, e.addr, Route{Name: "r", URL: up})
			co.ID = id
			co.Token = ""
			co.TLSConfig.Certificates = []tls.Certificate{getCerts().client}
			c, _ := startConnector(t, co)
			if id == "connector" {
				waitConnected(t, e, c, 1)
			} else {
				waitFor(t, "refusals", func() bool { return m.get("tunnel_handshake_failures_total") >= 2 })
				assert.Equal(t, 0, c.Connected())
			}
		}
	})
}

func TestTokenIndex(t *testing.T) {
	s, err := newTokenSet([]string{"aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "cccccccccccccccc"})
	require.NoError(t, err)
	assert.Equal(t, 0, s.index("aaaaaaaaaaaaaaaa"))
	assert.Equal(t, 2, s.index("cccccccccccccccc"))
	assert.Equal(t, -1, s.index("dddddddddddddddd"))
}
