package conformance

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Outcome is what a check found.
type Outcome string

// Outcomes of a check.
const (
	// Pass: the provider did what the check asks.
	Pass Outcome = "pass"
	// Fail: the provider did not; Result.Message says what it did and what
	// it should do.
	Fail Outcome = "fail"
	// NotApplicable: the check could not test its promise, because the
	// provider declares the ability absent (its honest refusal, where the
	// contract demands one, was verified) or the harness lacks something the
	// check needs; Result.Message gives the reason. It is neither a pass
	// nor a failure.
	NotApplicable Outcome = "n/a"
)

// Result is the outcome of one check.
type Result struct {
	CheckInfo
	Outcome Outcome `json:"outcome"`
	// Passed reports Outcome == Pass.
	Passed bool `json:"passed"`
	// Message says what went wrong for a failure and why the check did not
	// apply for n/a; empty when the check passed.
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
	// Summary counts the results; WriteJSON and WriteTable fill it in.
	Summary Summary `json:"summary"`
}

// Summary counts a run's results by outcome.
type Summary struct {
	Passed        int `json:"passed"`
	FailedMust    int `json:"failed_must"`
	FailedShould  int `json:"failed_should"`
	NotApplicable int `json:"not_applicable"`
	Total         int `json:"total"`
}

// Summarize counts the report's results.
func (r *Report) Summarize() Summary {
	var s Summary
	for _, res := range r.Results {
		s.Total++
		switch {
		case res.Outcome == NotApplicable:
			s.NotApplicable++
		case res.Outcome != Fail:
			s.Passed++
		case res.Level == MUST:
			s.FailedMust++
		default:
			s.FailedShould++
		}
	}
	return s
}

// Failed returns the results of the checks that failed at level, or at any
// level when level is empty.
func (r *Report) Failed(level Level) []Result {
	var out []Result
	for _, res := range r.Results {
		if res.Outcome == Fail && (level == "" || res.Level == level) {
			out = append(out, res)
		}
	}
	return out
}

// OK reports whether no MUST check failed and nothing was left behind. A
// check that did not apply is not a failure.
func (r *Report) OK() bool { return len(r.Failed(MUST)) == 0 && r.SweepError == "" }

// WriteTable writes the report as an aligned table with a summary line
// counting passed, failed and not applicable checks separately.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tLEVEL\tRESULT\tTIME\tDETAIL")
	for _, res := range r.Results {
		verdict := "pass"
		switch {
		case res.Outcome == NotApplicable:
			verdict = "n/a"
		case res.Outcome != Fail:
		case res.Level == MUST:
			verdict = "FAIL"
		default:
			verdict = "warn"
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
	s := r.Summarize()
	r.Summary = s
	_, err := fmt.Fprintf(w, "%d passed, %d failed (MUST), %d failed (SHOULD), %d not applicable, %d checks in %v\n",
		s.Passed, s.FailedMust, s.FailedShould, s.NotApplicable, s.Total, r.Finished.Sub(r.Started).Round(time.Millisecond))
	return err
}

// WriteJSON writes the report as indented JSON, with its summary counts.
func (r *Report) WriteJSON(w io.Writer) error {
	r.Summary = r.Summarize()
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
