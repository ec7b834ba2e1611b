// Package jsclient_test drives Vercel's official JavaScript client
// (@vercel/sandbox, the version package-lock.json pins) against vercelfake
// with battery.mjs and checks what it reports.
package jsclient_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/perimeter-sdk/perimeter/internal/jsclient"
	"github.com/perimeter-sdk/perimeter/providers/vercel/vercelfake"
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

	fake := vercelfake.New(nil)
	defer fake.Close()
	out, stderr, err := jsclient.Run(ctx, install, filepath.Join(dir, "battery.mjs"), []string{
		"FAKE_URL=" + fake.URL(), "FAKE_TOKEN=" + fake.Token(), "FAKE_TEAM=" + fake.TeamID(), "FAKE_PROJECT=" + fake.ProjectID(),
		"VERCEL_SANDBOX_TELEMETRY_DISABLED=1", "VERCEL_TELEMETRY_DISABLED=1",
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
	cwd := "/vercel/sandbox"
	if !fake.Isolated() {
		t.Log("the fake runs commands on the host here (no namespaces): paths and users are the host's")
	}

	assert.Equal(t, "js-a", get("create", "name"))
	assert.Equal(t, "running", get("create", "status"))
	assert.Equal(t, "node24", get("create", "runtime"))
	assert.Equal(t, true, get("create", "persistent"))
	assert.Equal(t, map[string]any{"allow": []any{"example.com"}}, get("create", "policy"))
	assert.Equal(t, "https://js-a-3000.vercel.run", get("create", "domain"))

	assert.Equal(t, float64(3), get("exec", "exitCode"))
	assert.Equal(t, "out\n", get("exec", "stdout"))
	assert.Equal(t, "hi x\n", get("exec", "stderr"))
	assert.Equal(t, "out\n", get("exec", "streamedOut"))
	assert.Equal(t, "hi x\n", get("exec", "streamedErr"))
	assert.Equal(t, float64(127), get("missing"))
	if fake.Isolated() {
		assert.Equal(t, cwd, get("pwd"))
		if os.Geteuid() == 0 {
			assert.Equal(t, vercelfake.SandboxUser, get("user"))
			assert.Equal(t, vercelfake.SandboxUser, get("files", "owner"))
		}
	}
	assert.Equal(t, "root", get("sudoUser"))

	assert.Contains(t, get("kill", "logs"), "started")
	assert.Equal(t, float64(128+15), get("kill", "exitCode"))
	assert.Equal(t, float64(128+15), get("kill", "getExitCode"))

	assert.Contains(t, get("pty", "output"), "got:typed", "stdin through the PTY reached the command")
	assert.Equal(t, float64(0), get("pty", "exitCode"))

	assert.Equal(t, "hello", get("files", "text"))
	assert.Equal(t, []any{float64(0), float64(255), float64(1), float64(10)}, get("files", "binary"))
	assert.Nil(t, get("files", "missing"))
	assert.Equal(t, float64(0), get("files", "mkdir"))
	assert.Equal(t, float64(400), get("files", "mkdirAgain"))

	assert.Equal(t, map[string]any{
		"allow":   map[string]any{"*": []any{}, "api.example.com": []any{map[string]any{"transform": []any{map[string]any{"headers": map[string]any{"authorization": "<redacted>"}}}}}},
		"subnets": map[string]any{"deny": []any{"10.0.0.0/8"}},
	}, get("policyRules"))
	assert.Equal(t, "deny-all", get("policyDenyAll"))
	assert.Equal(t, "allow-all", get("update", "policy"))
	assert.Equal(t, float64(4), get("update", "vcpus"))
	before, _ := get("extend", "before").(float64)
	assert.Equal(t, before+60000, get("extend", "after"))

	snapID, _ := get("snapshot", "id").(string)
	assert.NotEmpty(t, snapID)
	assert.Equal(t, "created", get("snapshot", "status"))
	assert.Equal(t, float64(3600000), get("snapshot", "lifetime"))
	assert.Equal(t, "in the snapshot", get("snapshot", "afterResume"))
	assert.Contains(t, get("snapshotList"), snapID)
	assert.Equal(t, "created", get("snapshotGet"))
	assert.Equal(t, "in the snapshot", get("fromSnapshot"))

	assert.Equal(t, float64(2), get("list", "pages"))
	assert.Equal(t, []any{"js-a", "js-b", "js-c", "js-d"}, get("list", "names"))
	assert.Equal(t, []any{"js-a", "js-c"}, get("list", "tagged"))

	assert.Equal(t, "js-c", get("get", "name"))
	assert.Equal(t, "stopped", get("stop", "status"))
	assert.NotNil(t, get("stop", "snapshot"), "stopping a persistent sandbox returns its snapshot")
	assert.Equal(t, "running", get("resume", "status"))
	assert.Equal(t, "hello", get("resume", "kept"))
	assert.GreaterOrEqual(t, get("resume", "sessions"), float64(3))

	assert.Equal(t, float64(404), get("notFound", "deleted"))
	assert.Equal(t, float64(404), get("notFound", "never"))
	assert.Equal(t, float64(404), get("notFound", "command"))
	assert.Equal(t, float64(404), get("notFound", "snapshot"))
	assert.Equal(t, "deleted", get("snapshotDeleted"))
	assert.Equal(t, float64(0), get("left"))
}
