// Package jsclient_test drives Modal's official JavaScript SDK (modal, the
// release matching modal-go v0.7.0, pinned by package-lock.json) against
// modalfake with battery.mjs and checks what it reports.
//
// The lockfile omits cbor-extract's platform packages (optional native
// accelerators of cbor-x, which the SDK does not need: cbor-x falls back to
// plain JavaScript, and npm ci runs with --ignore-scripts).
package jsclient_test

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/perimeter-sdk/perimeter/internal/jsclient"
	"github.com/perimeter-sdk/perimeter/providers/modal/modalfake"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestOfficialClient(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir, err := filepath.Abs(".")
	require.NoError(t, err)
	install, err := jsclient.Install(ctx, dir)
	require.NoError(t, err, "the official client could not be installed; this test does not skip")

	// A page of two, so that listing follows pages.
	fake, err := modalfake.Start(&modalfake.Options{ListPageSize: 2})
	require.NoError(t, err)
	defer fake.Close()
	// The network checks connect to this listener from the sandboxes.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()

	out, stderr, err := jsclient.Run(ctx, install, filepath.Join(dir, "battery.mjs"), []string{
		"MODAL_SERVER_URL=" + fake.URL, "MODAL_TOKEN_ID=" + fake.TokenID, "MODAL_TOKEN_SECRET=" + fake.TokenSecret,
		"MODAL_CONFIG_PATH=" + filepath.Join(t.TempDir(), "absent.toml"), "MODAL_PROFILE=", "MODAL_ENVIRONMENT=",
		"PROBE_PORT=" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port),
	})
	require.NoError(t, err)
	t.Logf("battery stderr: %s", stderr)
	var r map[string]any
	require.NoError(t, json.Unmarshal(out, &r), "battery output: %s", out)
	get := func(path ...string) any {
		var v any = r
		for _, p := range path {
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[p]
		}
		return v
	}

	assert.Equal(t, map[string]any{"suite": "js", "which": "a"}, get("create", "tags"))

	assert.Equal(t, "out\n", get("exec", "stdout"))
	assert.Equal(t, "hi x\n/w1\n", get("exec", "stderr"))
	assert.Equal(t, float64(3), get("exec", "code"))
	assert.Equal(t, "FROM STDIN\n", get("stdin", "stdout"))
	assert.Equal(t, "done\n", get("stdin", "stderr"))
	assert.Equal(t, float64(0), get("stdin", "code"))
	assert.Equal(t, []any{float64(0), float64(255)}, get("binary"))
	assert.Equal(t, "/tmp\n", get("workdirOption"))
	assert.Equal(t, float64(127), get("missing"))
	assert.Contains(t, []any{float64(137), "ExecTimeoutError"}, get("timeout"), "a command past its timeout is killed")

	assert.Equal(t, []any{float64(0), float64(255), float64(1), float64(10)}, get("files", "read"))
	assert.Equal(t, "SandboxFilesystemError", get("files", "missing"), "opening a missing file fails")
	assert.Equal(t, "SandboxFilesystemError", get("files", "directory"), "opening a directory fails")
	assert.Equal(t, "relative", get("files", "relative"))

	assert.Equal(t, map[string]any{"8080": map[string]any{"host": "127.0.0.1", "hasPort": true}}, get("tunnels"))
	assert.Equal(t, map[string]any{"open": true, "blocked": false, "allowlisted": false}, get("network"))

	assert.NotEmpty(t, get("snapshot", "imageId"))
	assert.Equal(t, "kept\n", get("snapshot", "restored"))
	assert.Equal(t, float64(5), get("entrypoint", "wait"))
	assert.Equal(t, float64(5), get("entrypoint", "poll"))

	assert.Equal(t, float64(4), get("list", "count"), "running sandboxes of the app: a, blocked, allowlisted, from snapshot")
	assert.Equal(t, float64(4), get("list", "unique"))
	assert.Equal(t, true, get("list", "hasA"))
	assert.Equal(t, float64(2), get("list", "tagged"))
	assert.Equal(t, true, get("list", "taggedHasA"))
	assert.Equal(t, true, get("list", "taggedHasB"))
	assert.Equal(t, true, get("get", "byId"))
	assert.Equal(t, true, get("get", "byName"))
	assert.Nil(t, get("get", "poll"), "a running sandbox polls as null")

	assert.Equal(t, float64(137), get("terminate", "code"))
	assert.Equal(t, float64(137), get("terminate", "poll"))
	assert.NotEqual(t, "ok", get("terminate", "execAfter"))
	assert.Equal(t, "NotFoundError", get("notFound", "id"))
	assert.Equal(t, "NotFoundError", get("notFound", "name"))
	assert.Equal(t, "NotFoundError", get("notFound", "image"))
}
