// Package fakeapi is a local fake of the Anthropic Messages API
// (POST /v1/messages, non-streaming) that replays a scripted conversation,
// for testing agent loops with no network and no API key.
//
// It speaks the API's wire protocol: it requires the x-api-key and
// anthropic-version headers, answers with a Message object, and refuses
// malformed requests with the API's error envelope
// ({"type":"error","error":{"type":...,"message":...}}) and status codes. In
// particular it checks what a tool loop most often gets wrong: every tool_use
// of an assistant turn must be answered by a tool_result in the next user
// message, placed before any other content.
package fakeapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
)

// Turn is one scripted assistant reply: its content blocks (as the API sends
// them, e.g. {"type":"tool_use","id":...,"name":...,"input":{...}}) and stop
// reason ("tool_use", "end_turn").
type Turn struct {
	Content    []map[string]any
	StopReason string
}

// Server is a running fake. Close it when done.
type Server struct {
	*httptest.Server

	mu       sync.Mutex
	script   []Turn
	requests []map[string]any
}

// New starts a fake on a loopback port that replies with script's turns in
// order.
func New(script []Turn) *Server {
	s := &Server{script: script}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// Requests returns the decoded bodies of the requests answered so far.
func (s *Server) Requests() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.requests...)
}

func apiError(w http.ResponseWriter, status int, kind, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{
		"type":       "error",
		"error":      map[string]any{"type": kind, "message": msg},
		"request_id": "req_fake",
	})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/messages" {
		apiError(w, http.StatusNotFound, "not_found_error", "Not Found")
		return
	}
	if r.Method != http.MethodPost {
		apiError(w, http.StatusMethodNotAllowed, "invalid_request_error", "Method Not Allowed")
		return
	}
	if r.Header.Get("X-Api-Key") == "" && !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
		apiError(w, http.StatusUnauthorized, "authentication_error", "x-api-key header is required")
		return
	}
	if r.Header.Get("Anthropic-Version") == "" {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "anthropic-version: header is required")
		return
	}
	var req map[string]any
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "request body is not valid JSON: "+err.Error())
		return
	}
	if msg := validate(req); msg != "" {
		apiError(w, http.StatusBadRequest, "invalid_request_error", msg)
		return
	}
	s.mu.Lock()
	s.requests = append(s.requests, req)
	if len(s.script) == 0 {
		s.mu.Unlock()
		apiError(w, http.StatusInternalServerError, "api_error", "fakeapi: the scripted conversation has no reply left")
		return
	}
	turn := s.script[0]
	s.script = s.script[1:]
	n := len(s.requests)
	s.mu.Unlock()

	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Request-Id", fmt.Sprintf("req_fake_%d", n))
	json.NewEncoder(w).Encode(map[string]any{
		"id":            fmt.Sprintf("msg_fake_%d", n),
		"type":          "message",
		"role":          "assistant",
		"model":         req["model"],
		"content":       turn.Content,
		"stop_reason":   turn.StopReason,
		"stop_sequence": nil,
		"usage":         map[string]any{"input_tokens": 100, "output_tokens": 20},
	})
}

// validate returns the API's complaint about req, or "".
func validate(req map[string]any) string {
	if m, ok := req["model"].(string); !ok || m == "" {
		return "model: Field required"
	}
	if _, ok := req["max_tokens"].(float64); !ok {
		return "max_tokens: Field required"
	}
	msgs, ok := req["messages"].([]any)
	if !ok || len(msgs) == 0 {
		return "messages: at least one message is required"
	}
	for i, t := range toolsOf(req) {
		typ, _ := t["type"].(string)
		name, _ := t["name"].(string)
		if name == "" {
			return fmt.Sprintf("tools.%d.name: Field required", i)
		}
		if (typ == "" || typ == "custom") && t["input_schema"] == nil {
			return fmt.Sprintf("tools.%d.custom.input_schema: Field required", i)
		}
	}
	var pending []string // tool_use ids of the previous assistant turn
	for i, raw := range msgs {
		msg, _ := raw.(map[string]any)
		role, _ := msg["role"].(string)
		want := "user"
		if i%2 == 1 {
			want = "assistant"
		}
		if role != want {
			return fmt.Sprintf("messages: roles must alternate between \"user\" and \"assistant\", starting with \"user\"; messages.%d has role %q", i, role)
		}
		blocks := blocksOf(msg["content"])
		if len(pending) > 0 {
			answered := map[string]bool{}
			for j, b := range blocks {
				if b["type"] != "tool_result" {
					for _, later := range blocks[j:] {
						if later["type"] == "tool_result" {
							return fmt.Sprintf("messages.%d.content: tool_result blocks must come before any other content", i)
						}
					}
					break
				}
				id, _ := b["tool_use_id"].(string)
				answered[id] = true
			}
			var missing []string
			for _, id := range pending {
				if !answered[id] {
					missing = append(missing, id)
				}
			}
			if len(missing) > 0 {
				return fmt.Sprintf("messages.%d.content.0: unexpected `tool_use_id` found in `tool_result` blocks or missing tool_result: `tool_use` ids were found without `tool_result` blocks immediately after: %s. Each `tool_use` block must have a corresponding `tool_result` block in the next message.", i-1, strings.Join(missing, ", "))
			}
		}
		pending = nil
		if role == "assistant" {
			for _, b := range blocks {
				if b["type"] == "tool_use" {
					id, _ := b["id"].(string)
					pending = append(pending, id)
				}
			}
		}
	}
	return ""
}

func toolsOf(req map[string]any) []map[string]any {
	raw, _ := req["tools"].([]any)
	var out []map[string]any
	for _, t := range raw {
		if m, ok := t.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func blocksOf(content any) []map[string]any {
	switch c := content.(type) {
	case string:
		return []map[string]any{{"type": "text", "text": c}}
	case []any:
		var out []map[string]any
		for _, b := range c {
			if m, ok := b.(map[string]any); ok {
				out = append(out, m)
			}
		}
		return out
	}
	return nil
}

// ToolResults returns the tool_result blocks of the last user message of the
// i-th request (0-based).
func (s *Server) ToolResults(i int) []map[string]any {
	reqs := s.Requests()
	if i >= len(reqs) {
		return nil
	}
	msgs, _ := reqs[i]["messages"].([]any)
	if len(msgs) == 0 {
		return nil
	}
	last, _ := msgs[len(msgs)-1].(map[string]any)
	var out []map[string]any
	for _, b := range blocksOf(last["content"]) {
		if b["type"] == "tool_result" {
			out = append(out, b)
		}
	}
	return out
}
