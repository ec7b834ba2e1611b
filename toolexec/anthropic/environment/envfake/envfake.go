// Package envfake is a local fake of the Claude Managed Agents endpoints the
// Anthropic Go SDK's self-hosted environment worker calls: the environment
// work queue (poll, ack, heartbeat, stop), sessions (retrieve; list, stream
// and send events) and memory stores (list, retrieve, create, update,
// delete memories). Sessions are scripted: each step is a tool call the
// "agent" makes once the previous one has its result. Every result posted is
// recorded for the test to check.
//
// The shapes follow the SDK's types (anthropic-sdk-go v2.15.0); the server
// listens on loopback only.
package envfake

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Step is one tool call of a scripted session.
type Step struct {
	Tool  string
	Input map[string]any
}

// Result is a tool result the worker posted.
type Result struct {
	ToolUseID string
	Tool      string
	IsError   bool
	Text      string
}

// StoreRef attaches a memory store to a session.
type StoreRef struct {
	StoreID   string
	Name      string
	MountPath string // empty: the SDK's {workdir}/memory/<name>
	ReadOnly  bool
}

// SessionSpec describes a scripted session.
type SessionSpec struct {
	ID     string
	Steps  []Step
	Stores []StoreRef
	// Terminate ends the session (session.status_terminated) after the last
	// step; otherwise it goes idle (end_turn) and may be continued.
	Terminate bool
	// NoToken gives its work items no sessions token (memory then cannot be
	// mounted).
	NoToken bool
}

// Work is the state of a work item.
type Work struct {
	ID, SessionID string
	Acked         bool
	Stopped       bool
	Forced        bool
	Heartbeats    int
	LeaseLost     bool
}

type session struct {
	spec    SessionSpec
	next    int    // next step to emit
	pending string // outstanding tool_use id
	tools   map[string]string
	events  []map[string]any
	results []Result
	status  string
	subs    map[chan map[string]any]bool
}

type memory struct {
	id, path, content string
	version           int
	created, updated  time.Time
}

// Server is the fake.
type Server struct {
	// EnvironmentID and EnvironmentKey are what the worker must use.
	EnvironmentID, EnvironmentKey string

	srv *httptest.Server

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every state change
	queue    []string
	work     map[string]*Work
	order    []string
	sessions map[string]*session
	stores   map[string]map[string]*memory // store → path → memory
	seq      int
	problems []string
	// loseOnStep: work id → lose the lease once the session's step index
	// reaches this value
	loseAt map[string]int
	ttl    int
}

// New starts a fake on loopback. Close it when done.
func New() *Server {
	s := &Server{
		EnvironmentID:  "env_fake01",
		EnvironmentKey: "envkey-fake-secret",
		changed:        make(chan struct{}),
		work:           map[string]*Work{},
		sessions:       map[string]*session{},
		stores:         map[string]map[string]*memory{},
		loseAt:         map[string]int{},
		ttl:            30,
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// URL is the base URL for the SDK client (option.WithBaseURL).
func (s *Server) URL() string { return s.srv.URL }

// Close stops the server.
func (s *Server) Close() {
	s.mu.Lock()
	for _, ss := range s.sessions {
		for c := range ss.subs {
			close(c)
		}
		ss.subs = map[chan map[string]any]bool{}
	}
	s.mu.Unlock()
	s.srv.CloseClientConnections()
	s.srv.Close()
}

// SetLeaseTTL sets the ttl_seconds heartbeats return (default 30); the SDK
// heartbeats every ttl/2, at least every second.
func (s *Server) SetLeaseTTL(seconds int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ttl = seconds
}

// Problems returns every request the fake found wrong (bad auth, a result
// for no outstanding call, ...). A correct worker leaves it empty.
func (s *Server) Problems() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.problems)
}

func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Changed returns a channel closed at the next state change; with Snapshot
// functions it lets a test wait for an event without sleeping.
func (s *Server) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

func (s *Server) id(prefix string) string {
	s.seq++
	return fmt.Sprintf("%s_%04d", prefix, s.seq)
}

// AddSession creates a scripted session and queues a work item for it; it
// returns the work item's id.
func (s *Server) AddSession(spec SessionSpec) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := &session{spec: spec, tools: map[string]string{}, status: "running", subs: map[chan map[string]any]bool{}}
	s.sessions[spec.ID] = ss
	s.emitNextLocked(ss)
	return s.enqueueLocked(spec.ID)
}

// Continue adds steps to an idle session and queues a new work item for it.
func (s *Server) Continue(sessionID string, steps ...Step) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.sessions[sessionID]
	ss.spec.Steps = append(ss.spec.Steps, steps...)
	ss.status = "running"
	s.emitNextLocked(ss)
	return s.enqueueLocked(sessionID)
}

// Enqueue queues a work item of another type (such as "healthcheck").
func (s *Server) Enqueue(dataType string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.enqueueLocked("\x00" + dataType)
}

func (s *Server) enqueueLocked(sessionID string) string {
	id := s.id("work")
	s.work[id] = &Work{ID: id, SessionID: sessionID}
	s.order = append(s.order, id)
	s.queue = append(s.queue, id)
	s.notifyLocked()
	return id
}

// LoseLeaseAtStep makes the heartbeats of work item workID fail with 412 (the
// lease went to another worker) once the session has been sent step index
// step (0-based).
func (s *Server) LoseLeaseAtStep(workID string, step int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loseAt[workID] = step
}

// Results returns the results posted for a session, in order.
func (s *Server) Results(sessionID string) []Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss := s.sessions[sessionID]; ss != nil {
		return slices.Clone(ss.results)
	}
	return nil
}

// WorkItem returns a work item's state.
func (s *Server) WorkItem(id string) Work {
	s.mu.Lock()
	defer s.mu.Unlock()
	if w := s.work[id]; w != nil {
		return *w
	}
	return Work{}
}

// PutMemory stores a memory in a store (creating the store).
func (s *Server) PutMemory(storeID, path, content string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.putLocked(storeID, path, content)
}

func (s *Server) putLocked(storeID, path, content string) *memory {
	st := s.stores[storeID]
	if st == nil {
		st = map[string]*memory{}
		s.stores[storeID] = st
	}
	now := time.Now().UTC()
	m := st[path]
	if m == nil {
		m = &memory{id: s.id("mem"), path: path, created: now}
		st[path] = m
	}
	m.content, m.updated = content, now
	m.version++
	s.notifyLocked()
	return m
}

// AddStore creates an empty memory store.
func (s *Server) AddStore(storeID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stores[storeID] == nil {
		s.stores[storeID] = map[string]*memory{}
	}
}

// Memory returns a memory's content by path ("/notes.md").
func (s *Server) Memory(storeID, path string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.stores[storeID][path]; m != nil {
		return m.content, true
	}
	return "", false
}

func sha(content string) string {
	sum := sha256.Sum256([]byte(content))
	return hex.EncodeToString(sum[:])
}

func (m *memory) json(storeID string, full bool) map[string]any {
	out := map[string]any{
		"type": "memory", "id": m.id, "memory_store_id": storeID, "path": m.path,
		"content_sha256": sha(m.content), "content_size_bytes": len(m.content),
		"memory_version_id": fmt.Sprintf("%s_v%d", m.id, m.version),
		"created_at":        m.created.Format(time.RFC3339Nano), "updated_at": m.updated.Format(time.RFC3339Nano),
		"content": nil,
	}
	if full {
		out["content"] = m.content
	}
	return out
}

// emitNextLocked emits the session's next tool_use, or its end.
func (s *Server) emitNextLocked(ss *session) {
	if ss.pending != "" {
		return
	}
	if ss.next < len(ss.spec.Steps) {
		st := ss.spec.Steps[ss.next]
		ss.next++
		id := s.id("sevt")
		ss.pending = id
		ss.tools[id] = st.Tool
		s.appendLocked(ss, map[string]any{"id": id, "type": "agent.tool_use", "name": st.Tool, "input": st.Input})
		return
	}
	if ss.spec.Terminate {
		ss.status = "terminated"
		s.appendLocked(ss, map[string]any{"id": s.id("sevt"), "type": "session.status_terminated"})
		return
	}
	ss.status = "idle"
	s.appendLocked(ss, map[string]any{"id": s.id("sevt"), "type": "session.status_idle", "stop_reason": map[string]any{"type": "end_turn"}})
}

func (s *Server) appendLocked(ss *session, ev map[string]any) {
	ev["processed_at"] = time.Now().UTC().Format(time.RFC3339Nano)
	ss.events = append(ss.events, ev)
	for c := range ss.subs {
		select {
		case c <- ev:
		default: // a stalled reader: drop it, it reconnects and reconciles
			close(c)
			delete(ss.subs, c)
		}
	}
	s.notifyLocked()
}

func (s *Server) problem(format string, args ...any) {
	s.problems = append(s.problems, fmt.Sprintf(format, args...))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func apiError(w http.ResponseWriter, code int, typ, msg string) {
	writeJSON(w, code, map[string]any{"type": "error", "error": map[string]any{"type": typ, "message": msg}})
}

// credential returns the bearer token of a request.
func credential(r *http.Request) string {
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
}

func (s *Server) sessionsToken(sessionID string) string { return "sesstok-" + sessionID }

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if r.Header.Get("X-Api-Key") != "" {
		s.mu.Lock()
		s.problem("%s %s carried an X-Api-Key header", r.Method, r.URL.Path)
		s.mu.Unlock()
	}
	if len(parts) < 2 || parts[0] != "v1" {
		apiError(w, 404, "not_found_error", "no route")
		return
	}
	switch {
	case parts[1] == "environments" && len(parts) >= 4 && parts[3] == "work":
		s.serveWork(w, r, parts)
	case parts[1] == "sessions" && len(parts) >= 3:
		s.serveSession(w, r, parts)
	case parts[1] == "memory_stores" && len(parts) >= 4 && parts[3] == "memories":
		s.serveMemory(w, r, parts)
	default:
		apiError(w, 404, "not_found_error", "no route "+r.URL.Path)
	}
}

func (s *Server) serveWork(w http.ResponseWriter, r *http.Request, parts []string) {
	if parts[2] != s.EnvironmentID {
		apiError(w, 404, "not_found_error", "no such environment")
		return
	}
	// /v1/environments/{env}/work/poll
	if len(parts) == 5 && parts[4] == "poll" && r.Method == http.MethodGet {
		if credential(r) != s.EnvironmentKey {
			apiError(w, 401, "authentication_error", "invalid environment key")
			return
		}
		block, _ := strconv.Atoi(r.URL.Query().Get("block_ms"))
		deadline := time.After(time.Duration(block) * time.Millisecond)
		for {
			s.mu.Lock()
			if len(s.queue) > 0 {
				id := s.queue[0]
				s.queue = s.queue[1:]
				body := s.workJSON(s.work[id], "queued") // reads s.sessions: under s.mu
				s.mu.Unlock()
				writeJSON(w, 200, body)
				return
			}
			ch := s.changed
			s.mu.Unlock()
			select {
			case <-ch:
			case <-deadline:
				w.WriteHeader(http.StatusNoContent)
				return
			case <-r.Context().Done():
				return
			}
		}
	}
	if len(parts) != 6 || r.Method != http.MethodPost {
		apiError(w, 404, "not_found_error", "no route")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	wk := s.work[parts[4]]
	if wk == nil {
		apiError(w, 404, "not_found_error", "no such work item")
		return
	}
	cred := credential(r)
	if cred != s.EnvironmentKey && cred != s.sessionsToken(wk.SessionID) {
		s.problem("%s on %s with a wrong credential", parts[5], wk.ID)
		apiError(w, 401, "authentication_error", "invalid credential")
		return
	}
	switch parts[5] {
	case "ack":
		wk.Acked = true
		s.notifyLocked()
		writeJSON(w, 200, s.workJSON(wk, "active"))
	case "heartbeat":
		wk.Heartbeats++
		if at, ok := s.loseAt[wk.ID]; ok && s.sessions[wk.SessionID] != nil && s.sessions[wk.SessionID].next > at {
			wk.LeaseLost = true
		}
		s.notifyLocked()
		if wk.LeaseLost {
			writeJSON(w, 412, map[string]any{"type": "error", "error": map[string]any{"type": "precondition_failed_error",
				"message": "lease held by another worker", "details": map[string]any{"current_state": map[string]any{"state": "active"}}}})
			return
		}
		state := "active"
		if wk.Stopped {
			state = "stopped"
		}
		writeJSON(w, 200, map[string]any{"type": "work_heartbeat", "last_heartbeat": fmt.Sprintf("hb-%d", wk.Heartbeats),
			"lease_extended": !wk.Stopped, "state": state, "ttl_seconds": s.ttl})
	case "stop":
		var body struct {
			Force bool `json:"force"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		if wk.Stopped {
			apiError(w, 409, "conflict_error", "already stopped")
			return
		}
		wk.Stopped, wk.Forced = true, body.Force
		s.notifyLocked()
		writeJSON(w, 200, s.workJSON(wk, "stopped"))
	default:
		apiError(w, 404, "not_found_error", "no route")
	}
}

// workJSON is wk as the API shows it; s.mu is held.
func (s *Server) workJSON(wk *Work, state string) map[string]any {
	now := time.Now().UTC().Format(time.RFC3339Nano)
	data := map[string]any{"type": "session", "id": wk.SessionID}
	if strings.HasPrefix(wk.SessionID, "\x00") {
		data = map[string]any{"type": strings.TrimPrefix(wk.SessionID, "\x00"), "id": "hc_" + wk.ID}
	}
	secret := ""
	if ss := s.sessions[wk.SessionID]; ss != nil && !ss.spec.NoToken {
		payload, _ := json.Marshal(map[string]any{"sessions_token": s.sessionsToken(wk.SessionID), "ingress_token": "unused"})
		secret = base64.RawURLEncoding.EncodeToString(payload)
	}
	return map[string]any{"type": "work", "id": wk.ID, "environment_id": s.EnvironmentID, "data": data,
		"secret": secret, "state": state, "created_at": now, "metadata": map[string]string{}}
}

func (s *Server) checkSessionAuth(w http.ResponseWriter, r *http.Request, sessionID string, memoryOnly bool) bool {
	cred := credential(r)
	if cred == s.sessionsToken(sessionID) || (!memoryOnly && cred == s.EnvironmentKey) {
		return true
	}
	s.problem("%s %s with a wrong credential", r.Method, r.URL.Path)
	apiError(w, 401, "authentication_error", "invalid credential")
	return false
}

func (s *Server) serveSession(w http.ResponseWriter, r *http.Request, parts []string) {
	id := parts[2]
	s.mu.Lock()
	ss := s.sessions[id]
	if ss == nil {
		s.mu.Unlock()
		apiError(w, 404, "not_found_error", "no such session")
		return
	}
	if !s.checkSessionAuth(w, r, id, false) {
		s.mu.Unlock()
		return
	}
	switch {
	case len(parts) == 3 && r.Method == http.MethodGet:
		var resources []map[string]any
		for _, st := range ss.spec.Stores {
			access := "read_write"
			if st.ReadOnly {
				access = "read_only"
			}
			res := map[string]any{"type": "memory_store", "memory_store_id": st.StoreID, "name": st.Name, "access": access, "description": ""}
			if st.MountPath != "" {
				res["mount_path"] = st.MountPath
			}
			resources = append(resources, res)
		}
		out := map[string]any{"type": "session", "id": id, "status": ss.status, "environment_id": s.EnvironmentID,
			"resources": resources, "agent": map[string]any{"skills": []any{}}, "metadata": map[string]string{}, "title": "scripted"}
		s.mu.Unlock()
		writeJSON(w, 200, out)
	case len(parts) == 4 && parts[3] == "events" && r.Method == http.MethodGet:
		out := map[string]any{"data": slices.Clone(ss.events), "next_page": nil}
		s.mu.Unlock()
		writeJSON(w, 200, out)
	case len(parts) == 4 && parts[3] == "events" && r.Method == http.MethodPost:
		defer s.mu.Unlock()
		s.sendEvents(w, r, ss)
	case len(parts) == 5 && parts[3] == "events" && parts[4] == "stream" && r.Method == http.MethodGet:
		c := make(chan map[string]any, 64)
		ss.subs[c] = true
		s.mu.Unlock()
		s.stream(w, r, ss, c)
	default:
		s.mu.Unlock()
		apiError(w, 404, "not_found_error", "no route")
	}
}

func (s *Server) sendEvents(w http.ResponseWriter, r *http.Request, ss *session) {
	var body struct {
		Events []struct {
			Type      string `json:"type"`
			ToolUseID string `json:"tool_use_id"`
			IsError   bool   `json:"is_error"`
			Content   []struct {
				Type string `json:"type"`
				Text string `json:"text"`
			} `json:"content"`
		} `json:"events"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		s.problem("undecodable events: %v", err)
		apiError(w, 400, "invalid_request_error", err.Error())
		return
	}
	var sent []map[string]any
	for _, ev := range body.Events {
		if ev.Type != "user.tool_result" {
			s.problem("unexpected event type %q", ev.Type)
			apiError(w, 400, "invalid_request_error", "unexpected event type "+ev.Type)
			return
		}
		if ev.ToolUseID != ss.pending {
			s.problem("result for %q while %q is outstanding", ev.ToolUseID, ss.pending)
			apiError(w, 400, "invalid_request_error", "no outstanding tool use "+ev.ToolUseID)
			return
		}
		var text strings.Builder
		var content []map[string]any
		for _, c := range ev.Content {
			if c.Type != "text" {
				s.problem("non-text result block %q", c.Type)
			}
			text.WriteString(c.Text)
			content = append(content, map[string]any{"type": c.Type, "text": c.Text})
		}
		ss.results = append(ss.results, Result{ToolUseID: ev.ToolUseID, Tool: ss.tools[ev.ToolUseID], IsError: ev.IsError, Text: text.String()})
		ss.pending = ""
		e := map[string]any{"id": s.id("sevt"), "type": "user.tool_result", "tool_use_id": ev.ToolUseID, "is_error": ev.IsError, "content": content}
		s.appendLocked(ss, e)
		sent = append(sent, e)
		s.emitNextLocked(ss)
	}
	writeJSON(w, 200, map[string]any{"data": sent})
}

func (s *Server) stream(w http.ResponseWriter, r *http.Request, ss *session, c chan map[string]any) {
	defer func() {
		s.mu.Lock()
		if ss.subs[c] {
			delete(ss.subs, c)
		}
		s.mu.Unlock()
	}()
	fl, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(200)
	if fl != nil {
		fl.Flush()
	}
	for {
		select {
		case ev, ok := <-c:
			if !ok {
				return
			}
			data, _ := json.Marshal(ev)
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev["type"], data)
			if fl != nil {
				fl.Flush()
			}
		case <-r.Context().Done():
			return
		}
	}
}

// storeSession finds the session a sessions token belongs to.
func (s *Server) serveMemory(w http.ResponseWriter, r *http.Request, parts []string) {
	storeID := parts[2]
	s.mu.Lock()
	defer s.mu.Unlock()
	cred := credential(r)
	ok := false
	for id, ss := range s.sessions {
		if cred == s.sessionsToken(id) {
			for _, st := range ss.spec.Stores {
				ok = ok || st.StoreID == storeID
			}
		}
	}
	if !ok {
		s.problem("%s %s without the sessions token of a session the store is attached to", r.Method, r.URL.Path)
		apiError(w, 401, "authentication_error", "memory endpoints need a sessions token")
		return
	}
	st := s.stores[storeID]
	if st == nil {
		apiError(w, 404, "not_found_error", "no such memory store")
		return
	}
	byID := func(id string) *memory {
		for _, m := range st {
			if m.id == id {
				return m
			}
		}
		return nil
	}
	switch {
	case len(parts) == 4 && r.Method == http.MethodGet:
		full := r.URL.Query().Get("view") == "full"
		var data []map[string]any
		for _, p := range slices.Sorted(mapsKeys(st)) {
			data = append(data, st[p].json(storeID, full))
		}
		writeJSON(w, 200, map[string]any{"data": data, "next_page": nil})
	case len(parts) == 4 && r.Method == http.MethodPost:
		var body struct {
			Path    string `json:"path"`
			Content string `json:"content"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		if !strings.HasPrefix(body.Path, "/") || strings.Contains(body.Path, "..") {
			s.problem("bad memory path %q", body.Path)
			apiError(w, 400, "invalid_request_error", "bad path")
			return
		}
		if st[body.Path] != nil {
			apiError(w, 409, "conflict_error", "exists")
			return
		}
		writeJSON(w, 200, s.putLocked(storeID, body.Path, body.Content).json(storeID, true))
	case len(parts) == 5 && r.Method == http.MethodGet:
		m := byID(parts[4])
		if m == nil {
			apiError(w, 404, "not_found_error", "no such memory")
			return
		}
		writeJSON(w, 200, m.json(storeID, true))
	case len(parts) == 5 && r.Method == http.MethodPost:
		m := byID(parts[4])
		if m == nil {
			apiError(w, 404, "not_found_error", "no such memory")
			return
		}
		var body struct {
			Content      *string `json:"content"`
			Precondition struct {
				ContentSha256 string `json:"content_sha256"`
			} `json:"precondition"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		if p := body.Precondition.ContentSha256; p != "" && p != sha(m.content) {
			apiError(w, 409, "conflict_error", "precondition failed")
			return
		}
		if body.Content != nil {
			m = s.putLocked(storeID, m.path, *body.Content)
		}
		writeJSON(w, 200, m.json(storeID, true))
	case len(parts) == 5 && r.Method == http.MethodDelete:
		m := byID(parts[4])
		if m == nil {
			apiError(w, 404, "not_found_error", "no such memory")
			return
		}
		if e := r.URL.Query().Get("expected_content_sha256"); e != "" && e != sha(m.content) {
			apiError(w, 409, "conflict_error", "precondition failed")
			return
		}
		delete(st, m.path)
		s.notifyLocked()
		writeJSON(w, 200, map[string]any{"type": "memory_deleted", "id": m.id})
	default:
		apiError(w, 404, "not_found_error", "no route")
	}
}

func mapsKeys(m map[string]*memory) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
