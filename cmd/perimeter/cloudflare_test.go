package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestCloudflareDoctor runs the doctor against a Cloudflare API that knows
// no such Worker: it names what is missing and exits 1; a refused token is
// an error, and bad usage exits 2.
func TestCloudflareDoctor(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Header.Get("Authorization") != "Bearer good" {
			w.WriteHeader(403)
			json.NewEncoder(w).Encode(map[string]any{"success": false, "result": nil, "messages": []any{},
				"errors": []any{map[string]any{"code": 10000, "message": "Authentication error"}}})
			return
		}
		w.WriteHeader(404)
		json.NewEncoder(w).Encode(map[string]any{"success": false, "result": nil, "messages": []any{},
			"errors": []any{map[string]any{"code": 10007, "message": "This Worker does not exist on your account."}}})
	}))
	t.Cleanup(srv.Close)

	t.Setenv("CLOUDFLARE_API_TOKEN", "good")
	code, out, errOut := cli(t, "", "cloudflare", "doctor", "--account", "acc1", "--api-url", srv.URL+"/client/v4/")
	assert.Equal(t, 1, code, errOut)
	assert.Contains(t, out, `"sandbox-bridge" is missing`)
	assert.Contains(t, out, "  - ")

	t.Setenv("CLOUDFLARE_API_TOKEN", "bad")
	code, _, errOut = cli(t, "", "cloudflare", "doctor", "--account", "acc1", "--api-url", srv.URL+"/client/v4/")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "perimeter: ")

	code, _, _ = cli(t, "", "cloudflare")
	assert.Equal(t, 2, code)
}
