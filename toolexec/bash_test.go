package toolexec_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBashSmoke(t *testing.T) {
	ts := newToolset(t, newSandbox(t), nil)
	r := call(t, ts, "bash", m{"command": "echo hello; export FOO=bar; cd /tmp"})
	require.False(t, r.IsError, r.Text())
	assert.Equal(t, "hello\n", r.Text())
	r = call(t, ts, "bash", m{"command": "echo $FOO; pwd"})
	assert.Equal(t, "bar\n/tmp\n", r.Text())
	r = call(t, ts, "bash", m{"command": "false"})
	assert.True(t, r.IsError)
	assert.Equal(t, "\nexit code: 1", r.Text())
	r = call(t, ts, "bash", m{"command": "if"})
	assert.True(t, r.IsError)
	assert.True(t, strings.HasSuffix(r.Text(), "exit code: 2"), r.Text())
	r = call(t, ts, "bash", m{"command": "echo still alive"})
	assert.Equal(t, "still alive\n", r.Text())
}
