package daytonafake

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The validator refuses responses that do not match the spec, so a fake
// answering wrongly fails the test that caused it.
func TestValidatorRefusesAWrongResponse(t *testing.T) {
	v, err := loadValidator("toolbox API", "testdata/toolbox-v0.190.0.yaml")
	require.NoError(t, err)
	r := httptest.NewRequest("GET", "http://fake/toolbox/sb-1/work-dir", nil)
	x, err := v.checkRequest(r, "/work-dir")
	require.NoError(t, err)
	h := http.Header{"Content-Type": {"application/json"}}
	assert.NoError(t, x.checkResponse(200, h, []byte(`{"dir":"/home/daytona"}`)))
	err = x.checkResponse(200, h, []byte(`{"dir":5}`))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "dir")
	assert.Error(t, x.checkResponse(200, h, []byte(`{}`)), "dir is required")

	r = httptest.NewRequest("POST", "http://fake/toolbox/sb-1/process/execute", strings.NewReader(`{"cwd":"/"}`))
	r.Header.Set("Content-Type", "application/json")
	_, err = v.checkRequest(r, "/process/execute")
	assert.ErrorContains(t, err, "command", "command is required")

	r = httptest.NewRequest("GET", "http://fake/toolbox/sb-1/no/such/route", nil)
	_, err = v.checkRequest(r, "/no/such/route")
	assert.ErrorContains(t, err, "not in the spec")
}
