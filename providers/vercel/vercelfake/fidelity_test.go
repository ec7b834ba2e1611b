package vercelfake

// Regression tests for fidelity bugs that Vercel's official client found
// (issue 12). Like fake_test.go they speak raw HTTP.

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// run runs a command with wait+logs and returns its stdout and exit code.
func (c *client) run(sid string, body map[string]any) (stdout string, code int) {
	c.t.Helper()
	body["wait"], body["logs"] = true, true
	b, _ := json.Marshal(body)
	resp := c.req("POST", "/v2/sandboxes/sessions/"+sid+"/cmd", strings.NewReader(string(b)), nil)
	if resp.StatusCode != 200 {
		raw, _ := io.ReadAll(resp.Body)
		c.t.Fatalf("cmd %v: %d %s", body, resp.StatusCode, raw)
	}
	code = -1
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			var m struct {
				Command *struct {
					ExitCode *int `json:"exitCode"`
				} `json:"command"`
				Stream string `json:"stream"`
				Data   any    `json:"data"`
			}
			if json.Unmarshal(line, &m) != nil {
				c.t.Fatalf("not JSON: %q", line)
			}
			if m.Command != nil && m.Command.ExitCode != nil {
				code = *m.Command.ExitCode
			}
			if m.Stream == "stdout" {
				stdout += m.Data.(string)
			}
		}
		if err != nil {
			return stdout, code
		}
	}
}

// rawJSON returns the body of a request that must answer 200.
func (c *client) rawJSON(method, path string, body string) string {
	c.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	resp := c.req(method, path, r, nil)
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		c.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	return string(raw)
}

// policyOf extracts sandbox.networkPolicy (or session.networkPolicy) from a
// response body as raw JSON, failing on a null anywhere in it.
func policyOf(t *testing.T, raw, key string) map[string]any {
	t.Helper()
	var out map[string]json.RawMessage
	var obj map[string]json.RawMessage
	if json.Unmarshal([]byte(raw), &out) != nil || json.Unmarshal(out[key], &obj) != nil {
		t.Fatalf("no %s object in %s", key, raw)
	}
	p := obj["networkPolicy"]
	if strings.Contains(string(p), "null") {
		t.Errorf("%s.networkPolicy carries null (the official client accepts absent or an array): %s", key, p)
	}
	var m map[string]any
	json.Unmarshal(p, &m)
	return m
}

func TestNetworkPolicyResponsesOmitAbsentLists(t *testing.T) {
	c := newClient(t)
	raw := c.rawJSON("POST", "/v2/sandboxes",
		`{"projectId":"`+c.s.ProjectID()+`","networkPolicy":{"allow":["example.com"]}}`)
	p := policyOf(t, raw, "sandbox")
	policyOf(t, raw, "session")
	if p["mode"] != "custom" || len(p["allowedDomains"].([]any)) != 1 {
		t.Errorf("policy %v", p)
	}
	for _, k := range []string{"allowedCIDRs", "deniedCIDRs", "injectionRules", "forwardRules"} {
		if _, ok := p[k]; ok {
			t.Errorf("policy has %s though the request had none: %v", k, p)
		}
	}
	// One such sandbox must not poison the list.
	list := c.rawJSON("GET", "/v2/sandboxes?project="+c.s.ProjectID(), "")
	if strings.Contains(strings.ReplaceAll(list, `"next":null`, ""), "null") {
		t.Errorf("list carries null: %s", list)
	}
	var created struct {
		Session struct{ ID string } `json:"session"`
	}
	json.Unmarshal([]byte(raw), &created)

	// Per-domain rules come back as injection rules (names only: values
	// are secrets) and forward rules.
	raw = c.rawJSON("POST", "/v2/sandboxes/sessions/"+created.Session.ID+"/network-policy", `{
		"allow": {
			"api.example.com": [{"transform": [{"headers": {"authorization": "Bearer s3cret"}}]}],
			"fwd.example.com": [{"match": {"path": {"startsWith": "/v1"}}, "forwardURL": "https://proxy.example.com"}],
			"*": []
		},
		"subnets": {"deny": ["10.0.0.0/8"]}
	}`)
	if strings.Contains(raw, "s3cret") {
		t.Errorf("a header value was echoed: %s", raw)
	}
	p = policyOf(t, raw, "session")
	inj, _ := p["injectionRules"].([]any)
	fwd, _ := p["forwardRules"].([]any)
	if len(inj) != 1 || inj[0].(map[string]any)["domain"] != "api.example.com" ||
		!slices.Equal(anyStrings(inj[0].(map[string]any)["headerNames"]), []string{"authorization"}) {
		t.Errorf("injectionRules %v", p["injectionRules"])
	}
	if len(fwd) != 1 || fwd[0].(map[string]any)["forwardURL"] != "https://proxy.example.com" || fwd[0].(map[string]any)["match"] == nil {
		t.Errorf("forwardRules %v", p["forwardRules"])
	}
	if !slices.Equal(anyStrings(p["deniedCIDRs"]), []string{"10.0.0.0/8"}) || p["allowedCIDRs"] != nil {
		t.Errorf("CIDRs %v / %v", p["allowedCIDRs"], p["deniedCIDRs"])
	}
	if !slices.Equal(anyStrings(p["allowedDomains"]), []string{"*", "api.example.com", "fwd.example.com"}) {
		t.Errorf("allowedDomains %v", p["allowedDomains"])
	}
}

func anyStrings(v any) []string {
	l, _ := v.([]any)
	out := []string{}
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

func TestUnservedRoutesAnswerAsUnknownRoutes(t *testing.T) {
	c := newClient(t)
	name, _ := c.create(map[string]any{})
	for _, r := range []struct{ method, path string }{
		{"GET", "/v2/sandboxes/drives?projectId=" + c.s.ProjectID()},
		{"POST", "/v2/sandboxes/drives/d1?projectId=" + c.s.ProjectID()},
		{"GET", "/v2/sandboxes/snapshots/tree?project=" + c.s.ProjectID() + "&snapshotId=snap_x"},
		{"POST", "/v2/sandboxes/" + name + "/fork?projectId=" + c.s.ProjectID()},
		{"DELETE", "/v2/sandboxes/sessions?project=" + c.s.ProjectID()},
		{"PUT", "/v2/sandboxes/" + name + "?projectId=" + c.s.ProjectID()},
	} {
		resp := c.req(r.method, r.path, nil, nil)
		raw, _ := io.ReadAll(resp.Body)
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		json.Unmarshal(raw, &e)
		if resp.StatusCode != 404 || e.Error.Code != "not_found" || !strings.HasPrefix(e.Error.Message, "No route for ") {
			t.Errorf("%s %s: %d %s, want 404 not_found for an unknown route", r.method, r.path, resp.StatusCode, raw)
		}
	}
}

func TestSnapshotAndSessionListings(t *testing.T) {
	c := newClient(t)
	name, sid := c.create(map[string]any{})
	other, _ := c.create(map[string]any{})

	out := c.json("POST", "/v2/sandboxes/sessions/"+sid+"/snapshot", map[string]any{"expiration": 3600000}, 200)
	snap1 := out["snapshot"].(map[string]any)
	if snap1["expiresAt"] != snap1["createdAt"].(float64)+3600000 {
		t.Errorf("expiration 1h: createdAt %v expiresAt %v", snap1["createdAt"], snap1["expiresAt"])
	}
	out = c.json("GET", "/v2/sandboxes/"+name+"?projectId="+c.s.ProjectID()+"&resume=true", nil, 200)
	sid2 := out["session"].(map[string]any)["id"].(string)
	out = c.json("POST", "/v2/sandboxes/sessions/"+sid2+"/snapshot", map[string]any{"expiration": 0}, 200)
	snap2 := out["snapshot"].(map[string]any)
	if _, ok := snap2["expiresAt"]; ok {
		t.Errorf("expiration 0 means none, got expiresAt %v", snap2["expiresAt"])
	}

	// Two snapshots of name, one page each, newest first.
	q := "/v2/sandboxes/snapshots?project=" + c.s.ProjectID() + "&name=" + name
	page := c.json("GET", q+"&limit=1", nil, 200)
	next, _ := page["pagination"].(map[string]any)["next"].(string)
	if l := page["snapshots"].([]any); len(l) != 1 || l[0].(map[string]any)["id"] != snap2["id"] || next != snap1["id"] {
		t.Fatalf("first page: %v", page)
	}
	page = c.json("GET", q+"&limit=1&cursor="+next, nil, 200)
	if l := page["snapshots"].([]any); len(l) != 1 || l[0].(map[string]any)["id"] != snap1["id"] || page["pagination"].(map[string]any)["next"] != nil {
		t.Errorf("second page: %v", page)
	}
	page = c.json("GET", q+"&sortOrder=asc", nil, 200)
	if l := page["snapshots"].([]any); len(l) != 2 || l[0].(map[string]any)["id"] != snap1["id"] {
		t.Errorf("ascending: %v", page)
	}
	page = c.json("GET", "/v2/sandboxes/snapshots?project="+c.s.ProjectID()+"&name="+other, nil, 200)
	if len(page["snapshots"].([]any)) != 0 {
		t.Errorf("snapshots of a sandbox that has none: %v", page)
	}
	errorCode(t, c.req("GET", "/v2/sandboxes/snapshots", nil, nil), 404, "not_found") // no project

	page = c.json("GET", "/v2/sandboxes/sessions?project="+c.s.ProjectID()+"&name="+name, nil, 200)
	var ids []string
	for _, s := range page["sessions"].([]any) {
		ids = append(ids, s.(map[string]any)["id"].(string))
	}
	if !slices.Equal(ids, []string{sid2, sid}) {
		t.Errorf("sessions of %s: %v, want [%s %s]", name, ids, sid2, sid)
	}
	page = c.json("GET", "/v2/sandboxes/sessions?project="+c.s.ProjectID(), nil, 200)
	if len(page["sessions"].([]any)) != 3 {
		t.Errorf("sessions of the project: %v", page)
	}
}

func TestPatchResourcesAndListSorting(t *testing.T) {
	c := newClient(t)
	for _, n := range []string{"b-box", "c-box", "a-box"} {
		c.create(map[string]any{"name": n})
	}
	out := c.json("PATCH", "/v2/sandboxes/b-box?projectId="+c.s.ProjectID(), map[string]any{"resources": map[string]any{"vcpus": 4}}, 200)
	if sb := out["sandbox"].(map[string]any); sb["vcpus"] != float64(4) || sb["memory"] != float64(8192) {
		t.Errorf("PATCH resources: %v", sb)
	}
	if sb := c.json("GET", "/v2/sandboxes/b-box?projectId="+c.s.ProjectID(), nil, 200)["sandbox"].(map[string]any); sb["vcpus"] != float64(4) {
		t.Errorf("after PATCH resources, get: %v", sb)
	}
	errorCode(t, c.req("PATCH", "/v2/sandboxes/b-box?projectId="+c.s.ProjectID(), strings.NewReader(`{"mounts":{}}`), nil), 400, "bad_request")

	names := func(q string) []string {
		var out []string
		for _, sb := range c.json("GET", "/v2/sandboxes?project="+c.s.ProjectID()+q, nil, 200)["sandboxes"].([]any) {
			out = append(out, sb.(map[string]any)["name"].(string))
		}
		return out
	}
	if got := names("&sortBy=name&sortOrder=asc"); !slices.Equal(got, []string{"a-box", "b-box", "c-box"}) {
		t.Errorf("sortBy=name asc: %v", got)
	}
	if got := names("&sortBy=name&sortOrder=desc"); !slices.Equal(got, []string{"c-box", "b-box", "a-box"}) {
		t.Errorf("sortBy=name desc: %v", got)
	}
	if got := names("&sortBy=createdAt&sortOrder=asc"); !slices.Equal(got, []string{"b-box", "c-box", "a-box"}) {
		t.Errorf("sortBy=createdAt asc: %v", got)
	}
	if got := names(""); !slices.Equal(got, []string{"a-box", "c-box", "b-box"}) {
		t.Errorf("default order (createdAt desc): %v", got)
	}
	errorCode(t, c.req("GET", "/v2/sandboxes?project="+c.s.ProjectID()+"&sortBy=size", nil, nil), 400, "bad_request")
}

func TestDefaultRuntimeIsNode24(t *testing.T) {
	c := newClient(t)
	out := c.json("POST", "/v2/sandboxes", map[string]any{"projectId": c.s.ProjectID()}, 200)
	if rt := out["sandbox"].(map[string]any)["runtime"]; rt != "node24" {
		t.Errorf("default runtime %v, want node24", rt)
	}
}

func TestStoppingPersistentSandboxReturnsSnapshot(t *testing.T) {
	c := newClient(t)
	name, sid := c.create(map[string]any{})
	out := c.json("POST", "/v2/sandboxes/sessions/"+sid+"/stop", nil, 200)
	snap, ok := out["snapshot"].(map[string]any)
	if !ok || snap["status"] != "created" || snap["sourceSessionId"] != sid {
		t.Fatalf("stop of a persistent sandbox: %v", out)
	}
	if out["sandbox"].(map[string]any)["currentSnapshotId"] != snap["id"] {
		t.Errorf("sandbox's currentSnapshotId %v, want %v", out["sandbox"].(map[string]any)["currentSnapshotId"], snap["id"])
	}
	c.json("GET", "/v2/sandboxes/snapshots/"+snap["id"].(string), nil, 200)
	// Stopping again changes nothing and snapshots nothing.
	out = c.json("POST", "/v2/sandboxes/sessions/"+sid+"/stop", nil, 200)
	if _, ok := out["snapshot"]; ok {
		t.Errorf("second stop made a snapshot: %v", out)
	}

	_, sid = c.create(map[string]any{"persistent": false})
	out = c.json("POST", "/v2/sandboxes/sessions/"+sid+"/stop", nil, 200)
	if _, ok := out["snapshot"]; ok {
		t.Errorf("stop of a non-persistent sandbox made a snapshot: %v", out)
	}
	_ = name
}

func TestCommandsRunAsSandboxUserUnlessSudo(t *testing.T) {
	c := newClient(t)
	if !c.s.Isolated() || os.Geteuid() != 0 {
		t.Skip("needs the isolated fake as root: elsewhere commands run as the fake's own user (documented)")
	}
	_, sid := c.create(map[string]any{})
	if out, code := c.run(sid, map[string]any{"command": "id", "args": []string{"-un"}}); out != SandboxUser+"\n" || code != 0 {
		t.Errorf("id -un: %q (%d), want %s", out, code, SandboxUser)
	}
	if out, code := c.run(sid, map[string]any{"command": "id", "args": []string{"-un"}, "sudo": true}); out != "root\n" || code != 0 {
		t.Errorf("id -un with sudo: %q (%d), want root", out, code)
	}
	// What fs/write and fs/mkdir make belongs to the sandbox user, so its
	// commands can change it.
	body := tarGz(t, "vercel/sandbox/d/f.txt", []byte("x"), 0o644)
	resp := c.req("POST", "/v2/sandboxes/sessions/"+sid+"/fs/write", strings.NewReader(string(body)),
		map[string]string{"Content-Type": "application/gzip", "x-cwd": "/"})
	if resp.StatusCode != 200 {
		t.Fatalf("fs/write: %d", resp.StatusCode)
	}
	c.json("POST", "/v2/sandboxes/sessions/"+sid+"/fs/mkdir", map[string]any{"path": "m"}, 200)
	if out, code := c.run(sid, map[string]any{"command": "sh", "args": []string{"-c", "echo y >> d/f.txt && touch d/g m/h && cat d/f.txt"}}); out != "xy\n" || code != 0 {
		t.Errorf("the sandbox user could not change its files: %q (%d)", out, code)
	}
	// And it cannot write what root owns (the view's own root directory,
	// which root can write).
	if _, code := c.run(sid, map[string]any{"command": "touch", "args": []string{"/probe"}}); code == 0 {
		t.Error("the sandbox user wrote into / (root's)")
	}
	if _, code := c.run(sid, map[string]any{"command": "touch", "args": []string{"/probe"}, "sudo": true}); code != 0 {
		t.Error("with sudo, root could not write into /")
	}
}

func TestWithoutIsolationOnlyCwdIsServed(t *testing.T) {
	s := New(&Options{NoIsolation: true})
	t.Cleanup(s.Close)
	c := &client{t, s}
	_, sid := c.create(map[string]any{})
	resp := c.req("POST", "/v2/sandboxes/sessions/"+sid+"/fs/read", strings.NewReader(`{"path":"/tmp/x"}`), nil)
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 400 || strings.Contains(string(raw), "and /tmp") {
		t.Errorf("fs/read of /tmp without isolation: %d %s (must not claim /tmp is served)", resp.StatusCode, raw)
	}
}

// TestCommandsGetDefaultSignalDispositions starts commands while the test
// process ignores SIGINT: a fresh VM's processes do not inherit that, so
// a shell that sends itself SIGINT must die of it (exit 130).
func TestCommandsGetDefaultSignalDispositions(t *testing.T) {
	signal.Ignore(syscall.SIGINT)
	t.Cleanup(func() { signal.Reset(syscall.SIGINT) })
	for _, isolated := range []bool{true, false} {
		s := New(&Options{NoIsolation: !isolated})
		t.Cleanup(s.Close)
		if isolated && !s.Isolated() {
			continue // covered by the host case
		}
		c := &client{t, s}
		_, sid := c.create(map[string]any{})
		out, code := c.run(sid, map[string]any{"command": "sh", "args": []string{"-c", "kill -INT $$; echo survived"}})
		if code != 130 || out != "" {
			t.Errorf("isolated=%v: a command sending itself SIGINT: exit %d, stdout %q; want 130 (SIGINT not ignored)", isolated, code, out)
		}
		// No signal is ignored in a command.
		cmd := c.json("POST", "/v2/sandboxes/sessions/"+sid+"/cmd", map[string]any{"command": "sh", "args": []string{"-c", "grep SigIgn /proc/self/status"}, "wait": false}, 200)
		id := cmd["command"].(map[string]any)["id"].(string)
		c.json("GET", "/v2/sandboxes/sessions/"+sid+"/cmd/"+id+"?wait=true", nil, 200)
		logs := c.rawJSON("GET", "/v2/sandboxes/sessions/"+sid+"/cmd/"+id+"/logs", "")
		if ign := ignoredSignals(t, logs); ign != 0 {
			t.Errorf("isolated=%v: ignored signals of a command: %s (mask %#x), want none", isolated, logs, ign)
		}
	}
}

// TestFilesStayInsideTheFakesTree checks that a sandbox's files land only
// under the fake's root.
func TestFilesStayInsideTheFakesTree(t *testing.T) {
	root := t.TempDir()
	s := New(&Options{Root: filepath.Join(root, "fake")})
	t.Cleanup(s.Close)
	if !s.Isolated() {
		t.Skip("without isolation commands run on the host (documented); nothing confines them")
	}
	c := &client{t, s}
	_, sid := c.create(map[string]any{})
	marker := "vercelfake-escape-" + filepath.Base(root)
	for _, p := range []string{"/" + marker, "/tmp/" + marker, "/vercel/" + marker} {
		c.run(sid, map[string]any{"command": "sh", "args": []string{"-c", "mkdir -p " + p + " && touch " + p + "/f"}, "sudo": true})
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s appeared on the host", p)
			os.RemoveAll(p)
		}
	}
	if _, err := os.Lstat(filepath.Join(s.opts.Root, "..", "..", marker)); err == nil {
		t.Error("a file appeared next to the fake's tree")
	}
}

// ignoredSignals parses the SigIgn mask in text, without signals 32 and 33:
// the C library reserves them for its threads, so no program (env
// --default-signal included) can reset them, and how the test process
// inherited them is outside the fake.
func ignoredSignals(t *testing.T, text string) uint64 {
	t.Helper()
	i := strings.Index(text, "SigIgn:")
	if i < 0 {
		t.Fatalf("no SigIgn line in %q", text)
	}
	f := strings.Fields(strings.NewReplacer(`\t`, " ", `\n`, " ", `"`, " ").Replace(text[i+len("SigIgn:"):]))
	if len(f) == 0 {
		t.Fatalf("no SigIgn mask in %q", text)
	}
	mask, err := strconv.ParseUint(f[0], 16, 64)
	if err != nil {
		t.Fatalf("SigIgn mask in %q: %v", text, err)
	}
	const reserved = 1<<(32-1) | 1<<(33-1)
	return mask &^ reserved
}
