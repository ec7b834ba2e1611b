package cloudflarefake

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// spec is the bridge's OpenAPI document, read with encoding/json.
type spec struct {
	Paths      map[string]map[string]operation `json:"paths"`
	Components struct {
		Schemas   map[string]json.RawMessage `json:"schemas"`
		Responses map[string]response        `json:"responses"`
	} `json:"components"`
}

type operation struct {
	Responses map[string]response `json:"responses"`
}

type response struct {
	Ref     string `json:"$ref"`
	Content map[string]struct {
		Schema json.RawMessage `json:"schema"`
	} `json:"content"`
}

func loadSpec(t *testing.T) *spec {
	data, err := os.ReadFile("bridge-openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var s spec
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatal(err)
	}
	return &s
}

func (s *spec) response(r response) response {
	if r.Ref != "" {
		return s.Components.Responses[strings.TrimPrefix(r.Ref, "#/components/responses/")]
	}
	return r
}

// validate checks v against a JSON schema subset (type, required,
// properties, items, enum, $ref) and returns the problems.
func (s *spec) validate(schema json.RawMessage, v any, at string) []string {
	var sc struct {
		Ref        string                     `json:"$ref"`
		Type       any                        `json:"type"`
		Required   []string                   `json:"required"`
		Properties map[string]json.RawMessage `json:"properties"`
		Items      json.RawMessage            `json:"items"`
		Enum       []any                      `json:"enum"`
	}
	json.Unmarshal(schema, &sc)
	if sc.Ref != "" {
		return s.validate(s.Components.Schemas[strings.TrimPrefix(sc.Ref, "#/components/schemas/")], v, at)
	}
	var probs []string
	types := []string{}
	switch t := sc.Type.(type) {
	case string:
		types = append(types, t)
	case []any:
		for _, x := range t {
			types = append(types, x.(string))
		}
	}
	if len(types) > 0 && !slices.ContainsFunc(types, func(t string) bool { return hasType(v, t) }) {
		return []string{fmt.Sprintf("%s: %v is not of type %v", at, v, types)}
	}
	if len(sc.Enum) > 0 && !slices.Contains(sc.Enum, v) {
		probs = append(probs, fmt.Sprintf("%s: %v is not one of %v", at, v, sc.Enum))
	}
	if m, ok := v.(map[string]any); ok {
		for _, r := range sc.Required {
			if _, ok := m[r]; !ok {
				probs = append(probs, fmt.Sprintf("%s: required %q missing", at, r))
			}
		}
		for k, ps := range sc.Properties {
			if pv, ok := m[k]; ok {
				probs = append(probs, s.validate(ps, pv, at+"."+k)...)
			}
		}
	}
	if a, ok := v.([]any); ok && sc.Items != nil {
		for i, x := range a {
			probs = append(probs, s.validate(sc.Items, x, fmt.Sprintf("%s[%d]", at, i))...)
		}
	}
	return probs
}

func hasType(v any, t string) bool {
	switch t {
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "integer":
		f, ok := v.(float64)
		return ok && f == float64(int64(f))
	case "number":
		_, ok := v.(float64)
		return ok
	case "null":
		return v == nil
	}
	return false
}

type call struct {
	method, template, path string
	body                   string
	auth                   bool
	header                 map[string]string
	status                 int
}

// TestRoutesMatchTheSpec sends requests covering every route, method and
// documented status the fake serves, and checks each answer's status is
// one the document lists for the route and its JSON body matches the
// document's schema; and that every route of the document is exercised.
func TestRoutesMatchTheSpec(t *testing.T) {
	sp := loadSpec(t)
	f := New(nil)
	defer f.Close()
	id := newID()
	calls := []call{
		{"GET", "/health", "/health", "", false, nil, 200},
		{"GET", "/v1/openapi.json", "/v1/openapi.json", "", true, nil, 200},
		{"GET", "/v1/openapi.json", "/v1/openapi.json", "", false, nil, 401},
		{"POST", "/v1/sandbox", "/v1/sandbox", "", true, nil, 200},
		{"POST", "/v1/sandbox", "/v1/sandbox", "", false, nil, 401},
		{"GET", "/v1/sandbox/{id}/running", "/v1/sandbox/" + id + "/running", "", true, nil, 200},
		{"GET", "/v1/sandbox/{id}/running", "/v1/sandbox/" + id + "/running", "", false, nil, 401},
		{"POST", "/v1/sandbox/{id}/exec", "/v1/sandbox/" + id + "/exec", `{"argv":["echo","hi"]}`, true, nil, 200},
		{"POST", "/v1/sandbox/{id}/exec", "/v1/sandbox/" + id + "/exec", `{"argv":[]}`, true, nil, 400},
		{"POST", "/v1/sandbox/{id}/exec", "/v1/sandbox/" + id + "/exec", `{"argv":["true"]}`, false, nil, 401},
		{"POST", "/v1/sandbox/{id}/exec", "/v1/sandbox/" + id + "/exec", `{"argv":["true"],"cwd":"/etc"}`, true, nil, 403},
		{"POST", "/v1/sandbox/{id}/exec", "/v1/sandbox/" + id + "/exec", `{"argv":["true"]}`, true, map[string]string{"Session-Id": "a/b"}, 400},
		{"PUT", "/v1/sandbox/{id}/file/{path}", "/v1/sandbox/" + id + "/file/workspace/a/b.txt", "content", true, nil, 200},
		{"PUT", "/v1/sandbox/{id}/file/{path}", "/v1/sandbox/" + id + "/file/etc/passwd", "x", true, nil, 403},
		{"PUT", "/v1/sandbox/{id}/file/{path}", "/v1/sandbox/" + id + "/file/workspace/x", "x", false, nil, 401},
		{"PUT", "/v1/sandbox/{id}/file/{path}", "/v1/sandbox/NOT-AN-ID/file/workspace/x", "x", true, nil, 400},
		{"GET", "/v1/sandbox/{id}/file/{path}", "/v1/sandbox/" + id + "/file/workspace/a/b.txt", "", true, nil, 200},
		{"GET", "/v1/sandbox/{id}/file/{path}", "/v1/sandbox/" + id + "/file/workspace/nope", "", true, nil, 404},
		{"GET", "/v1/sandbox/{id}/file/{path}", "/v1/sandbox/" + id + "/file/workspace/../etc/passwd", "", true, nil, 403},
		{"GET", "/v1/sandbox/{id}/file/{path}", "/v1/sandbox/" + id + "/file/workspace/a", "", true, nil, 502},
		{"GET", "/v1/sandbox/{id}/file/{path}", "/v1/sandbox/BAD/file/workspace/a", "", true, nil, 400},
		{"GET", "/v1/sandbox/{id}/file/{path}", "/v1/sandbox/" + id + "/file/workspace/a", "", false, nil, 401},
		{"POST", "/v1/sandbox/{id}/persist", "/v1/sandbox/" + id + "/persist", "", true, nil, 200},
		{"POST", "/v1/sandbox/{id}/persist", "/v1/sandbox/" + id + "/persist?excludes=../x", "", true, nil, 400},
		{"POST", "/v1/sandbox/{id}/persist", "/v1/sandbox/" + id + "/persist", "", false, nil, 401},
		{"POST", "/v1/sandbox/{id}/hydrate", "/v1/sandbox/" + id + "/hydrate", "", true, nil, 400},
		{"POST", "/v1/sandbox/{id}/hydrate", "/v1/sandbox/" + id + "/hydrate", "not a tar", true, nil, 502},
		{"POST", "/v1/sandbox/{id}/hydrate", "/v1/sandbox/" + id + "/hydrate", "x", false, nil, 401},
		{"POST", "/v1/sandbox/{id}/tunnel/{port}", "/v1/sandbox/" + id + "/tunnel/8080", "", true, nil, 200},
		{"POST", "/v1/sandbox/{id}/tunnel/{port}", "/v1/sandbox/" + id + "/tunnel/8081", `{"name":"app"}`, true, nil, 200},
		{"POST", "/v1/sandbox/{id}/tunnel/{port}", "/v1/sandbox/" + id + "/tunnel/80", "", true, nil, 400},
		{"POST", "/v1/sandbox/{id}/tunnel/{port}", "/v1/sandbox/" + id + "/tunnel/8080", "", false, nil, 401},
		{"DELETE", "/v1/sandbox/{id}/tunnel/{port}", "/v1/sandbox/" + id + "/tunnel/8080", "", true, nil, 204},
		{"DELETE", "/v1/sandbox/{id}/tunnel/{port}", "/v1/sandbox/" + id + "/tunnel/99999", "", true, nil, 400},
		{"DELETE", "/v1/sandbox/{id}/tunnel/{port}", "/v1/sandbox/" + id + "/tunnel/8080", "", false, nil, 401},
		{"POST", "/v1/sandbox/{id}/session", "/v1/sandbox/" + id + "/session", `{"id":"s1","env":{"A":"1"}}`, true, nil, 200},
		{"POST", "/v1/sandbox/{id}/session", "/v1/sandbox/" + id + "/session", ``, true, nil, 200},
		{"POST", "/v1/sandbox/{id}/session", "/v1/sandbox/" + id + "/session", `{"id":"s1"}`, true, nil, 502},
		{"POST", "/v1/sandbox/{id}/session", "/v1/sandbox/" + id + "/session", ``, false, nil, 401},
		{"DELETE", "/v1/sandbox/{id}/session/{sid}", "/v1/sandbox/" + id + "/session/s1", "", true, nil, 200},
		{"DELETE", "/v1/sandbox/{id}/session/{sid}", "/v1/sandbox/" + id + "/session/s1", "", true, nil, 502},
		{"DELETE", "/v1/sandbox/{id}/session/{sid}", "/v1/sandbox/" + id + "/session/s1", "", false, nil, 401},
		{"GET", "/v1/sandbox/{id}/pty", "/v1/sandbox/" + id + "/pty", "", true, nil, 400},
		{"GET", "/v1/sandbox/{id}/pty", "/v1/sandbox/" + id + "/pty", "", false, nil, 401},
		{"POST", "/v1/sandbox/{id}/mount", "/v1/sandbox/" + id + "/mount", `{"mountPath":"/mnt/x","options":{}}`, true, nil, 502},
		{"POST", "/v1/sandbox/{id}/mount", "/v1/sandbox/" + id + "/mount", `{}`, false, nil, 401},
		{"POST", "/v1/sandbox/{id}/unmount", "/v1/sandbox/" + id + "/unmount", `{"mountPath":"/mnt/x"}`, true, nil, 502},
		{"POST", "/v1/sandbox/{id}/unmount", "/v1/sandbox/" + id + "/unmount", `{}`, false, nil, 401},
		{"GET", "/v1/pool/stats", "/v1/pool/stats", "", true, nil, 200},
		{"GET", "/v1/pool/stats", "/v1/pool/stats", "", false, nil, 401},
		{"POST", "/v1/pool/prime", "/v1/pool/prime", "", true, nil, 200},
		{"POST", "/v1/pool/prime", "/v1/pool/prime", "", false, nil, 401},
		{"POST", "/v1/pool/shutdown-prewarmed", "/v1/pool/shutdown-prewarmed", "", true, nil, 200},
		{"POST", "/v1/pool/shutdown-prewarmed", "/v1/pool/shutdown-prewarmed", "", false, nil, 401},
		{"DELETE", "/v1/sandbox/{id}", "/v1/sandbox/" + id, "", true, nil, 204},
		{"DELETE", "/v1/sandbox/{id}", "/v1/sandbox/" + newID(), "", true, nil, 204}, // unknown: still 204
		{"DELETE", "/v1/sandbox/{id}", "/v1/sandbox/" + id, "", false, nil, 401},
	}
	covered := map[string]bool{}
	for _, c := range calls {
		t.Run(c.method+" "+c.path+" "+strconv.Itoa(c.status), func(t *testing.T) {
			op, ok := sp.Paths[c.template][strings.ToLower(c.method)]
			if !ok {
				t.Fatalf("the spec has no %s %s", c.method, c.template)
			}
			covered[c.method+" "+c.template] = true
			var body io.Reader
			if c.body != "" {
				body = strings.NewReader(c.body)
			}
			req, _ := http.NewRequest(c.method, f.URL()+c.path, body)
			if c.auth {
				req.Header.Set("Authorization", "Bearer "+f.APIKey())
			}
			for k, v := range c.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			data, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.status, data)
			}
			r, ok := op.Responses[strconv.Itoa(resp.StatusCode)]
			if !ok {
				t.Fatalf("status %d is not among the spec's responses for %s %s", resp.StatusCode, c.method, c.template)
			}
			r = sp.response(r)
			ct := resp.Header.Get("Content-Type")
			if len(r.Content) == 0 {
				if len(data) != 0 {
					t.Errorf("the spec gives no body, the fake sent %q", data)
				}
				return
			}
			mt, _, _ := strings.Cut(ct, ";")
			content, ok := r.Content[mt]
			if !ok {
				t.Fatalf("content type %q is not among the spec's %v", ct, keys(r.Content))
			}
			switch mt {
			case "application/json":
				var v any
				if err := json.Unmarshal(data, &v); err != nil {
					t.Fatalf("body %q is not JSON: %v", data, err)
				}
				if probs := sp.validate(content.Schema, v, "body"); len(probs) > 0 {
					t.Errorf("body %s does not match the spec: %s", data, strings.Join(probs, "; "))
				}
			case "text/event-stream":
				checkSSE(t, data)
			}
		})
	}
	for p, methods := range sp.Paths {
		for m := range methods {
			if !covered[strings.ToUpper(m)+" "+p] {
				t.Errorf("no call covers %s %s", strings.ToUpper(m), p)
			}
		}
	}
}

func keys[M ~map[string]V, V any](m M) []string {
	var k []string
	for x := range m {
		k = append(k, x)
	}
	return k
}

// checkSSE checks the framing of an exec stream: events separated by a
// blank line, an event: line and data: lines each, base64 output chunks and
// one terminal exit or error event at the end.
func checkSSE(t *testing.T, data []byte) {
	t.Helper()
	var stdout bytes.Buffer
	events := strings.Split(strings.TrimSuffix(string(data), "\n\n"), "\n\n")
	for i, ev := range events {
		lines := strings.Split(ev, "\n")
		name, ok := strings.CutPrefix(lines[0], "event: ")
		if !ok || len(lines) < 2 {
			t.Fatalf("event %d %q has no event: and data: lines", i, ev)
		}
		var payload []string
		for _, l := range lines[1:] {
			d, ok := strings.CutPrefix(l, "data: ")
			if !ok {
				t.Fatalf("event %d has a line %q that is not data:", i, l)
			}
			payload = append(payload, d)
		}
		joined := strings.Join(payload, "\n")
		last := i == len(events)-1
		switch name {
		case "stdout", "stderr":
			b, err := base64.StdEncoding.DecodeString(joined)
			if err != nil {
				t.Fatalf("%s chunk %q is not base64", name, joined)
			}
			if name == "stdout" {
				stdout.Write(b)
			}
			if last {
				t.Fatalf("the stream ends without a terminal event")
			}
		case "exit":
			var e struct {
				ExitCode *int `json:"exit_code"`
			}
			if json.Unmarshal([]byte(joined), &e) != nil || e.ExitCode == nil || !last {
				t.Fatalf("bad exit event %q (last: %v)", joined, last)
			}
		case "error":
			var e struct{ Error, Code string }
			if json.Unmarshal([]byte(joined), &e) != nil || e.Code == "" || !last {
				t.Fatalf("bad error event %q (last: %v)", joined, last)
			}
		default:
			t.Fatalf("unknown event %q", name)
		}
	}
	if stdout.String() != "hi\n" {
		t.Errorf("stdout %q, want %q", stdout.String(), "hi\n")
	}
}

// TestPutOverTheLimit: the bridge answers 413 payload_too_large, a status
// and code its own document does not list.
func TestPutOverTheLimit(t *testing.T) {
	f := New(nil)
	defer f.Close()
	req, _ := http.NewRequest("PUT", f.URL()+"/v1/sandbox/"+newID()+"/file/workspace/big", bytes.NewReader(make([]byte, MaxBody+1)))
	req.Header.Set("Authorization", "Bearer "+f.APIKey())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct{ Error, Code string }
	json.NewDecoder(resp.Body).Decode(&e)
	if resp.StatusCode != 413 || e.Code != "payload_too_large" {
		t.Fatalf("status %d code %q, want 413 payload_too_large", resp.StatusCode, e.Code)
	}
}

// TestArgvQuoting: tokens of safe characters pass as they are, others in
// ANSI-C quoting, and the shell reads each back as one word.
func TestArgvQuoting(t *testing.T) {
	if got := JoinArgv([]string{"ls", "-la", "/workspace/a.txt", "a b", "it's", "x\ny", ""}); got != `ls -la /workspace/a.txt $'a b' $'it\'s' $'x\ny' $''` {
		t.Fatalf("JoinArgv = %s", got)
	}
	f := New(nil)
	defer f.Close()
	args := []string{"printf", "[%s]", "a b", "it's", "$HOME", "`id`", "x\ny\tz\\", "*", ""}
	out := execSSE(t, f, newID(), args)
	if want := "[a b][it's][$HOME][`id`][x\ny\tz\\][*][]"; out != want {
		t.Fatalf("printf printed %q, want %q", out, want)
	}
}

func execSSE(t *testing.T, f *Server, id string, argv []string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"argv": argv})
	req, _ := http.NewRequest("POST", f.URL()+"/v1/sandbox/"+id+"/exec", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+f.APIKey())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out bytes.Buffer
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	event := ""
	for sc.Scan() {
		line := sc.Text()
		if e, ok := strings.CutPrefix(line, "event: "); ok {
			event = e
		} else if d, ok := strings.CutPrefix(line, "data: "); ok && event == "stdout" {
			b, _ := base64.StdEncoding.DecodeString(d)
			out.Write(b)
		}
	}
	return out.String()
}

// TestPathRules: the 403 outside /workspace, lexical as on the bridge.
func TestPathRules(t *testing.T) {
	for p, ok := range map[string]bool{
		"/workspace": true, "/workspace/a/../b": true, "a/b": true,
		"/workspace/../etc": false, "/etc/passwd": false, "/workspacex": false, "../x": false,
	} {
		if _, got := resolve(p); got != ok {
			t.Errorf("resolve(%q) ok = %v, want %v", p, got, ok)
		}
	}
}

// TestPTY: the terminal WebSocket sends ready, output as binary frames and
// an exit frame; resize frames change the size.
func TestPTY(t *testing.T) {
	f := New(nil)
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	u := strings.Replace(f.URL(), "http://", "ws://", 1) + "/v1/sandbox/" + newID() + "/pty?cols=100&rows=30&shell=/bin/sh"
	conn, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + f.APIKey()}}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	typ, data, err := conn.Read(ctx)
	if err != nil || typ != websocket.MessageText || string(data) != `{"type":"ready"}` {
		t.Fatalf("first frame %v %q %v, want ready", typ, data, err)
	}
	conn.Write(ctx, websocket.MessageText, []byte(`{"type":"resize","cols":77,"rows":11}`))
	conn.Write(ctx, websocket.MessageBinary, []byte("stty size; exit 5\n"))
	var out bytes.Buffer
	for {
		typ, data, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v (output %q)", err, out.String())
		}
		if typ == websocket.MessageBinary {
			out.Write(data)
			continue
		}
		var msg struct {
			Type string
			Code int
		}
		json.Unmarshal(data, &msg)
		if msg.Type != "exit" || msg.Code != 5 {
			t.Fatalf("control frame %s, want exit code 5", data)
		}
		break
	}
	if !regexp.MustCompile(`11 77\r?\n`).Match(out.Bytes()) {
		t.Errorf("after resize stty printed %q", out.String())
	}
}
