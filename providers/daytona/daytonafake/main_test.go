package daytonafake

import (
	"os"
	"testing"

	"github.com/perimeter-sdk/perimeter/internal/hostview"
)

// TestMain checks, once every test has run, that no sandbox view (a
// holder process with its mounts and namespaces) was left open.
func TestMain(m *testing.M) { os.Exit(hostview.ExitCode(m.Run())) }
