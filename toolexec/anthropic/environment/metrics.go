package environment

import (
	"fmt"
	"io"
	"sync/atomic"
	"time"
)

// Metrics counts what the worker does. Read the fields with their Load
// methods; [Metrics.WriteText] writes them in the Prometheus text format.
// A nil *Metrics counts nothing.
type Metrics struct {
	// SessionsActive is how many sessions are running now.
	SessionsActive atomic.Int64
	// Sessions counts sessions served (a session that comes back counts again).
	Sessions atomic.Int64
	// SessionFailures counts sessions whose sandbox could not be made.
	SessionFailures atomic.Int64
	// ToolCalls counts tool calls executed; ToolFailures those answered with is_error.
	ToolCalls, ToolFailures atomic.Int64
	// SandboxCreates and SandboxCreateFailures count Create calls;
	// SandboxCreateNanos sums the time they took.
	SandboxCreates, SandboxCreateFailures, SandboxCreateNanos atomic.Int64
	// WorkItems counts work items claimed; WorkItemFailures those the SDK's
	// worker ended with an error.
	WorkItems, WorkItemFailures atomic.Int64
}

func (m *Metrics) add(c func(*Metrics) *atomic.Int64, n int64) {
	if m != nil {
		c(m).Add(n)
	}
}

func (m *Metrics) observeCreate(d time.Duration, err error) {
	if m == nil {
		return
	}
	m.SandboxCreates.Add(1)
	m.SandboxCreateNanos.Add(int64(d))
	if err != nil {
		m.SandboxCreateFailures.Add(1)
	}
}

// WriteText writes the metrics in the Prometheus text exposition format.
func (m *Metrics) WriteText(w io.Writer) error {
	rows := []struct {
		name, kind, help string
		v                float64
	}{
		{"perimeter_worker_sessions_active", "gauge", "Sessions running now.", float64(m.SessionsActive.Load())},
		{"perimeter_worker_sessions_total", "counter", "Sessions served.", float64(m.Sessions.Load())},
		{"perimeter_worker_session_failures_total", "counter", "Sessions whose sandbox could not be made.", float64(m.SessionFailures.Load())},
		{"perimeter_worker_tool_calls_total", "counter", "Tool calls executed.", float64(m.ToolCalls.Load())},
		{"perimeter_worker_tool_failures_total", "counter", "Tool calls answered with is_error.", float64(m.ToolFailures.Load())},
		{"perimeter_worker_sandbox_creates_total", "counter", "Sandbox creations.", float64(m.SandboxCreates.Load())},
		{"perimeter_worker_sandbox_create_failures_total", "counter", "Sandbox creations that failed.", float64(m.SandboxCreateFailures.Load())},
		{"perimeter_worker_sandbox_create_seconds_total", "counter", "Time spent creating sandboxes.", time.Duration(m.SandboxCreateNanos.Load()).Seconds()},
		{"perimeter_worker_work_items_total", "counter", "Work items claimed.", float64(m.WorkItems.Load())},
		{"perimeter_worker_work_item_failures_total", "counter", "Work items that ended with an error.", float64(m.WorkItemFailures.Load())},
	}
	for _, r := range rows {
		if _, err := fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %g\n", r.name, r.help, r.name, r.kind, r.name, r.v); err != nil {
			return err
		}
	}
	return nil
}
