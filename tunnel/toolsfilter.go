package tunnel

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// toolsListFilter rewrites the response to one tools/list request so that
// tools the route's policy refuses are not listed. It handles a JSON body
// (buffered, then rewritten) and an SSE stream (rewritten event by event,
// each event flushed as soon as it is complete; other events pass
// unchanged).
type toolsListFilter struct {
	w      http.ResponseWriter
	policy *Policy
	id     json.RawMessage

	mode   int // 0 undecided, 1 json, 2 sse, 3 pass
	status int
	buf    bytes.Buffer
}

const (
	filterUndecided = iota
	filterJSON
	filterSSE
	filterPass
)

func (f *toolsListFilter) Header() http.Header { return f.w.Header() }

func (f *toolsListFilter) decide() {
	if f.mode != filterUndecided {
		return
	}
	ct := f.w.Header().Get("Content-Type")
	switch {
	case strings.HasPrefix(ct, "application/json"):
		f.mode = filterJSON
		f.w.Header().Del("Content-Length")
	case strings.HasPrefix(ct, "text/event-stream"):
		f.mode = filterSSE
	default:
		f.mode = filterPass
	}
}

func (f *toolsListFilter) WriteHeader(code int) {
	if code < 200 {
		f.w.WriteHeader(code)
		return
	}
	if f.status != 0 {
		return
	}
	f.status = code
	f.decide()
	if f.mode != filterJSON { // JSON waits for the body to fix Content-Length
		f.w.WriteHeader(code)
	}
}

func (f *toolsListFilter) Write(p []byte) (int, error) {
	if f.status == 0 {
		f.WriteHeader(http.StatusOK)
	}
	switch f.mode {
	case filterJSON:
		return f.buf.Write(p)
	case filterSSE:
		f.buf.Write(p)
		return len(p), f.writeEvents(false)
	}
	return f.w.Write(p)
}

// Flush sends what is complete: whole SSE events; nothing of a JSON body.
func (f *toolsListFilter) Flush() {
	if f.mode == filterJSON {
		return
	}
	if f.status == 0 {
		f.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(f.w).Flush()
}

// Unwrap gives http.ResponseController the underlying writer (for deadlines).
func (f *toolsListFilter) Unwrap() http.ResponseWriter { return f.w }

// writeEvents writes every complete SSE event in buf, filtered; at the end
// of the response (final) it writes the remainder too.
func (f *toolsListFilter) writeEvents(final bool) error {
	for {
		data := f.buf.Bytes()
		i := bytes.Index(data, []byte("\n\n"))
		if i < 0 {
			if final && len(data) > 0 {
				_, err := f.w.Write(f.filterEvent(data))
				f.buf.Reset()
				return err
			}
			return nil
		}
		ev := f.filterEvent(data[:i])
		f.buf.Next(i + 2)
		if _, err := f.w.Write(append(ev, '\n', '\n')); err != nil {
			return err
		}
		_ = http.NewResponseController(f.w).Flush()
	}
}

// filterEvent rewrites the data of one SSE event if it is the tools/list
// response; any other event comes back unchanged.
func (f *toolsListFilter) filterEvent(ev []byte) []byte {
	lines := strings.Split(string(ev), "\n")
	var data []string
	for _, l := range lines {
		if v, ok := strings.CutPrefix(l, "data:"); ok {
			data = append(data, strings.TrimPrefix(v, " "))
		}
	}
	if len(data) == 0 {
		return ev
	}
	out, changed := f.filterMessage([]byte(strings.Join(data, "\n")))
	if !changed {
		return ev
	}
	var b strings.Builder
	wrote := false
	for _, l := range lines {
		if strings.HasPrefix(l, "data:") {
			if !wrote {
				b.WriteString("data: ")
				b.Write(out)
				b.WriteByte('\n')
				wrote = true
			}
			continue
		}
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return []byte(strings.TrimSuffix(b.String(), "\n"))
}

// filterMessage drops refused tools from a JSON-RPC response to the
// tools/list request. It reports whether it changed anything.
func (f *toolsListFilter) filterMessage(msg []byte) ([]byte, bool) {
	var m map[string]json.RawMessage
	if json.Unmarshal(msg, &m) != nil || !bytes.Equal(compactJSON(m["id"]), compactJSON(f.id)) {
		return msg, false
	}
	var result map[string]json.RawMessage
	if json.Unmarshal(m["result"], &result) != nil {
		return msg, false
	}
	var tools []json.RawMessage
	if json.Unmarshal(result["tools"], &tools) != nil {
		return msg, false
	}
	kept := tools[:0]
	for _, t := range tools {
		// Read the name as a client will (exact key); a tool whose name is
		// ambiguous is dropped.
		name, ok := toolName(t)
		if !ok || f.policy.checkMethod("tools/call", name) != "" {
			continue
		}
		kept = append(kept, t)
	}
	if len(kept) == len(tools) {
		return msg, false
	}
	var err error
	if result["tools"], err = json.Marshal(kept); err != nil {
		return msg, false
	}
	if m["result"], err = json.Marshal(result); err != nil {
		return msg, false
	}
	out, err := json.Marshal(m)
	if err != nil {
		return msg, false
	}
	return out, true
}

func compactJSON(b json.RawMessage) []byte {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return b
	}
	return buf.Bytes()
}

// finish writes what the filter still holds when the handler returns.
func (f *toolsListFilter) finish() {
	switch f.mode {
	case filterJSON:
		body, _ := f.filterMessage(f.buf.Bytes())
		f.w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		f.w.WriteHeader(f.status)
		f.w.Write(body)
	case filterSSE:
		_ = f.writeEvents(true)
	}
}

// toolName reads the "name" of a tool object with the policy's strict
// reader: ok is false if it is missing, not a string, repeated or shadowed
// by a case variant.
func toolName(t []byte) (string, bool) {
	s := &scanner{data: t}
	s.skipSpace()
	if s.peek() != '{' {
		return "", false
	}
	var m rpcMessage
	if s.params(&m) != nil || !m.hasName {
		return "", false
	}
	return m.paramName, true
}
