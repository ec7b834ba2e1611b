package tunnel

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	segjson "github.com/segmentio/encoding/json"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sdkDecode reads body as the MCP Go SDK v1.8.0 does (mcp.readBatch with
// jsonrpc2.DecodeMessage, then the params of tools/call, prompts/get and
// resources/read decoded by its internal/json: segmentio/encoding with
// case-insensitive matching turned off). It returns the method and name of
// each request, or ok=false when the SDK refuses the body.
func sdkDecode(body []byte) (methods, names []string, ok bool) {
	var msgs []jsonrpc.Message
	var raw []json.RawMessage
	if sdkUnmarshal(body, &raw) == nil {
		if len(raw) == 0 {
			return nil, nil, false
		}
		for _, r := range raw {
			m, err := jsonrpc.DecodeMessage(r)
			if err != nil {
				return nil, nil, false
			}
			msgs = append(msgs, m)
		}
	} else {
		m, err := jsonrpc.DecodeMessage(body)
		if err != nil {
			return nil, nil, false
		}
		msgs = []jsonrpc.Message{m}
	}
	for _, m := range msgs {
		req, isReq := m.(*jsonrpc.Request)
		if !isReq {
			continue
		}
		name := ""
		switch req.Method {
		case "tools/call":
			var p mcp.CallToolParamsRaw
			if req.Params != nil && sdkUnmarshal(req.Params, &p) != nil {
				return nil, nil, false
			}
			name = p.Name
		case "prompts/get":
			var p mcp.GetPromptParams
			if req.Params != nil && sdkUnmarshal(req.Params, &p) != nil {
				return nil, nil, false
			}
			name = p.Name
		case "resources/read":
			var p mcp.ReadResourceParams
			if req.Params != nil && sdkUnmarshal(req.Params, &p) != nil {
				return nil, nil, false
			}
			name = p.URI
		}
		methods = append(methods, req.Method)
		names = append(names, name)
	}
	return methods, names, true
}

// sdkUnmarshal is the SDK's internal/json.Unmarshal.
func sdkUnmarshal(data []byte, v any) error {
	dec := segjson.NewDecoder(bytes.NewReader(data))
	dec.DontMatchCaseInsensitiveStructFields()
	return dec.Decode(v)
}

// policyView is what the policy parser reads: the method and name of each
// request, or ok=false when it refuses the body.
func policyView(body []byte) (methods, names []string, ok bool) {
	msgs, _, err := parseMessages(body)
	if err != nil {
		return nil, nil, false
	}
	for _, m := range msgs {
		if !m.hasMethod {
			continue
		}
		methods = append(methods, m.Method)
		names = append(names, m.name())
	}
	return methods, names, true
}

var policySeeds = []string{
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"drop_db","Name":"read_db"}}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"Name":"read_db","name":"drop_db"}}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","Method":"ping","params":{"name":"drop_db"}}`,
	`{"jsonrpc":"2.0","id":1,"Method":"ping","method":"tools/call","params":{"name":"drop_db"}}`,
	`{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call","params":{"name":"drop_db"}}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_db","name":"drop_db"}}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"params":{"name":"drop_db"}}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","paramſ":{"name":"drop_db"},"params":{"name":"a"}}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"n\u0061me":"drop_db"}}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools\/call","params":{"name":"drop\u005fdb"}}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"drop_db\ud800"}}`,
	"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"drop\xffdb\"}}",
	`{"jsonrpc":"2.0","id":1,"method":"ping"}{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"drop_db"}}`,
	`[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"drop_db"}}]`,
	`{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p","NAME":"q"}}`,
	`{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///etc/passwd","URI":"file:///ok"}}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":null}}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["drop_db"]}}`,
	`{"jsonrpc":"2.0","id":1,"method":null}`,
	`{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}`,
	`{"jsonrpc":"2.0","result":{},"id":3}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"name":"x","Name":"y","name":"z"},"name":"ok"}}`,
	` {"jsonrpc":"2.0","method":"notifications/initialized"} `,
	"\ufeff" + `{"jsonrpc":"2.0","id":1,"method":"ping"}`,
	`{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"drop_db"}}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":[[[[[[{"a":[1,2.5e3,-0,true,false,null,"\u00e9"]}]]]]]]}}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":"drop_db"}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"drop_db"}`,
	`[]`,
	`{}`,
}

// FuzzPolicyParserAgainstSDK checks that the policy reads every body as the
// MCP Go SDK does: whenever the policy does not refuse a body, the SDK must
// refuse it too or see the same methods and names. The seeds run in every
// plain `go test`.
func FuzzPolicyParserAgainstSDK(f *testing.F) {
	for _, s := range policySeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		pm, pn, pok := policyView(body)
		if !pok {
			return // refused: nothing reaches the upstream
		}
		sm, sn, sok := sdkDecode(body)
		if !sok {
			return // the upstream refuses it too
		}
		if !equalStrings(pm, sm) || !equalStrings(pn, sn) {
			t.Fatalf("policy and SDK disagree on %q:\npolicy methods %q names %q\nSDK    methods %q names %q", body, pm, pn, sm, sn)
		}
	})
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestPolicyRefusesAmbiguousBodies is the regression test of the tool and
// method policy bypass: a body that different JSON decoders read differently
// must be refused, never judged by one reading and run by another.
func TestPolicyRefusesAmbiguousBodies(t *testing.T) {
	ran := 0
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ran++
		w.WriteHeader(http.StatusOK)
	})
	g := &guard{side: "edge", route: "r", next: next, logger: slog.New(slog.DiscardHandler), metrics: nopMetrics{},
		policy: Policy{DenyTools: []string{"drop_*"}, DenyMethods: []string{"tools/call"}}}
	g2 := &guard{side: "edge", route: "r", next: next, logger: slog.New(slog.DiscardHandler), metrics: nopMetrics{},
		policy: Policy{DenyTools: []string{"drop_*"}}}
	for _, body := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"drop_db","Name":"read_db"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"NAME":"read_db","name":"drop_db"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_db","name":"drop_db"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","Method":"ping","params":{"name":"x"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call","params":{"name":"x"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","paramſ":{"name":"read_db"},"params":{"name":"drop_db"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"ping"}{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"drop_db\ud800"}}`,
	} {
		for _, gg := range []*guard{g, g2} {
			rr := httptest.NewRecorder()
			gg.ServeHTTP(rr, httptest.NewRequest("POST", "/r", strings.NewReader(body)))
			assert.Equal(t, http.StatusBadRequest, rr.Code, body)
			assert.Contains(t, rr.Body.String(), `"code":-32700`, body)
		}
	}
	// Batches: each element is checked; none may carry a denied call.
	rr := httptest.NewRecorder()
	g2.ServeHTTP(rr, httptest.NewRequest("POST", "/r", strings.NewReader(
		`[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"drop_db"}}]`)))
	assert.Equal(t, http.StatusForbidden, rr.Code)
	assert.Contains(t, rr.Body.String(), `tool \"drop_db\" is denied`)
	// 2025-06-18 and later have no batches (as the SDK).
	req := httptest.NewRequest("POST", "/r", strings.NewReader(`[{"jsonrpc":"2.0","id":1,"method":"ping"}]`))
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	rr = httptest.NewRecorder()
	g2.ServeHTTP(rr, req)
	assert.Equal(t, http.StatusBadRequest, rr.Code)
	// A repeated Mcp-Name header is refused; a matching single one passes.
	req = httptest.NewRequest("POST", "/r", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}`))
	req.Header.Add("Mcp-Name", "echo")
	req.Header.Add("Mcp-Name", "drop_db")
	rr = httptest.NewRecorder()
	g2.ServeHTTP(rr, req)
	assert.Equal(t, http.StatusBadRequest, rr.Code)
	assert.Contains(t, rr.Body.String(), "repeated")
	assert.Equal(t, 0, ran, "no ambiguous body reached the upstream")

	req = httptest.NewRequest("POST", "/r", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"Name":"drop_db","name":"x","name":"y"}}}`))
	req.Header.Set("Mcp-Name", "echo")
	rr = httptest.NewRecorder()
	g2.ServeHTTP(rr, req)
	assert.Equal(t, http.StatusOK, rr.Code, rr.Body.String())
	assert.Equal(t, 1, ran, "tool arguments are the tool's business")
}

// TestPolicyBypassEndToEnd sends the reported bypass bodies through edge
// and connector to a real MCP server (HTTP and stdio routes) and checks
// that the denied tool never runs and the audit names what the server would
// have run.
func TestPolicyBypassEndToEnd(t *testing.T) { eachPath(t, testPolicyBypassEndToEnd) }

func testPolicyBypassEndToEnd(t *testing.T, p servePath) {
	up, _ := startUpstream(t, nil)
	logs := &syncBuffer{}
	url, _ := p.serve(t, Policy{DenyTools: []string{"blob"}}, slog.New(slog.NewJSONHandler(logs, nil)), Route{Name: "r", URL: up}, stdioRoute("local"))
	e := struct{ url string }{url}
	for _, route := range []string{"r", "local"} {
		sid := initializeRaw(t, e.url+"/"+route)
		for _, body := range []string{
			`{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"blob","Name":"echo","arguments":{"bytes":3,"text":"t"}}}`,
			`{"jsonrpc":"2.0","id":5,"Method":"ping","method":"tools/call","params":{"name":"blob","arguments":{"bytes":3}}}`,
		} {
			code, resp := postRaw(t, e.url+"/"+route, sid, body)
			assert.Equal(t, http.StatusBadRequest, code, resp)
			assert.NotContains(t, resp, "xxx", "the denied tool ran")
		}
		// The plain denied call is refused by name.
		code, resp := postRaw(t, e.url+"/"+route, sid, `{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"blob","arguments":{"bytes":3}}}`)
		assert.Equal(t, http.StatusOK, code)
		assert.Contains(t, resp, `tool \"blob\" is denied`)
	}
	assert.NotContains(t, string(logs.Bytes()), `"tool":"echo"`, "the audit never records the decoy name")
	assert.Contains(t, string(logs.Bytes()), `"tool":"blob"`)
}

// initializeRaw opens a session with a raw initialize and returns its ID.
func initializeRaw(t *testing.T, url string) string {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	sid := resp.Header.Get("Mcp-Session-Id")
	require.NotEmpty(t, sid)
	t.Cleanup(func() {
		req, _ := http.NewRequest("DELETE", url, nil)
		req.Header.Set("Mcp-Session-Id", sid)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	})
	code, body := postRaw(t, url, sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	require.Equal(t, http.StatusAccepted, code, body)
	return sid
}

func postRaw(t *testing.T, url, sid, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	if sid != "" {
		req.Header.Set("Mcp-Session-Id", sid)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
