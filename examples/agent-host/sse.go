package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// eventStream writes Server-Sent Events to one response. It is safe for
// concurrent use (the tool runner runs a turn's tools in parallel). A write
// error (the caller went away) makes later sends no-ops; the request's
// context tells the task.
type eventStream struct {
	mu     sync.Mutex
	w      http.ResponseWriter
	rc     *http.ResponseController
	failed bool
}

func newEventStream(w http.ResponseWriter) *eventStream {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	ev := &eventStream{w: w, rc: http.NewResponseController(w)}
	ev.mu.Lock()
	ev.flush()
	ev.mu.Unlock()
	return ev
}

// send writes one event whose data is v as JSON (one line: JSON never
// contains a raw newline).
func (e *eventStream) send(event string, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		data, _ = json.Marshal(map[string]string{"error": "encoding the event: " + err.Error()})
		event = "error"
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.failed {
		return
	}
	if _, err := fmt.Fprintf(e.w, "event: %s\ndata: %s\n\n", event, data); err != nil {
		e.failed = true
		return
	}
	e.flush()
}

// flush sends what is buffered; e.mu is held.
func (e *eventStream) flush() {
	if err := e.rc.Flush(); err != nil {
		e.failed = true
	}
}

// keepAlive writes an SSE comment every interval until the returned
// function is called (which waits for the writer to stop).
func (e *eventStream) keepAlive(interval time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				e.mu.Lock()
				if !e.failed {
					if _, err := fmt.Fprint(e.w, ": keep-alive\n\n"); err != nil {
						e.failed = true
					} else {
						e.flush()
					}
				}
				e.mu.Unlock()
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}
