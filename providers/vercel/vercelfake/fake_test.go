package vercelfake

// These tests speak raw HTTP to the fake, as Vercel's SDK does, to pin the
// wire format independently of the Go adapter.

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

type client struct {
	t *testing.T
	s *Server
}

func newClient(t *testing.T) *client {
	s := New(nil)
	t.Cleanup(s.Close)
	return &client{t, s}
}

func (c *client) req(method, path string, body io.Reader, hdr map[string]string) *http.Response {
	c.t.Helper()
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	r, err := http.NewRequest(method, c.s.URL()+path+sep+"teamId="+c.s.TeamID(), body)
	if err != nil {
		c.t.Fatal(err)
	}
	r.Header.Set("Authorization", "Bearer "+c.s.Token())
	r.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func (c *client) json(method, path string, in any, wantStatus int) map[string]any {
	c.t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	resp := c.req(method, path, body, nil)
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		c.t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, raw, wantStatus)
	}
	var out map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			c.t.Fatalf("%s %s: not JSON: %q", method, path, raw)
		}
	}
	return out
}

func (c *client) create(body map[string]any) (name, session string) {
	c.t.Helper()
	body["projectId"] = c.s.ProjectID()
	out := c.json("POST", "/v2/sandboxes", body, 200)
	if out["resumed"] != false {
		c.t.Errorf("create: resumed = %v", out["resumed"])
	}
	return out["sandbox"].(map[string]any)["name"].(string), out["session"].(map[string]any)["id"].(string)
}

func errorCode(t *testing.T, resp *http.Response, status int, code string) {
	t.Helper()
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status || json.Unmarshal(raw, &e) != nil || e.Error.Code != code || e.Error.Message == "" {
		t.Errorf("got %d %s, want %d with error code %q", resp.StatusCode, raw, status, code)
	}
}

func TestAuthAndTeamAreChecked(t *testing.T) {
	c := newClient(t)
	r, _ := http.NewRequest("GET", c.s.URL()+"/v2/sandboxes?project="+c.s.ProjectID()+"&teamId="+c.s.TeamID(), nil)
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	errorCode(t, resp, 403, "forbidden")

	r, _ = http.NewRequest("GET", c.s.URL()+"/v2/sandboxes?project="+c.s.ProjectID(), nil)
	r.Header.Set("Authorization", "Bearer "+c.s.Token())
	resp, err = http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	errorCode(t, resp, 400, "bad_request")

	errorCode(t, c.req("GET", "/v2/nothing", nil, nil), 404, "not_found")
	// The SDK's base URL has an /api prefix; the fake accepts both.
	if resp := c.req("GET", "/api/v2/sandboxes?project="+c.s.ProjectID(), nil, nil); resp.StatusCode != 200 {
		t.Errorf("/api prefix: %d", resp.StatusCode)
	}
}

func TestCommandStreamIsNDJSON(t *testing.T) {
	c := newClient(t)
	_, sid := c.create(map[string]any{})
	resp := c.req("POST", "/v2/sandboxes/sessions/"+sid+"/cmd", strings.NewReader(
		`{"command":"sh","args":["-c","echo out; echo err >&2; exit 7"],"env":{},"sudo":false,"wait":true,"logs":true}`), nil)
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Fatalf("content type %q, want exactly application/x-ndjson", ct)
	}
	var lines []map[string]any
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q is not JSON", sc.Text())
		}
		lines = append(lines, m)
	}
	if len(lines) < 4 {
		t.Fatalf("lines: %v", lines)
	}
	first, last := lines[0]["command"].(map[string]any), lines[len(lines)-1]["command"].(map[string]any)
	if first["exitCode"] != nil || last["exitCode"] != float64(7) || first["id"] != last["id"] ||
		!strings.HasPrefix(first["id"].(string), "cmd_") {
		t.Errorf("command records: first %v last %v", first, last)
	}
	got := map[string]string{}
	for _, l := range lines[1 : len(lines)-1] {
		got[l["stream"].(string)] += l["data"].(string)
	}
	if got["stdout"] != "out\n" || got["stderr"] != "err\n" {
		t.Errorf("log lines: %v", got)
	}

	// The logs route replays the output; GET ?wait=true gives the code.
	id := first["id"].(string)
	resp = c.req("GET", "/v2/sandboxes/sessions/"+sid+"/cmd/"+id+"/logs", nil, nil)
	raw, _ := io.ReadAll(resp.Body)
	if resp.Header.Get("Content-Type") != "application/x-ndjson" || !strings.Contains(string(raw), `{"stream":"stdout","data":"out\n"}`) {
		t.Errorf("logs: %s %q", resp.Header.Get("Content-Type"), raw)
	}
	out := c.json("GET", "/v2/sandboxes/sessions/"+sid+"/cmd/"+id+"?wait=true", nil, 200)
	if out["command"].(map[string]any)["exitCode"] != float64(7) {
		t.Errorf("get command: %v", out)
	}
	errorCode(t, c.req("GET", "/v2/sandboxes/sessions/"+sid+"/cmd/cmd_nope", nil, nil), 404, "not_found")
}

func TestDetachedCommandKill(t *testing.T) {
	c := newClient(t)
	_, sid := c.create(map[string]any{})
	out := c.json("POST", "/v2/sandboxes/sessions/"+sid+"/cmd", map[string]any{"command": "sleep", "args": []string{"30"}}, 200)
	cmd := out["command"].(map[string]any)
	if cmd["exitCode"] != nil {
		t.Fatalf("detached command already done: %v", cmd)
	}
	id := cmd["id"].(string)
	c.json("POST", "/v2/sandboxes/sessions/"+sid+"/cmd/"+id+"/kill", map[string]any{"signal": 15}, 200)
	done := make(chan map[string]any)
	go func() {
		done <- c.json("GET", "/v2/sandboxes/sessions/"+sid+"/cmd/"+id+"?wait=true", nil, 200)
	}()
	select {
	case out := <-done:
		if code := out["command"].(map[string]any)["exitCode"]; code != float64(128+15) {
			t.Errorf("killed with 15: exit code %v", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("kill did not end the command")
	}
}

func tarGz(t *testing.T, name string, data []byte, mode int64) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(data)), Typeflag: tar.TypeReg})
	tw.Write(data)
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func TestFilesWriteReadMkdir(t *testing.T) {
	c := newClient(t)
	_, sid := c.create(map[string]any{})
	sess := c.json("GET", "/v2/sandboxes/sessions/"+sid, nil, 200)["session"].(map[string]any)
	cwd := sess["cwd"].(string)
	if c.s.Isolated() && cwd != "/vercel/sandbox" {
		t.Errorf("isolated fake's cwd %q", cwd)
	}
	data := []byte("bin\x00\xff")
	body := tarGz(t, strings.TrimPrefix(cwd, "/")+"/dir/f.bin", data, 0o600)
	resp := c.req("POST", "/v2/sandboxes/sessions/"+sid+"/fs/write", bytes.NewReader(body),
		map[string]string{"Content-Type": "application/gzip", "x-cwd": "/"})
	if resp.StatusCode != 200 {
		raw, _ := io.ReadAll(resp.Body)
		t.Fatalf("fs/write: %d %s", resp.StatusCode, raw)
	}
	resp = c.req("POST", "/v2/sandboxes/sessions/"+sid+"/fs/read", strings.NewReader(`{"path":"dir/f.bin"}`), nil)
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/octet-stream" || !bytes.Equal(raw, data) {
		t.Errorf("fs/read: %d %s %q", resp.StatusCode, resp.Header.Get("Content-Type"), raw)
	}
	resp = c.req("POST", "/v2/sandboxes/sessions/"+sid+"/fs/read", strings.NewReader(`{"path":"missing"}`), nil)
	raw, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != 404 || len(raw) != 0 {
		t.Errorf("fs/read of a missing file: %d %q, want 404 with an empty body", resp.StatusCode, raw)
	}
	c.json("POST", "/v2/sandboxes/sessions/"+sid+"/fs/mkdir", map[string]any{"path": "newdir"}, 200)
	errorCode(t, c.req("POST", "/v2/sandboxes/sessions/"+sid+"/fs/mkdir", strings.NewReader(`{"path":"a/b/c"}`), nil), 400, "bad_request")
	errorCode(t, c.req("POST", "/v2/sandboxes/sessions/"+sid+"/fs/write", strings.NewReader("x"),
		map[string]string{"Content-Type": "application/json"}), 400, "bad_request")
}

func TestStopResumeAnd410(t *testing.T) {
	c := newClient(t)
	name, sid := c.create(map[string]any{})
	c.json("POST", "/v2/sandboxes/sessions/"+sid+"/fs/mkdir", map[string]any{"path": "kept"}, 200)
	out := c.json("POST", "/v2/sandboxes/sessions/"+sid+"/stop", nil, 200)
	if out["session"].(map[string]any)["status"] != "stopped" {
		t.Errorf("stop: %v", out)
	}
	errorCode(t, c.req("POST", "/v2/sandboxes/sessions/"+sid+"/cmd", strings.NewReader(`{"command":"true"}`), nil), 410, "sandbox_stopped")
	errorCode(t, c.req("POST", "/v2/sandboxes/sessions/"+sid+"/fs/read", strings.NewReader(`{"path":"x"}`), nil), 410, "sandbox_stopped")

	out = c.json("GET", "/v2/sandboxes/"+name+"?projectId="+c.s.ProjectID(), nil, 200)
	if out["resumed"] != false || out["session"].(map[string]any)["id"] != sid {
		t.Errorf("get without resume started a session: %v", out["session"])
	}
	out = c.json("GET", "/v2/sandboxes/"+name+"?projectId="+c.s.ProjectID()+"&resume=true", nil, 200)
	newSid := out["session"].(map[string]any)["id"].(string)
	if out["resumed"] != true || newSid == sid || !strings.HasPrefix(newSid, "se_") {
		t.Fatalf("resume: %v", out)
	}
	// The persistent sandbox kept its files.
	errorCode(t, c.req("POST", "/v2/sandboxes/sessions/"+newSid+"/fs/mkdir", strings.NewReader(`{"path":"kept"}`), nil), 400, "bad_request")

	// A snapshot stops the session, as on the real service.
	out = c.json("POST", "/v2/sandboxes/sessions/"+newSid+"/snapshot", nil, 200)
	snap := out["snapshot"].(map[string]any)
	if out["session"].(map[string]any)["status"] != "stopped" || !strings.HasPrefix(snap["id"].(string), "snap_") {
		t.Errorf("snapshot: %v", out)
	}
	c.json("DELETE", "/v2/sandboxes/snapshots/"+snap["id"].(string), nil, 200)
	resp := c.req("POST", "/v2/sandboxes", strings.NewReader(`{"projectId":"`+c.s.ProjectID()+`","source":{"type":"snapshot","snapshotId":"`+snap["id"].(string)+`"}}`), nil)
	errorCode(t, resp, 410, "snapshot_not_found")

	c.json("DELETE", "/v2/sandboxes/"+name+"?projectId="+c.s.ProjectID(), nil, 200)
	errorCode(t, c.req("GET", "/v2/sandboxes/"+name+"?projectId="+c.s.ProjectID(), nil, nil), 404, "not_found")
}

func TestListPaginatesAndFiltersOneTag(t *testing.T) {
	c := newClient(t)
	for i := range 3 {
		c.create(map[string]any{"tags": map[string]string{"k": []string{"a", "b", "a"}[i]}})
	}
	page := c.json("GET", "/v2/sandboxes?project="+c.s.ProjectID()+"&limit=2", nil, 200)
	next, _ := page["pagination"].(map[string]any)["next"].(string)
	if len(page["sandboxes"].([]any)) != 2 || next == "" {
		t.Fatalf("first page: %v", page)
	}
	page = c.json("GET", "/v2/sandboxes?project="+c.s.ProjectID()+"&limit=2&cursor="+next, nil, 200)
	if len(page["sandboxes"].([]any)) != 1 || page["pagination"].(map[string]any)["next"] != nil {
		t.Errorf("second page: %v", page)
	}
	page = c.json("GET", "/v2/sandboxes?project="+c.s.ProjectID()+"&tags=k:a", nil, 200)
	if len(page["sandboxes"].([]any)) != 2 {
		t.Errorf("tag filter: %v", page)
	}
	errorCode(t, c.req("GET", "/v2/sandboxes?project="+c.s.ProjectID()+"&tags=k:a&tags=k:b", nil, nil), 400, "bad_request")
}

func TestFaultsAndCutStreams(t *testing.T) {
	c := newClient(t)
	c.s.Fail(Fault{Method: "GET", Path: "/v2/sandboxes", Status: 429, Code: "rate_limited", RetryAfter: "3"})
	resp := c.req("GET", "/v2/sandboxes?project="+c.s.ProjectID(), nil, nil)
	if resp.Header.Get("Retry-After") != "3" {
		t.Errorf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
	errorCode(t, resp, 429, "rate_limited")
	if c.json("GET", "/v2/sandboxes?project="+c.s.ProjectID(), nil, 200) == nil {
		t.Error("the fault did not clear")
	}
	_, sid := c.create(map[string]any{})
	c.s.CutStreams(1, 1)
	resp = c.req("POST", "/v2/sandboxes/sessions/"+sid+"/cmd", strings.NewReader(
		`{"command":"sh","args":["-c","echo 1; sleep 0.05; echo 2; sleep 0.05; echo 3"],"wait":true,"logs":true}`), nil)
	raw, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Errorf("a cut stream ended cleanly: %q", raw)
	}
	if strings.Count(string(raw), "\n") > 2 {
		t.Errorf("the stream was not cut after one log line: %q", raw)
	}
}
