package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2/option"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/toolexec/anthropic/fakeapi"
)

// apiKey is the key the tests give the client; it must appear in no log.
const apiKey = "sk-ant-test-must-not-leak"

// waitBound is the longest the tests wait for an event they expect (a log
// record, a process appearing or going away). It is a bound against a hung
// test, never a duration the behaviour depends on.
const waitBound = 2 * time.Minute

// logSink records a Host's log records so that tests can wait for them.
type logSink struct {
	mu      sync.Mutex
	recs    []logRec
	changed chan struct{} // closed and replaced on every record
}

type logRec struct {
	Msg   string
	Attrs map[string]string
}

func newLogSink() *logSink { return &logSink{changed: make(chan struct{})} }

func (s *logSink) Enabled(context.Context, slog.Level) bool { return true }
func (s *logSink) WithAttrs([]slog.Attr) slog.Handler       { return s }
func (s *logSink) WithGroup(string) slog.Handler            { return s }
func (s *logSink) Handle(_ context.Context, r slog.Record) error {
	rec := logRec{Msg: r.Message, Attrs: map[string]string{}}
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs[a.Key] = a.Value.String()
		return true
	})
	s.mu.Lock()
	s.recs = append(s.recs, rec)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	return nil
}

func (s *logSink) records() []logRec {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]logRec(nil), s.recs...)
}

// wait returns the first record matching msg and attrs, waiting for it.
func (s *logSink) wait(t *testing.T, msg string, attrs map[string]string) logRec {
	t.Helper()
	deadline := time.NewTimer(waitBound)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		changed := s.changed
		for _, r := range s.recs {
			if r.Msg == msg && matches(r.Attrs, attrs) {
				s.mu.Unlock()
				return r
			}
		}
		s.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("no log record %q with %v; log:\n%v", msg, attrs, s.records())
		}
	}
}

func matches(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// newHost starts a Host on the local provider, served on a loopback port,
// talking to a fake Messages API replaying script.
func newHost(t *testing.T, cfg Config, script []fakeapi.Turn) (*Host, *httptest.Server, *fakeapi.Server, *logSink) {
	t.Helper()
	api := fakeapi.New(script)
	t.Cleanup(api.Close)
	sink := newLogSink()
	if cfg.Provider == "" {
		cfg.Provider = "local://" + t.TempDir()
	}
	cfg.Logger = slog.New(sink)
	cfg.ClientOptions = []option.RequestOption{option.WithBaseURL(api.URL), option.WithAPIKey(apiKey), option.WithMaxRetries(0)}
	h, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		srv.Close()
		checkNoSecrets(t, sink)
	})
	return h, srv, api, sink
}

// checkNoSecrets: no log record carries the API key or a tool's output.
func checkNoSecrets(t *testing.T, sink *logSink) {
	t.Helper()
	for _, r := range sink.records() {
		for k, v := range r.Attrs {
			for _, bad := range []string{apiKey, "hello, perimeter", "still-usable", "No such file"} {
				if strings.Contains(v, bad) {
					t.Errorf("log record %q attribute %s carries %q: %q", r.Msg, k, bad, v)
				}
			}
		}
	}
}

type event struct {
	Name string
	Data map[string]any
}

// task is one POST /v1/tasks in flight: its events arrive on Events, which
// is closed when the stream ends.
type task struct {
	Events <-chan event
	cancel context.CancelFunc
}

// post sends a task and returns its event stream; the status must be 200.
func post(t *testing.T, srv *httptest.Server, body map[string]any) *task {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	resp := postRaw(t, ctx, srv, body)
	if resp.StatusCode != http.StatusOK {
		b := new(bytes.Buffer)
		b.ReadFrom(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("POST /v1/tasks: %s %s", resp.Status, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type = %q", ct)
	}
	ch := make(chan event)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(ch)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		var name string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				var data map[string]any
				if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &data); err != nil {
					t.Errorf("event %s: data is not JSON: %q", name, line)
				}
				select {
				case ch <- event{name, data}:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	tk := &task{Events: ch, cancel: cancel}
	t.Cleanup(func() { cancel(); <-done })
	return tk
}

func postRaw(t *testing.T, ctx context.Context, srv *httptest.Server, body map[string]any) *http.Response {
	t.Helper()
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/tasks", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	c := srv.Client()
	if c == nil { // a server the test did not start with httptest
		tr := &http.Transport{}
		t.Cleanup(tr.CloseIdleConnections)
		c = &http.Client{Transport: tr}
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// until reads events until one named name (and, if id is set, with that
// id), and returns the events read.
func (tk *task) until(t *testing.T, name, id string) []event {
	t.Helper()
	var seen []event
	for ev := range tk.Events {
		seen = append(seen, ev)
		if ev.Name == name && (id == "" || ev.Data["id"] == id) {
			return seen
		}
	}
	t.Fatalf("the stream ended before a %s event (id %q); events: %v", name, id, seen)
	return nil
}

// all reads every event until the stream ends.
func (tk *task) all() []event {
	var seen []event
	for ev := range tk.Events {
		seen = append(seen, ev)
	}
	return seen
}

func find(evs []event, name, id string) (event, bool) {
	for _, ev := range evs {
		if ev.Name == name && (id == "" || ev.Data["id"] == id) {
			return ev, true
		}
	}
	return event{}, false
}

func mustFind(t *testing.T, evs []event, name, id string) event {
	t.Helper()
	ev, ok := find(evs, name, id)
	if !ok {
		t.Fatalf("no %s event (id %q) in %v", name, id, evs)
	}
	return ev
}

func toolUse(id, name string, input map[string]any) map[string]any {
	return map[string]any{"type": "tool_use", "id": id, "name": name, "input": input}
}

func text(s string) map[string]any { return map[string]any{"type": "text", "text": s} }

func endTurn(s string) fakeapi.Turn {
	return fakeapi.Turn{StopReason: "end_turn", Content: []map[string]any{text(s)}}
}

// resultText returns the text of tool result i of request req, and whether
// it is an error.
func resultText(t *testing.T, api *fakeapi.Server, req int, id string) (string, bool) {
	t.Helper()
	for _, r := range api.ToolResults(req) {
		if r["tool_use_id"] != id {
			continue
		}
		var sb strings.Builder
		blocks, _ := r["content"].([]any)
		for _, b := range blocks {
			m, _ := b.(map[string]any)
			s, _ := m["text"].(string)
			sb.WriteString(s)
		}
		isErr, _ := r["is_error"].(bool)
		return sb.String(), isErr
	}
	t.Fatalf("request %d has no tool result for %s: %v", req, id, api.ToolResults(req))
	return "", false
}

// TestConversation drives a scripted conversation through a real sandbox: a
// file created and edited with the text editor, a command that succeeds and
// one that fails in the same turn, then a follow-up task that finds the
// file in the same sandbox.
func TestConversation(t *testing.T) {
	t.Setenv("ANTHROPIC_API_KEY", apiKey)
	_, srv, api, sink := newHost(t, Config{}, []fakeapi.Turn{
		{StopReason: "tool_use", Content: []map[string]any{
			text("I'll write the script."),
			toolUse("toolu_1", "str_replace_based_edit_tool", map[string]any{"command": "create", "path": "/workspace/greet.sh", "file_text": "echo hello\n"}),
		}},
		{StopReason: "tool_use", Content: []map[string]any{
			toolUse("toolu_2", "str_replace_based_edit_tool", map[string]any{"command": "str_replace", "path": "/workspace/greet.sh", "old_str": "hello", "new_str": "hello, perimeter"}),
		}},
		{StopReason: "tool_use", Content: []map[string]any{
			toolUse("toolu_3", "bash", map[string]any{"command": "sh /workspace/greet.sh"}),
			toolUse("toolu_4", "bash", map[string]any{"command": "ls /workspace/missing"}),
		}},
		endTurn("It greets."),
		// The follow-up task.
		{StopReason: "tool_use", Content: []map[string]any{
			toolUse("toolu_5", "bash", map[string]any{"command": "cat greet.sh; echo \"key=[$ANTHROPIC_API_KEY]\""}),
		}},
		endTurn("Same file."),
	})

	evs := post(t, srv, map[string]any{"task": "Write a greeting script and run it."}).all()
	if evs[0].Name != "conversation" {
		t.Fatalf("first event = %v, want conversation", evs[0])
	}
	conv, _ := evs[0].Data["id"].(string)
	if done := evs[len(evs)-1]; done.Name != "done" || done.Data["stop_reason"] != "end_turn" {
		t.Fatalf("last event = %v, want done with end_turn; events: %v", done, evs)
	}
	if ev := mustFind(t, evs, "text", ""); ev.Data["text"] != "I'll write the script." {
		t.Errorf("first text event = %v", ev)
	}
	if ev := mustFind(t, evs, "tool_call", "toolu_3"); ev.Data["name"] != "bash" {
		t.Errorf("tool_call event = %v", ev)
	}
	for id, want := range map[string]string{"toolu_1": "ok", "toolu_2": "ok", "toolu_3": "0", "toolu_4": "2"} {
		ev := mustFind(t, evs, "tool_result", id)
		if ev.Data["exit"] != want || ev.Data["is_error"] != (want == "2") {
			t.Errorf("tool_result %s = %v, want exit %s", id, ev.Data, want)
		}
		rec := sink.wait(t, "tool call", map[string]string{"conversation": conv, "tool_use_id": id, "exit": want})
		// Exactly these attributes: nothing of the input or output.
		keys := slices.Sorted(maps.Keys(rec.Attrs))
		if !slices.Equal(keys, []string{"conversation", "duration_ms", "exit", "sandbox", "tool", "tool_use_id"}) || rec.Attrs["sandbox"] == "" {
			t.Errorf("tool call log record = %v", rec.Attrs)
		}
	}
	if ev := mustFind(t, evs, "tool_result", "toolu_3"); ev.Data["summary"] != "hello, perimeter\n" {
		t.Errorf("tool_result summary = %q", ev.Data["summary"])
	}

	// What the model got back, exactly.
	if got, isErr := resultText(t, api, 2, "toolu_2"); !strings.Contains(got, "     1\techo hello, perimeter\n") || isErr {
		t.Errorf("str_replace result = %q (error %v)", got, isErr)
	}
	if got, isErr := resultText(t, api, 3, "toolu_3"); got != "hello, perimeter\n" || isErr {
		t.Errorf("bash result = %q (error %v)", got, isErr)
	}
	if got, isErr := resultText(t, api, 3, "toolu_4"); !strings.HasSuffix(got, "\nexit code: 2") || !isErr {
		t.Errorf("failing command's result = %q (error %v)", got, isErr)
	}

	// A follow-up task in the same conversation: same sandbox, same shell
	// (its working directory), and the whole history sent.
	evs = post(t, srv, map[string]any{"conversation": conv, "task": "Show it again."}).all()
	if evs[0].Name != "conversation" || evs[0].Data["id"] != conv {
		t.Fatalf("first event = %v, want conversation %s", evs[0], conv)
	}
	mustFind(t, evs, "done", "")
	// The key is in the service's environment, not in the sandbox's shell.
	if got, _ := resultText(t, api, 5, "toolu_5"); got != "echo hello, perimeter\nkey=[]\n" {
		t.Errorf("follow-up cat = %q", got)
	}
	if n := len(api.Requests()[4]["messages"].([]any)); n != 9 {
		t.Errorf("the follow-up request carries %d messages, want 9 (the whole conversation)", n)
	}
}

// sleepMarker returns a sleep argument unique to this test run, so that the
// test can find the command's process among the host's.
func sleepMarker(t *testing.T) string {
	n, err := rand.Int(rand.Reader, big.NewInt(1_000_000))
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("86399.%06d", n.Int64())
}

// sleepRunning reports whether a "sleep MARKER" process runs on this host
// (the sandbox's processes are host processes in their own namespaces).
func sleepRunning(t *testing.T, marker string) bool {
	t.Helper()
	want := []byte("sleep\x00" + marker + "\x00")
	dirs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range dirs {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, want) {
			return true
		}
	}
	return false
}

// waitSleep waits until the sleep process is running (want) or gone.
func waitSleep(t *testing.T, marker string, want bool) {
	t.Helper()
	deadline := time.Now().Add(waitBound)
	for sleepRunning(t, marker) != want {
		if time.Now().After(deadline) {
			t.Fatalf("sleep %s running = %v after %v, want %v", marker, !want, waitBound, want)
		}
		time.Sleep(20 * time.Millisecond) // polling /proc: there is no event to wait on
	}
}

func started(t *testing.T, sink *logSink, conv string) string {
	t.Helper()
	return sink.wait(t, "conversation started", map[string]string{"conversation": conv}).Attrs["sandbox"]
}

// TestDisconnectCancelsCommand: a caller that disconnects while a long
// command runs stops the command (its process is gone), and the
// conversation's sandbox stays usable for a follow-up task, whose request
// answers the interrupted call and says why; then the idle conversation is
// reaped and its sandbox terminated.
func TestDisconnectCancelsCommand(t *testing.T) {
	marker := sleepMarker(t)
	h, srv, api, sink := newHost(t, Config{IdleTimeout: time.Hour}, []fakeapi.Turn{
		{StopReason: "tool_use", Content: []map[string]any{
			toolUse("toolu_long", "bash", map[string]any{"command": "echo started > /workspace/state; sleep " + marker}),
		}},
		{StopReason: "tool_use", Content: []map[string]any{
			toolUse("toolu_after", "bash", map[string]any{"command": "cat /workspace/state; echo still-usable"}),
		}},
		endTurn("Still here."),
	})
	tk := post(t, srv, map[string]any{"task": "Run something long."})
	evs := tk.until(t, "tool_call", "toolu_long")
	conv := evs[0].Data["id"].(string)
	waitSleep(t, marker, true)

	tk.cancel() // the caller goes away
	sink.wait(t, "task cancelled", map[string]string{"conversation": conv, "cause": errDisconnect.Error()})
	sink.wait(t, "tool call", map[string]string{"conversation": conv, "tool_use_id": "toolu_long", "exit": "cancelled"})
	waitSleep(t, marker, false)

	evs = post(t, srv, map[string]any{"conversation": conv, "task": "Are you still there?"}).all()
	mustFind(t, evs, "done", "")
	if got, isErr := resultText(t, api, 2, "toolu_after"); got != "started\nstill-usable\n" || isErr {
		t.Errorf("follow-up result = %q (error %v)", got, isErr)
	}
	// The follow-up request: the interrupted call has an error result and
	// the model is told why.
	msgs := api.Requests()[1]["messages"].([]any)
	last, _ := json.Marshal(msgs[len(msgs)-1])
	if !strings.Contains(string(last), `"tool_use_id":"toolu_long"`) || !strings.Contains(string(last), "The previous task ended early: "+errDisconnect.Error()) {
		t.Errorf("the follow-up's user message = %s", last)
	}

	// Idle for longer than IdleTimeout: the reaper terminates the sandbox.
	sbID := started(t, sink, conv)
	h.reapIdle(time.Now().Add(2 * time.Hour))
	sink.wait(t, "sandbox terminated", map[string]string{"conversation": conv, "reason": "idle"})
	if _, err := h.provider.Get(context.Background(), sbID); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("Get of the reaped sandbox: %v, want ErrNotFound", err)
	}
	resp := postRaw(t, context.Background(), srv, map[string]any{"conversation": conv, "task": "again"})
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("a task for a reaped conversation: %s, want 404", resp.Status)
	}
}

// TestSandboxLimit: with every sandbox in use a new conversation is refused
// with 503 and Retry-After; a busy conversation cannot be deleted or given
// a second task; once the busy one is idle past IdleTimeout the reaper
// frees its sandbox and a new conversation starts.
func TestSandboxLimit(t *testing.T) {
	marker := sleepMarker(t)
	h, srv, _, sink := newHost(t, Config{MaxSandboxes: 1, IdleTimeout: 100 * time.Millisecond}, []fakeapi.Turn{
		{StopReason: "tool_use", Content: []map[string]any{
			toolUse("toolu_long", "bash", map[string]any{"command": "sleep " + marker}),
		}},
		endTurn("Hello from the second conversation."),
	})
	tk := post(t, srv, map[string]any{"task": "Run something long."})
	conv := tk.until(t, "tool_call", "toolu_long")[0].Data["id"].(string)

	resp := postRaw(t, context.Background(), srv, map[string]any{"task": "A second conversation."})
	var body map[string]string
	json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(body["error"], "all 1 sandboxes are in use") {
		t.Errorf("over the limit: %s Retry-After %q %v", resp.Status, resp.Header.Get("Retry-After"), body)
	}
	req, _ := http.NewRequest(http.MethodDelete, srv.URL+"/v1/conversations/"+conv, nil)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict {
		t.Errorf("DELETE of a busy conversation: %s, want 409", resp.Status)
	}

	// A busy conversation is never reaped, however long it runs.
	waitSleep(t, marker, true)
	h.reapIdle(time.Now().Add(time.Hour))
	for _, r := range sink.records() {
		if r.Msg == "sandbox terminated" {
			t.Errorf("a busy conversation was reaped: %v", r)
		}
	}
	if !sleepRunning(t, marker) {
		t.Error("the busy conversation's command is gone")
	}
	resp = postRaw(t, context.Background(), srv, map[string]any{"conversation": conv, "task": "A second task at once."})
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict {
		t.Errorf("a second task in a busy conversation: %s, want 409 (busy, not reaped)", resp.Status)
	}

	// Once the caller goes away the conversation is idle, and the reaper
	// (running every IdleTimeout/4) terminates its sandbox.
	tk.cancel()
	sink.wait(t, "task cancelled", map[string]string{"conversation": conv})
	waitSleep(t, marker, false)
	sink.wait(t, "sandbox terminated", map[string]string{"conversation": conv, "reason": "idle"})

	evs := post(t, srv, map[string]any{"task": "A second conversation."}).all()
	if ev := mustFind(t, evs, "text", ""); ev.Data["text"] != "Hello from the second conversation." {
		t.Errorf("text = %v", ev)
	}
}

// TestShutdown: Close cancels a running task (the caller gets an error
// event), kills its command and terminates every conversation's sandbox.
func TestShutdown(t *testing.T) {
	marker := sleepMarker(t)
	dir := t.TempDir()
	h, srv, _, sink := newHost(t, Config{Provider: "local://" + dir}, []fakeapi.Turn{
		endTurn("An idle conversation."),
		{StopReason: "tool_use", Content: []map[string]any{
			toolUse("toolu_long", "bash", map[string]any{"command": "sleep " + marker}),
		}},
	})
	idle := post(t, srv, map[string]any{"task": "Say hi."}).all()[0].Data["id"].(string)
	tk := post(t, srv, map[string]any{"task": "Run something long."})
	busy := tk.until(t, "tool_call", "toolu_long")[0].Data["id"].(string)
	waitSleep(t, marker, true)

	closed := make(chan error, 1)
	go func() { closed <- h.Close() }()
	evs := tk.all()
	if ev, ok := find(evs, "error", ""); !ok || !strings.Contains(ev.Data["error"].(string), errShutdown.Error()) {
		t.Errorf("the running task's events after Close: %v", evs)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{idle, busy} {
		sink.wait(t, "sandbox terminated", map[string]string{"conversation": c, "reason": "shutdown"})
	}
	waitSleep(t, marker, false) // the running command does not outlive Close
	resp := postRaw(t, context.Background(), srv, map[string]any{"task": "After shutdown."})
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a task after Close: %s, want 503", resp.Status)
	}

	// Nothing is left for the provider to list.
	p, err := sandbox.Open(context.Background(), "local://"+dir)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for info, err := range p.List(context.Background(), &sandbox.ListOptions{Labels: map[string]string{"app": "agent-host"}}) {
		if err != nil {
			t.Fatal(err)
		}
		t.Errorf("sandbox %s (%s) is left after Close", info.ID, info.State)
	}
}

// TestBadRequests: malformed bodies and unknown conversations get a clear
// error and create no sandbox.
func TestBadRequests(t *testing.T) {
	_, srv, api, sink := newHost(t, Config{Token: "s3cret"}, nil)
	do := func(auth, body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/tasks", strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e map[string]string
		json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e["error"]
	}
	for _, c := range []struct {
		auth, body string
		status     int
		msg        string
	}{
		{"", `{"task":"x"}`, 401, "bearer token"},
		{"wrong", `{"task":"x"}`, 401, "bearer token"},
		{"s3cret", `{"task":""}`, 400, "task is empty"},
		{"s3cret", `{"task":"x","extra":1}`, 400, `unknown field "extra"`},
		{"s3cret", `not json`, 400, "must be a JSON object"},
		{"s3cret", `{"task":"x"} {"task":"y"}`, 400, "one JSON object"},
		{"s3cret", `{"task":"x","conversation":"conv_nope"}`, 404, `no conversation "conv_nope"`},
	} {
		status, msg := do(c.auth, c.body)
		if status != c.status || !strings.Contains(msg, c.msg) {
			t.Errorf("%s with token %q: %d %q, want %d containing %q", c.body, c.auth, status, msg, c.status, c.msg)
		}
	}
	if n := len(api.Requests()); n != 0 {
		t.Errorf("%d requests reached the API", n)
	}
	for _, r := range sink.records() {
		if r.Msg == "conversation started" {
			t.Errorf("a bad request created a sandbox: %v", r)
		}
	}
}

// TestLive runs one task against the real Messages API when a key is set.
func TestLive(t *testing.T) {
	if os.Getenv("ANTHROPIC_API_KEY") == "" || os.Getenv("PERIMETER_LIVE") == "" {
		t.Skip("live test: set ANTHROPIC_API_KEY and PERIMETER_LIVE=1 to run a task against the real Messages API")
	}
	h, err := New(context.Background(), Config{Provider: "local://" + t.TempDir(), MaxModelCalls: 10})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() { h.Close(); srv.Close() })
	evs := post(t, srv, map[string]any{"task": "Create hello.txt containing the word perimeter in your working directory, then show it with cat."}).all()
	for _, ev := range evs {
		t.Logf("%s %v", ev.Name, ev.Data)
	}
	mustFind(t, evs, "done", "")
}

// TestServeShutdown: the command's serve loop, stopped (as by SIGTERM) while
// a task runs and with no grace left, cancels the task, terminates every
// sandbox, stops listening and returns no error.
func TestServeShutdown(t *testing.T) {
	marker := sleepMarker(t)
	api := fakeapi.New([]fakeapi.Turn{{StopReason: "tool_use", Content: []map[string]any{
		toolUse("toolu_long", "bash", map[string]any{"command": "sleep " + marker}),
	}}})
	defer api.Close()
	sink := newLogSink()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	served := make(chan error, 1)
	go func() {
		served <- serve(ctx, ln, 0, Config{
			Provider:      "local://" + t.TempDir(),
			Logger:        slog.New(sink),
			ClientOptions: []option.RequestOption{option.WithBaseURL(api.URL), option.WithAPIKey(apiKey), option.WithMaxRetries(0)},
		})
	}()
	srv := &httptest.Server{URL: "http://" + ln.Addr().String(), Listener: ln}
	tk := post(t, srv, map[string]any{"task": "Run something long."})
	conv := tk.until(t, "tool_call", "toolu_long")[0].Data["id"].(string)
	waitSleep(t, marker, true)

	stop()
	evs := tk.all()
	if ev, ok := find(evs, "error", ""); !ok || !strings.Contains(ev.Data["error"].(string), errShutdown.Error()) {
		t.Errorf("the running task's events after shutdown: %v", evs)
	}
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
	sink.wait(t, "sandbox terminated", map[string]string{"conversation": conv, "reason": "shutdown"})
	waitSleep(t, marker, false)
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Error("still listening after serve returned")
	}
	checkNoSecrets(t, sink)
}

// TestTaskEndsEarly: a task that reaches the model-call limit, and one whose
// API call fails, end with an error event; the next task answers the tool
// call that never ran, so the conversation goes on.
func TestTaskEndsEarly(t *testing.T) {
	_, srv, api, sink := newHost(t, Config{MaxModelCalls: 1}, []fakeapi.Turn{
		{StopReason: "tool_use", Content: []map[string]any{
			toolUse("toolu_never", "bash", map[string]any{"command": "echo never"}),
		}},
		endTurn("Understood."),
		// No third reply: the fake answers 500.
	})
	evs := post(t, srv, map[string]any{"task": "Loop."}).all()
	conv := evs[0].Data["id"].(string)
	if ev, ok := find(evs, "error", ""); !ok || !strings.Contains(ev.Data["error"].(string), "after 1 model calls") {
		t.Errorf("events at the model-call limit: %v", evs)
	}
	if _, ok := find(evs, "tool_result", ""); ok {
		t.Errorf("a tool ran past the model-call limit: %v", evs)
	}

	evs = post(t, srv, map[string]any{"conversation": conv, "task": "Stop."}).all()
	mustFind(t, evs, "done", "")
	if got, isErr := resultText(t, api, 1, "toolu_never"); !strings.HasPrefix(got, "Error: not run: the previous task ended before this tool call ran") || !isErr {
		t.Errorf("the unrun call's result = %q (error %v)", got, isErr)
	}

	evs = post(t, srv, map[string]any{"conversation": conv, "task": "Again."}).all()
	if _, ok := find(evs, "error", ""); !ok {
		t.Errorf("events when the API fails: %v", evs)
	}
	sink.wait(t, "task failed", map[string]string{"conversation": conv})
}
