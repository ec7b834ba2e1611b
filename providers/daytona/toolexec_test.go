package daytona

import (
	"context"
	"testing"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/toolexec/toolexectest"
)

// TestToolexec runs the agent tools' battery on Daytona sandboxes (the
// fake): the bash tool's persistent shell reads its commands from a stdin
// pipe, which exercises the framed input and the live output together.
func TestToolexec(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the tools' battery runs on the local provider in package toolexec; on this adapter it runs without -short")
	}
	_, p := newFake(t, nil)
	toolexectest.Run(t, func(t *testing.T) *sandbox.Sandbox {
		sb, err := p.Create(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sb.Terminate(context.Background()) })
		return sb
	}, nil)
}
