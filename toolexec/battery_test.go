package toolexec_test

import (
	"testing"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/toolexec/toolexectest"
)

// TestBatteryLocal runs the toolexec battery on the local baseline provider.
func TestBatteryLocal(t *testing.T) {
	toolexectest.Run(t, func(t *testing.T) sandbox.Sandbox { return newSandbox(t) }, nil)
}
