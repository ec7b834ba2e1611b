package kubernetes

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/stretchr/testify/require"
)

// runWrapper runs the exec wrapper on a new terminal that has no size yet,
// as a container's terminal is before the exec stream's first resize
// arrives, with stty being the one in sttyDir. setSize, if not nil, runs
// once the wrapper has started (it stands for that first resize). It
// returns what the terminal showed.
func runWrapper(t *testing.T, sttyDir string, setSize func(*os.File)) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("sh", "-c", wrapper, "perimeter", filepath.Join(dir, "pid"), dir, "33 111", "0",
		"sh", "-c", "stty size; echo done")
	cmd.Env = []string{"PATH=" + sttyDir + ":/usr/bin:/bin"}
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{})
	require.NoError(t, err)
	defer ptmx.Close()
	if setSize != nil {
		// The wrapper has started once it has written its PID.
		require.Eventually(t, func() bool {
			b, _ := os.ReadFile(filepath.Join(dir, "pid"))
			return len(b) > 0
		}, time.Minute, 10*time.Millisecond)
		setSize(ptmx)
	}
	var out bytes.Buffer
	io.Copy(&out, ptmx) // ends with EIO once the command has exited
	require.NoError(t, cmd.Wait())
	return strings.ReplaceAll(out.String(), "\r", "")
}

// sttys returns the directories holding each stty to try: the host's
// (GNU coreutils prints "0 0" for a terminal without a size) and, when
// installed, busybox's (which prints nothing and fails), as in the test
// cluster's images.
func sttys(t *testing.T) map[string]string {
	dirs := map[string]string{"coreutils": "/usr/bin"}
	if bb, err := exec.LookPath("busybox"); err == nil {
		d := t.TempDir()
		require.NoError(t, os.Symlink(bb, filepath.Join(d, "stty")))
		dirs["busybox"] = d
	} else {
		t.Log("busybox is not installed: only coreutils' stty is tried")
	}
	return dirs
}

func TestWrapperWaitsForTheTerminalSize(t *testing.T) {
	for name, dir := range sttys(t) {
		t.Run(name, func(t *testing.T) {
			out := runWrapper(t, dir, func(ptmx *os.File) {
				time.Sleep(200 * time.Millisecond) // the resize comes late
				require.NoError(t, pty.Setsize(ptmx, &pty.Winsize{Rows: 33, Cols: 111}))
			})
			require.Equal(t, "33 111\ndone\n", out)
		})
	}
}

func TestWrapperSetsTheSizeWhenNoneArrives(t *testing.T) {
	if testing.Short() {
		t.Skip("waits the wrapper's 10 s bound; runs without -short")
	}
	for name, dir := range sttys(t) {
		t.Run(name, func(t *testing.T) {
			require.Equal(t, "33 111\ndone\n", runWrapper(t, dir, nil))
		})
	}
}
