package conformance_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perimeter-sdk/perimeter/conformance"
	"github.com/perimeter-sdk/perimeter/providers/local"
	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

// newLocal returns the local provider's driver in its unisolated mode: the
// broken variants below claim abilities (a PTY, network none) that the
// isolated mode really has, to prove the checks catch a claim that is not
// kept.
func newLocal(t *testing.T) *local.Provider {
	t.Helper()
	p, err := local.NewDriver(&local.Options{Root: t.TempDir(), Unisolated: true})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

// harness is the suite's harness for a driver of the unisolated local
// provider, which runs plain host processes and so asks for open egress.
func harness(d driver.Provider) *conformance.Harness {
	return &conformance.Harness{
		Provider: sandbox.NewProvider(d, nil),
		Spec: func() *sandbox.Spec {
			return &sandbox.Spec{Network: &sandbox.NetworkPolicy{Mode: sandbox.NetworkOpen}}
		},
	}
}

func TestChecksHaveUniqueIDsAndLevels(t *testing.T) {
	seen := map[string]bool{}
	for _, ch := range conformance.Checks() {
		assert.False(t, seen[ch.ID], "duplicate check ID %s", ch.ID)
		seen[ch.ID] = true
		assert.Contains(t, []conformance.Level{conformance.MUST, conformance.SHOULD}, ch.Level, ch.ID)
		assert.Regexp(t, `^[a-z]+/[a-z0-9-]+$`, ch.ID)
		assert.NotEmpty(t, ch.Title, ch.ID)
	}
}

func TestRunChecksReportsAndSweeps(t *testing.T) {
	p := newLocal(t)
	var started, ended []string
	rep, err := conformance.RunChecks(context.Background(), harness(p), &conformance.Options{
		Run:      "^lifecycle/(create|get|list-labels|terminate-idempotent|after-terminate)$|^exec/exit-codes$|^errors/native$|^caps/pause$",
		OnStart:  func(ci conformance.CheckInfo) { started = append(started, ci.ID) },
		OnResult: func(r conformance.Result) { ended = append(ended, r.ID) },
	})
	require.NoError(t, err)
	assert.True(t, rep.OK(), "failures: %+v", rep.Failed(""))
	assert.Equal(t, started, ended)
	assert.Len(t, rep.Results, 8)
	assert.Equal(t, conformance.Summary{Passed: 6, NotApplicable: 2, Total: 8}, rep.Summary)
	for _, res := range rep.Results {
		switch res.ID {
		case "errors/native":
			assert.Equal(t, conformance.NotApplicable, res.Outcome)
			assert.Contains(t, res.Message, "Harness.NativeError", "n/a says why")
		case "caps/pause":
			assert.Equal(t, conformance.NotApplicable, res.Outcome)
			assert.Contains(t, res.Message, "Pause is not claimed")
		default:
			assert.Equal(t, conformance.Pass, res.Outcome, res.ID)
			assert.True(t, res.Passed, res.ID)
		}
	}

	var table bytes.Buffer
	require.NoError(t, rep.WriteTable(&table))
	assert.Contains(t, table.String(), "lifecycle/create")
	assert.Contains(t, table.String(), "6 passed, 0 failed (MUST), 0 failed (SHOULD), 2 not applicable, 8 checks")
	assert.Regexp(t, `caps/pause +MUST +n/a`, table.String())

	var js bytes.Buffer
	require.NoError(t, rep.WriteJSON(&js))
	var back conformance.Report
	require.NoError(t, json.Unmarshal(js.Bytes(), &back))
	assert.Equal(t, rep.Results[0].ID, back.Results[0].ID)
	assert.Equal(t, rep.Summary, back.Summary)
	assert.Contains(t, js.String(), `"outcome": "n/a"`)

	for info, err := range p.List(context.Background(), &sandbox.ListOptions{}) {
		require.NoError(t, err)
		t.Errorf("sandbox %s left behind after the run", info.ID)
	}
}

func TestRunChecksRejectsBadPattern(t *testing.T) {
	_, err := conformance.RunChecks(context.Background(), harness(newLocal(t)), &conformance.Options{Run: "("})
	assert.ErrorContains(t, err, "Options.Run")
	_, err = conformance.RunChecks(context.Background(), harness(newLocal(t)), &conformance.Options{Run: "^nothing$"})
	assert.ErrorContains(t, err, "matches no check")
}
