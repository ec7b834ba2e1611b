package tunnel

// Metrics receives the tunnel's counters and histograms. Labels are key/value
// pairs: "route", "r1", "status", "200". Implementations must be safe for
// concurrent use; adapt it to Prometheus, OpenTelemetry or expvar in a few
// lines.
//
// Names used: tunnel_calls_total, tunnel_call_seconds, tunnel_request_bytes,
// tunnel_response_bytes (labels side, route, method, status);
// tunnel_connects_total and tunnel_disconnects_total (labels side,
// connector); tunnel_handshake_failures_total (label reason);
// tunnel_stdio_sessions_total and tunnel_stdio_sessions_reaped_total (label
// route).
type Metrics interface {
	// Count adds one to the named counter.
	Count(name string, labels ...string)
	// Observe records value in the named histogram.
	Observe(name string, value float64, labels ...string)
}

type nopMetrics struct{}

func (nopMetrics) Count(string, ...string)            {}
func (nopMetrics) Observe(string, float64, ...string) {}
