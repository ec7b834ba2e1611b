package modal_test

import (
	"testing"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/toolexec/toolexectest"
)

// TestToolexecBattery runs the agent tools' battery (bash, text editor,
// memory, file tools) on the Modal adapter against the fake: stdin without a
// PTY, so bash runs one persistent shell over pipes.
func TestToolexecBattery(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the tools' battery runs on the local provider in package toolexec; on this adapter it runs without -short")
	}
	p := newProvider(t)
	toolexectest.Run(t, func(t *testing.T) *sandbox.Sandbox { return create(t, p, nil) }, nil)
}
