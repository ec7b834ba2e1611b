package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRunLimitAndNetworkFlags(t *testing.T) {
	t.Parallel()
	code, out, errOut := cli(t, "", "run", "--provider", providerURL(t), "--memory", "64M", "--pids", "40", "--cpus", "0.5",
		"--disk", "8M", "--network", "none", "--", "sh", "-c", "df -k /tmp | tail -1")
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, "8192", strings.Fields(out)[1], "--disk 8M did not size /tmp: %s", out)

	// --allow alone means the allowlist mode.
	code, out, errOut = cli(t, "", "run", "--provider", providerURL(t), "--allow", "example.com,*.example.org", "--", "sh", "-c", "echo $HTTPS_PROXY")
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, "http://127.0.0.1:3128\n", out)

	for _, bad := range [][]string{
		{"--network", "wide"},
		{"--network", "none", "--allow", "example.com"},
		{"--memory", "lots"},
		{"--memory", "-5M"},
		{"--pids", "-1"},
	} {
		args := append(append([]string{"run", "--provider", providerURL(t)}, bad...), "--", "true")
		code, _, errOut := cli(t, "", args...)
		assert.Equal(t, 2, code, "%v was accepted: %s", bad, errOut)
	}
}

func TestSizeFlag(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{"4096": 4096, "512M": 512 << 20, "2G": 2 << 30, "1GiB": 1 << 30, "64mb": 64 << 20, "3k": 3 << 10, "1T": 1 << 40} {
		var n int64
		require.NoError(t, sizeFlag(&n)(in), in)
		assert.Equal(t, want, n, in)
	}
	for _, in := range []string{"", "M", "0", "-1", "1.5G", "9999999999T"} {
		var n int64
		assert.Error(t, sizeFlag(&n)(in), in)
	}
}
