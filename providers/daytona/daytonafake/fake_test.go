package daytonafake

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// client is raw HTTP against a fake, with the fake's mismatches collected.
type client struct {
	t   *testing.T
	f   *Server
	mu  sync.Mutex
	bad []error
}

func newClient(t *testing.T, opts *Options) *client {
	c := &client{t: t}
	var o Options
	if opts != nil {
		o = *opts
	}
	o.Report = func(err error) {
		c.mu.Lock()
		c.bad = append(c.bad, err)
		c.mu.Unlock()
	}
	c.f = New(&o)
	t.Cleanup(c.f.Close)
	return c
}

func (c *client) mismatches() []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bad
}

// do sends a request with the fake's token and the SDK version header.
func (c *client) do(method, url, contentType string, body io.Reader) (*http.Response, []byte) {
	c.t.Helper()
	req, err := http.NewRequest(method, url, body)
	require.NoError(c.t, err)
	req.Header.Set("Authorization", "Bearer "+c.f.Token())
	req.Header.Set("X-Daytona-SDK-Version", "0.190.0")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	return resp, raw
}

func (c *client) json(method, url string, in any, out any) int {
	c.t.Helper()
	var body io.Reader
	ct := ""
	if in != nil {
		raw, err := json.Marshal(in)
		require.NoError(c.t, err)
		body, ct = bytes.NewReader(raw), "application/json"
	}
	resp, raw := c.do(method, url, ct, body)
	if out != nil && resp.StatusCode < 300 {
		require.NoError(c.t, json.Unmarshal(raw, out), "body %s", raw)
	}
	return resp.StatusCode
}

type sandboxOut struct {
	ID, State, ToolboxProxyURL string
	Labels                     map[string]string
}

// create makes a sandbox and polls it to "started".
func (c *client) create(body map[string]any) sandboxOut {
	c.t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	var sb sandboxOut
	require.Equal(c.t, 200, c.json("POST", c.f.APIURL()+"/sandbox", body, &sb))
	assert.Equal(c.t, "starting", sb.State, "create answers before the sandbox is started")
	require.Equal(c.t, 200, c.json("GET", c.f.APIURL()+"/sandbox/"+sb.ID, nil, &sb))
	require.Equal(c.t, "started", sb.State)
	return sb
}

func (c *client) tb(sb sandboxOut) string { return sb.ToolboxProxyURL + "/" + sb.ID }

func TestRequestNotMatchingTheSpecIsRefusedAndReported(t *testing.T) {
	c := newClient(t, &Options{NoIsolation: true})
	code := c.json("POST", c.f.APIURL()+"/sandbox", map[string]any{"cpu": "two"}, nil)
	assert.Equal(t, 400, code)
	require.Len(t, c.mismatches(), 1)
	assert.Contains(t, c.mismatches()[0].Error(), "cpu")
	assert.Len(t, c.f.Mismatches(), 1)
}

func TestTokenIsRequired(t *testing.T) {
	c := newClient(t, &Options{NoIsolation: true})
	req, _ := http.NewRequest("GET", c.f.APIURL()+"/sandbox", nil)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 401, resp.StatusCode)
}

func TestSessionCommandSplitsOutputAndTakesInput(t *testing.T) {
	c := newClient(t, &Options{NoIsolation: true})
	sb := c.create(map[string]any{"env": map[string]string{"GREETING": "hi"}})
	require.Equal(t, 201, c.json("POST", c.tb(sb)+"/process/session", map[string]any{"sessionId": "s1"}, nil))

	var res struct {
		CmdID    string `json:"cmdId"`
		ExitCode *int   `json:"exitCode"`
	}
	require.Equal(t, 202, c.json("POST", c.tb(sb)+"/process/session/s1/exec",
		map[string]any{"command": `echo "$GREETING"; read x; echo "got $x" >&2; exit 3`, "runAsync": true}, &res))
	require.NotEmpty(t, res.CmdID)
	require.Nil(t, res.ExitCode)

	cmdURL := c.tb(sb) + "/process/session/s1/command/" + res.CmdID

	// The follow stream carries the markers of the split output. Input
	// goes once "hi" has arrived, so the order of the stream is fixed.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h := http.Header{"Authorization": {"Bearer " + c.f.Token()}}
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(cmdURL, "http")+"/logs?follow=true", &websocket.DialOptions{HTTPHeader: h})
	require.NoError(t, err)
	defer conn.CloseNow()
	var got []byte
	sent := false
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			assert.Equal(t, websocket.StatusNormalClosure, websocket.CloseStatus(err), "%v", err)
			break
		}
		got = append(got, data...)
		if !sent && bytes.Contains(got, []byte("hi\n")) {
			sent = true
			assert.Equal(t, 204, c.json("POST", cmdURL+"/input", map[string]any{"data": "line\n"}, nil))
		}
	}
	assert.Equal(t, "\x01\x01\x01hi\n\x02\x02\x02got line\n", string(got))

	var cmd struct {
		ID       string `json:"id"`
		ExitCode *int   `json:"exitCode"`
	}
	require.Equal(t, 200, c.json("GET", cmdURL, nil, &cmd))
	require.NotNil(t, cmd.ExitCode)
	assert.Equal(t, 3, *cmd.ExitCode)

	var logs struct{ Output, Stdout, Stderr string }
	require.Equal(t, 200, c.json("GET", cmdURL+"/logs", nil, &logs))
	assert.Equal(t, "hi\n", logs.Stdout)
	assert.Equal(t, "got line\n", logs.Stderr)
	assert.Equal(t, "hi\ngot line\n", logs.Output)

	// Without the SDK version header the daemon answers plain text.
	req, _ := http.NewRequest("GET", cmdURL+"/logs", nil)
	req.Header.Set("Authorization", "Bearer "+c.f.Token())
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, "text/plain", resp.Header.Get("Content-Type"))
	assert.Equal(t, "hi\ngot line\n", string(raw))
	assert.Empty(t, c.mismatches())
}

func TestExecuteMergesOutput(t *testing.T) {
	c := newClient(t, &Options{NoIsolation: true})
	sb := c.create(nil)
	var res struct {
		ExitCode int
		Result   string
	}
	require.Equal(t, 200, c.json("POST", c.tb(sb)+"/process/execute",
		map[string]any{"command": "echo out; echo err >&2; echo $K; exit 4", "envs": map[string]string{"K": "v"}}, &res))
	assert.Equal(t, 4, res.ExitCode)
	assert.Equal(t, "out\nerr\nv\n", res.Result)
	assert.Empty(t, c.mismatches())
}

func TestUploadAnswersWithAnEmptyBodyAsTheDaemonDoes(t *testing.T) {
	c := newClient(t, &Options{NoIsolation: true})
	sb := c.create(nil)
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, _ := mw.CreateFormFile("file", "x")
	fw.Write([]byte("content"))
	mw.Close()
	resp, raw := c.do("POST", c.tb(sb)+"/files/upload?path=sub/f.txt", mw.FormDataContentType(), &buf)
	assert.Equal(t, 200, resp.StatusCode)
	assert.Empty(t, raw)

	resp, raw = c.do("GET", c.tb(sb)+"/files/download?path=sub/f.txt", "", nil)
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, "content", string(raw))

	var info struct {
		Name        string
		Size        int64
		IsDir       bool
		Permissions string
	}
	require.Equal(t, 200, c.json("GET", c.tb(sb)+"/files/info?path=sub/f.txt", nil, &info))
	assert.Equal(t, "f.txt", info.Name)
	assert.EqualValues(t, 7, info.Size)
	assert.Equal(t, "0644", info.Permissions)

	resp, raw = c.do("GET", c.tb(sb)+"/files/info?path=missing", "", nil)
	assert.Equal(t, 404, resp.StatusCode)
	var e map[string]any
	require.NoError(t, json.Unmarshal(raw, &e))
	assert.Equal(t, "GET", e["method"], "daemon errors name the request")
	assert.Empty(t, c.mismatches())
}

func TestStoppedSandboxKeepsFilesAndRefusesToolboxCalls(t *testing.T) {
	c := newClient(t, &Options{NoIsolation: true})
	sb := c.create(nil)
	require.Equal(t, 201, c.json("POST", c.tb(sb)+"/files/folder?path=kept&mode=0755", nil, nil))
	require.True(t, c.f.Stop(sb.ID))

	resp, raw := c.do("GET", c.tb(sb)+"/files/info?path=kept", "", nil)
	assert.Equal(t, 400, resp.StatusCode)
	assert.NotContains(t, string(raw), `"method"`, "the proxy answers, not the daemon")

	var out sandboxOut
	require.Equal(t, 200, c.json("POST", c.f.APIURL()+"/sandbox/"+sb.ID+"/start", nil, &out))
	require.Equal(t, 200, c.json("GET", c.f.APIURL()+"/sandbox/"+sb.ID, nil, &out))
	require.Equal(t, "started", out.State)
	require.Equal(t, 200, c.json("GET", c.tb(sb)+"/files/info?path=kept", nil, nil))
	assert.Empty(t, c.mismatches())
}

func TestListFollowsCursorsAndFiltersLabels(t *testing.T) {
	c := newClient(t, &Options{NoIsolation: true})
	for _, v := range []string{"a", "b", "a", "a"} {
		c.create(map[string]any{"labels": map[string]string{"pick": v}})
	}
	var ids []string
	cursor := ""
	for pages := 0; ; pages++ {
		require.Less(t, pages, 5)
		url := c.f.APIURL() + `/sandbox?limit=2&labels=%7B%22pick%22%3A%22a%22%7D`
		if cursor != "" {
			url += "&cursor=" + cursor
		}
		var page struct {
			Items      []sandboxOut
			NextCursor *string
		}
		require.Equal(t, 200, c.json("GET", url, nil, &page))
		for _, it := range page.Items {
			assert.Equal(t, "a", it.Labels["pick"])
			ids = append(ids, it.ID)
		}
		if page.NextCursor == nil {
			break
		}
		cursor = *page.NextCursor
	}
	assert.Len(t, ids, 3)
	assert.Empty(t, c.mismatches())
}

func TestPreviewURLsNeedTheirToken(t *testing.T) {
	c := newClient(t, &Options{NoIsolation: true})
	sb := c.create(nil)
	target := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "served "+r.URL.Path)
	})}
	ln := listenLoopback(t)
	go target.Serve(ln)
	t.Cleanup(func() { target.Close() })
	port := ln.Addr().String()[strings.LastIndexByte(ln.Addr().String(), ':')+1:]

	var plain, signed struct{ URL, Token string }
	require.Equal(t, 200, c.json("GET", c.f.APIURL()+"/sandbox/"+sb.ID+"/ports/"+port+"/preview-url", nil, &plain))
	require.Equal(t, 200, c.json("GET", c.f.APIURL()+"/sandbox/"+sb.ID+"/ports/"+port+"/signed-preview-url?expiresInSeconds=60", nil, &signed))

	get := func(url string, h http.Header) (int, string) {
		req, _ := http.NewRequest("GET", url, nil)
		for k, v := range h {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, _ := get(plain.URL+"/x", nil)
	assert.Equal(t, 401, code, "the plain URL of a private sandbox needs the token")
	code, body := get(plain.URL+"/x", http.Header{"X-Daytona-Preview-Token": {plain.Token}})
	assert.Equal(t, 200, code)
	assert.Equal(t, "served /x", body)
	code, body = get(signed.URL+"/y", nil)
	assert.Equal(t, 200, code)
	assert.Equal(t, "served /y", body)

	require.Equal(t, 200, c.json("POST", c.f.APIURL()+"/sandbox/"+sb.ID+"/ports/"+port+"/signed-preview-url/"+signed.Token+"/expire", nil, nil))
	code, _ = get(signed.URL+"/y", nil)
	assert.Equal(t, 401, code, "an expired signed URL answers no more")
	assert.Empty(t, c.mismatches())
}
