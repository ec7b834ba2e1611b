package toolexec_test

import (
	"testing"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/toolexec/toolexectest"
)

// TestBatteryLocal runs the toolexec battery on the local provider's default,
// isolated mode, where bash runs on a real PTY.
func TestBatteryLocal(t *testing.T) {
	toolexectest.Run(t, func(t *testing.T) *sandbox.Sandbox { return newIsolatedSandbox(t) }, nil)
}

// TestBatteryLocalUnisolated runs it on the unisolated mode, where bash runs
// over pipes.
func TestBatteryLocalUnisolated(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the tools' battery runs once, on the isolated local provider (TestBatteryLocal); this variant runs without -short")
	}
	toolexectest.Run(t, func(t *testing.T) *sandbox.Sandbox { return newSandbox(t) }, nil)
}
