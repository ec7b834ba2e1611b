package conformance

import "testing"

// Every check of the smoke set (what Run runs under -short) is a check of
// the battery: a misspelt name would shrink the set without a word.
func TestSmokeSetNamesChecks(t *testing.T) {
	ids := map[string]bool{}
	for _, ch := range Checks() {
		ids[ch.ID] = true
	}
	for id := range smoke {
		if !ids[id] {
			t.Errorf("the smoke set names %q, which is not a check", id)
		}
	}
	if len(smoke) == 0 || len(smoke) >= len(ids) {
		t.Errorf("the smoke set has %d of %d checks", len(smoke), len(ids))
	}
}
