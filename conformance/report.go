package conformance

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is the outcome of one check.
type Result struct {
	CheckInfo
	Passed bool `json:"passed"`
	// Message says what went wrong; empty when the check passed.
	Message  string        `json:"message,omitempty"`
	Log      []string      `json:"log,omitempty"`
	Duration time.Duration `json:"duration_ns"`
}

// Report is the outcome of a run.
type Report struct {
	RunID    string    `json:"run_id"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Results  []Result  `json:"results"`
	// SweepError reports sandboxes of the run that could not be terminated
	// at its end.
	SweepError string `json:"sweep_error,omitempty"`
}

// Failed returns the results of the checks that failed at level, or at any
// level when level is empty.
func (r *Report) Failed(level Level) []Result {
	var out []Result
	for _, res := range r.Results {
		if !res.Passed && (level == "" || res.Level == level) {
			out = append(out, res)
		}
	}
	return out
}

// OK reports whether every MUST check passed and nothing was left behind.
func (r *Report) OK() bool { return len(r.Failed(MUST)) == 0 && r.SweepError == "" }

// WriteTable writes the report as an aligned table with a summary line.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tLEVEL\tRESULT\tTIME\tDETAIL")
	pass, failMust, failShould := 0, 0, 0
	for _, res := range r.Results {
		verdict := "pass"
		switch {
		case res.Passed:
			pass++
		case res.Level == MUST:
			verdict = "FAIL"
			failMust++
		default:
			verdict = "warn"
			failShould++
		}
		detail := res.Message
		if i := strings.IndexByte(detail, '\n'); i >= 0 {
			detail = detail[:i] + " ..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", res.ID, res.Level, verdict,
			res.Duration.Round(time.Millisecond), detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if r.SweepError != "" {
		fmt.Fprintf(w, "leftover sandboxes could not be terminated: %s\n", r.SweepError)
	}
	_, err := fmt.Fprintf(w, "%d passed, %d failed (MUST), %d failed (SHOULD), %d checks in %v\n",
		pass, failMust, failShould, len(r.Results), r.Finished.Sub(r.Started).Round(time.Millisecond))
	return err
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
